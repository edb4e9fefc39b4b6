//! Helpers shared by every command group: errors, durations, reading inputs and writing
//! outputs (keys with mode 0600, never overwritten without `--force`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What every command returns; the message is printed to stderr by `main`.
pub(crate) type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Writes to stdout; a closed pipe (`mtls … | head -1`) becomes an `io::Error` of kind
/// `BrokenPipe` that `main` turns into a quiet exit instead of a panic.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `println!` that returns the write error (see [`write_stdout`]) with `?`.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!(""), true)? };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*), true)? };
}

/// `print!` that returns the write error with `?`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*), false)? };
}

pub(crate) use {out, outln};

/// A time as people and scripts read it: `2026-12-01T11:04:11Z`.
pub(crate) fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// Whether `error` is stdout's reader having gone away (a closed pipe).
pub(crate) fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Clap value parser for cfssl-style durations: `24h`, `90d`, `876000h`, `1h30m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    mtls_certs::cfssl::parse_duration(s).map_err(|e| e.to_string())
}

/// Reads a text file, naming the file in the error.
pub(crate) fn read_text(path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()).into())
}

/// Writes a private key with mode 0600; refuses to replace an existing file unless `force`.
pub(crate) fn write_key(path: &Path, pem: &str, force: bool) -> CliResult {
    mtls_certs::files::write_private_key(path, pem, force)?;
    announce(path)
}

/// Writes a public file (certificate, CSR, JSON).
pub(crate) fn write_public(path: &Path, contents: &str) -> CliResult {
    mtls_certs::files::write_file(path, contents)?;
    announce(path)
}

/// Fails early if a key file exists and `force` is not given, so nothing is half-written.
pub(crate) fn check_key_free(path: &Path, force: bool) -> CliResult {
    if !force && path.exists() {
        return Err(mtls_certs::Error::FileExists {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

/// Prints the path of a written file on stdout.
pub(crate) fn announce(path: &Path) -> CliResult {
    outln!("wrote {}", path.display());
    Ok(())
}

/// `DIR/NAME`.
pub(crate) fn file_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
