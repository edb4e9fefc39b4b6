//! Shared helpers for the integration tests: running the real `openssl` CLI.
// Tests may panic on a broken fixture or a missing tool: that is the failure we want to see.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory of the cfssl fixtures copied into this crate.
pub fn cfssl_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cfssl")
}

/// Runs `openssl ARGS...`, returning (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be on PATH (run ./ci.sh, it installs the test peers)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Writes `contents` to `dir/name` and returns the path as a string.
pub fn put(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `openssl verify -CAfile ca [-untrusted int] leaf`; panics with openssl's output on failure.
pub fn openssl_verify(ca: &str, untrusted: Option<&str>, leaf: &str) {
    let mut args = vec!["verify", "-CAfile", ca];
    if let Some(int) = untrusted {
        args.extend(["-untrusted", int]);
    }
    args.push(leaf);
    let (ok, out) = openssl(&args);
    assert!(ok, "openssl verify failed: {out}");
    assert!(out.contains(": OK"), "{out}");
}

/// `openssl x509 -text -noout -in file`.
pub fn openssl_text(file: &str) -> String {
    let (ok, out) = openssl(&["x509", "-text", "-noout", "-in", file]);
    assert!(ok, "openssl x509 failed: {out}");
    out
}

/// The line(s) following an extension header in `openssl x509 -text` output.
pub fn extension(text: &str, header: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with(header) {
            return lines.next().map(|l| l.trim().to_owned());
        }
    }
    None
}
