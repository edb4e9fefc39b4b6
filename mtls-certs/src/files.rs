//! Writing certificates and keys to disk safely: a private key created 0600 (never
//! world-readable, an existing file kept unless asked), a public file replaced atomically
//! without following a symlink planted at its path. The `mtls` command line, cfssl's
//! `write_bare` and mtls-agent's CA files write through these.

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
/// use mtls_certs::{Error, files::write_private_key};
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
        let mut f = options_with_mode(0o600)
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
    replace_through_temporary(path, contents, 0o600)
}

/// Writes a public file (certificate, CSR): replaced if it exists, mode 0644.
///
/// The contents go to a new temporary file beside `path` (created exclusively, so a
/// symlink planted there is never followed) which is then renamed over `path`: a symlink at
/// `path` is replaced, not written through, so whoever can write the directory cannot make
/// the caller create or overwrite a file elsewhere.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("ca.pem");
/// # #[cfg(unix)] {
/// // A dangling symlink planted where the certificate goes:
/// std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path)?;
/// # }
/// mtls_certs::files::write_file(&path, "-----BEGIN CERTIFICATE-----")?;
/// assert!(!dir.path().join("elsewhere").exists());
/// assert!(std::fs::symlink_metadata(&path)?.is_file());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_file(path: &Path, contents: &str) -> Result<()> {
    replace_through_temporary(path, contents, 0o644)
}

/// Writes `contents` to a new temporary file beside `path` (created exclusively with `mode`)
/// and renames it over `path`; the temporary file is removed if any step fails.
fn replace_through_temporary(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = temporary_beside(path);
    let written = options_with_mode(mode)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// A fresh name beside `path` for a file created with `create_new` and renamed over it.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{file_name}.tmp{}.{nanos}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Write-only open options creating files with `mode` (on unix; elsewhere the default).
fn options_with_mode(mode: u32) -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options
}
