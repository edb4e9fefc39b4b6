//! File writing never follows a symlink planted where a certificate or key goes: whoever can
//! write the directory must not make the writer create or overwrite a file elsewhere.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};

use mtls_certs::{
    Error,
    files::{write_file, write_private_key},
};

#[test]
fn a_dangling_symlink_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("attacker-target");
    type Write = fn(&std::path::Path) -> mtls_certs::Result<()>;
    let writers: [(&str, Write); 2] = [
        ("ca.pem", |p| write_file(p, "cert")),
        ("ca-key.pem", |p| write_private_key(p, "key", true)),
    ];
    for (name, write) in writers {
        let path = dir.path().join(name);
        symlink(&target, &path).unwrap();
        write(&path).unwrap();
        assert!(!target.exists(), "{name}: written through the symlink");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{name}: still a symlink");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode, if name == "ca.pem" { 0o644 } else { 0o600 }, "{name}");
    }
}

#[test]
fn a_symlink_to_an_existing_file_leaves_that_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.path().join("ca.pem");
    symlink(&victim, &path).unwrap();
    write_file(&path, "cert").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "cert");

    // Without overwrite, a key path taken by a symlink is refused, and nothing is followed.
    let key = dir.path().join("key.pem");
    symlink(dir.path().join("dangling"), &key).unwrap();
    let err = write_private_key(&key, "key", false).unwrap_err();
    assert!(matches!(err, Error::FileExists { .. }), "{err}");
    assert!(!dir.path().join("dangling").exists());
}
