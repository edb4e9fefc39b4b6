//! Shared helpers for the CLI tests: the `mtls` binary and the real `openssl` CLI.
// Tests may panic on a missing tool or a broken fixture: that is the failure we want to see.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    unused_imports
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The seed cfssl inputs (copied into mtls-certs so the repository is self-contained).
pub fn cfssl_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtls-certs/tests/fixtures/cfssl")
}

/// A command line's words (split at white space; write arguments with spaces as arrays).
///
/// `mtls_ok(d, &words("cert issue --ca ca --out o --name a"))` instead of an array of
/// string literals that rustfmt stacks one per line.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// [`words`] of `line`, then `rest` (arguments that are not literals, or hold spaces).
pub fn words_and<'a>(line: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = words(line);
    args.extend_from_slice(rest);
    args
}

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
