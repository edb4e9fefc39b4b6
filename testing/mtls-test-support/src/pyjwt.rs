//! PyJWT as the independent verifier of the tokens the family mints (mtls-jwt's own tests
//! and the `mtls jwt` commands').

use std::path::Path;
use std::process::Command;

/// Verifies `tokens` with PyJWT (`mtls-jwt/tests/support/verify_tokens.py`) against the
/// JWKS file `jwks`, requiring `issuer` and `audience`; panics with PyJWT's stderr if it
/// refuses any. Returns its stdout: one line of claims (JSON) per token.
///
/// ```no_run
/// let dir = tempfile::tempdir().unwrap();
/// let jwks = dir.path().join("jwks.json");
/// std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
/// let no_tokens: [&str; 0] = [];
/// let out = mtls_test_support::pyjwt::verify(&jwks, "https://issuer.test", "api", no_tokens);
/// assert_eq!(out.lines().count(), 0);
/// ```
pub fn verify<I, S>(jwks: &Path, issuer: &str, audience: &str, tokens: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../mtls-jwt/tests/support/verify_tokens.py"
    );
    let out = Command::new(crate::peers::python())
        .arg(script)
        .arg(jwks)
        .args([issuer, audience])
        .args(tokens)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused our tokens: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
