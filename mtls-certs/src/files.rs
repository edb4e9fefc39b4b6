//! Writing certificates and keys to disk safely.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes a private key file with mode 0600.
///
/// An existing file is never replaced unless `overwrite` is true (`--force` on the command
/// line): the call fails with [`Error::FileExists`]. With `overwrite`, the key is written to
/// a 0600 temporary file beside the target and renamed over it, so there is no moment when
/// the key is world-readable.
///
/// ```
/// use mtls_certs::{write_private_key, Error};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("key.pem");
/// write_private_key(&path, "secret", false)?;
/// assert!(matches!(write_private_key(&path, "other", false), Err(Error::FileExists { .. })));
/// write_private_key(&path, "other", true)?;
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_private_key(path: &Path, contents: &str, overwrite: bool) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite {
        let mut f = secret_options()
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::FileExists {
                    path: path.to_path_buf(),
                },
                _ => io(e),
            })?;
        return f.write_all(contents.as_bytes()).map_err(io);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = secret_options()
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Writes a public file (certificate, CSR): replaced if it exists, mode 0644.
pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn secret_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}
