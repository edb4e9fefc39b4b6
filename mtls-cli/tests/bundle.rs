//! `mtls bundle make|show|convert`: bundles from CA PEMs and a JWKS made by `mtls jwt jwks`,
//! converted to PEM that `openssl verify` accepts, and back; refusals name what was expected
//! and what was seen.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use serde_json::Value;
use support::{mtls_err, mtls_ok, openssl, words};

#[test]
fn make_show_convert_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = CertificateAuthority::new_root(&CaParams::new("example.org Root")).unwrap();
    let int = root
        .new_intermediate(&CaParams::new("example.org Intermediate"))
        .unwrap();
    let leaf = int
        .issue(&LeafParams::svid(
            SpiffeId::new("spiffe://example.org/ns/prod/sa/api").unwrap(),
        ))
        .unwrap();
    std::fs::write(d.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(d.join("int.pem"), int.cert_pem()).unwrap();
    std::fs::write(d.join("leaf.pem"), leaf.cert_pem()).unwrap();
    mtls_ok(d, &words("jwt keygen --name signer"));
    let jwks = mtls_ok(d, &words("jwt jwks signer.pub.pem --kid signer-1"));
    std::fs::write(d.join("jwks.json"), jwks).unwrap();

    let json = mtls_ok(
        d,
        &words(
            "bundle make --trust-domain example.org --ca-file root.pem --jwks jwks.json --sequence 3 --refresh-hint 5m",
        ),
    );
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["spiffe_sequence"], 3);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let uses: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["use"].as_str().unwrap())
        .collect();
    assert_eq!(uses, ["x509-svid", "jwt-svid"]);
    assert_eq!(doc["keys"][1]["kid"], "signer-1");
    std::fs::write(d.join("bundle.json"), &json).unwrap();

    let shown = mtls_ok(
        d,
        &words("bundle show bundle.json --trust-domain example.org"),
    );
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[0],
        "example.org: 1 X.509 authorities, 1 JWT authorities, sequence 3, refresh hint 300s"
    );
    assert!(
        lines[1].starts_with("x509-svid  CN=example.org Root"),
        "{shown}"
    );
    assert_eq!(lines[2], "jwt-svid   kid signer-1  (EC)");

    mtls_ok(
        d,
        &words(
            "bundle convert bundle.json --trust-domain example.org --to pem --out-file bundle.pem",
        ),
    );
    let (ok, text) = openssl(
        d,
        &words("verify -CAfile bundle.pem -untrusted int.pem leaf.pem"),
    );
    assert!(ok, "openssl verify with the converted PEM: {text}");
    // The PEM is exactly the X.509 authorities: the root, no JWT key.
    assert_eq!(
        std::fs::read_to_string(d.join("bundle.pem")).unwrap(),
        root.cert_pem()
    );

    let back = mtls_ok(
        d,
        &words("bundle convert bundle.pem --trust-domain example.org --to spiffe --sequence 4"),
    );
    let back: Value = serde_json::from_str(&back).unwrap();
    assert_eq!(back["keys"][0]["x5c"], doc["keys"][0]["x5c"]);
    assert_eq!(back["spiffe_sequence"], 4);
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = CertificateAuthority::new_root(&CaParams::new("Root")).unwrap();
    let leaf = root.issue(&LeafParams::server(["localhost"])).unwrap();
    std::fs::write(d.join("leaf.pem"), leaf.cert_pem()).unwrap();
    let err = mtls_err(
        d,
        &words("bundle make --trust-domain example.org --ca-file leaf.pem"),
    );
    assert!(
        err.contains("leaf.pem: SPIFFE bundle of trust domain example.org: expected a CA certificate (basicConstraints cA=true), saw the end-entity certificate"),
        "{err}"
    );
    let err = mtls_err(d, &words("bundle make --trust-domain example.org"));
    assert!(
        err.contains("expected at least one --ca-file or --jwks, saw neither"),
        "{err}"
    );

    std::fs::write(d.join("cut.json"), r#"{"keys": [{"use": "x509-svid""#).unwrap();
    let err = mtls_err(d, &words("bundle show cut.json --trust-domain example.org"));
    assert!(
        err.contains(
            "cut.json: SPIFFE bundle of trust domain example.org: expected a JSON document"
        ),
        "{err}"
    );

    std::fs::write(d.join("jwt-only.json"), r#"{"keys": []}"#).unwrap();
    let err = mtls_err(
        d,
        &words("bundle convert jwt-only.json --trust-domain example.org --to pem"),
    );
    assert!(
        err.contains("expected X.509 authorities to write as PEM, saw none"),
        "{err}"
    );
}
