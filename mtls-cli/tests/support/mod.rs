//! Shared helpers for the CLI tests: the `mtls` binary and the real `openssl` CLI.
// Tests may panic on a missing tool or a broken fixture: that is the failure we want to see.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#![allow(unused_imports)] // the shared helpers re-exported here: each test uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The seed cfssl inputs (copied into mtls-certs so the repository is self-contained).
pub fn cfssl_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtls-certs/tests/fixtures/cfssl")
}

/// Command lines as one string (shared with the other crates' tests).
pub use mtls_test_support::{words, words_and};

/// Runs `mtls ARGS...` in `dir`.
pub fn mtls(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtls"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `mtls ARGS...` in `dir` with `stdin` as its standard input.
pub fn mtls_with_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtls"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `mtls` and asserts success, returning stdout.
pub fn mtls_ok(dir: &Path, args: &[&str]) -> String {
    let out = mtls(dir, args);
    assert!(
        out.status.success(),
        "mtls {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `mtls` and asserts failure with an error on stderr, returning stderr.
pub fn mtls_err(dir: &Path, args: &[&str]) -> String {
    let out = mtls(dir, args);
    assert!(!out.status.success(), "mtls {args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// Runs `openssl ARGS...` in `dir`, returning (success, stdout + stderr).
pub use mtls_test_support::peers::openssl_in as openssl;
