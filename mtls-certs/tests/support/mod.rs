//! mtls-certs' own test helpers (the shared ones are in mtls-test-support): its cfssl
//! fixtures and reading the real `openssl` CLI's verdicts.
// Tests may panic on a broken fixture or a missing tool: that is the failure we want to see.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#![allow(unused_imports)] // the shared helpers re-exported here: each test uses a part

use std::path::{Path, PathBuf};

pub use mtls_test_support::peers::openssl;
pub use mtls_test_support::put;

/// Directory of the cfssl fixtures copied into this crate.
pub fn cfssl_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cfssl")
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
