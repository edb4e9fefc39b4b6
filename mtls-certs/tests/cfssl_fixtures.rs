//! The seed cfssl inputs of a real migration produce the files cfssl + cfssljson produce, and
//! openssl accepts them.
// Tests may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mtls_certs::cfssl::{self, CfsslCsr, SigningConfig};
use mtls_certs::{CertificateAuthority, CertificateSummary, Error};
use support::{cfssl_fixtures, extension, openssl, openssl_text, openssl_verify};

fn read(name: &str) -> String {
    std::fs::read_to_string(cfssl_fixtures().join(name)).unwrap()
}

#[test]
fn seed_fixtures_make_ca_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();

    let (_ca, files) = cfssl::initca(&CfsslCsr::from_json(&read("ca-csr.json")).unwrap()).unwrap();
    files.write_bare(out, "ca", false).unwrap();
    // as `cfssl gencert -ca=ca.pem -ca-key=ca-key.pem` reads them back from disk
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(out.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(out.join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    for (name, config) in [
        ("server", "server-config.json"),
        ("client", "client-config.json"),
    ] {
        let csr = CfsslCsr::from_json(&read(&format!("{name}.json"))).unwrap();
        let cfg = SigningConfig::from_json(&read(config)).unwrap();
        cfssl::gencert(&ca, &csr, &cfg, None)
            .unwrap()
            .write_bare(out, name, false)
            .unwrap();
    }
    for f in mtls_test_support::cfssl_files::bare(&["ca", "server", "client"]) {
        assert!(out.join(&f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    for f in ["ca-key.pem", "server-key.pem", "client-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let p = |f: &str| out.join(f).to_str().unwrap().to_owned();
    openssl_verify(&p("ca.pem"), None, &p("server.pem"));
    openssl_verify(&p("ca.pem"), None, &p("client.pem"));
    for csr in ["ca.csr", "server.csr", "client.csr"] {
        let (ok, text) = openssl(&mtls_test_support::words_and(
            "req -verify -noout -in",
            &[&p(csr)],
        ));
        assert!(ok, "{csr}: {text}");
    }

    let ca_text = openssl_text(&p("ca.pem"));
    assert!(
        ca_text.contains("Subject: C = JP, ST = Tokyo, O = app-ca, OU = development, CN = app-ca"),
        "{ca_text}"
    );
    assert!(
        extension(&ca_text, "X509v3 Basic Constraints")
            .unwrap()
            .starts_with("CA:TRUE")
    );
    let ca_summary = CertificateSummary::from_pem(&read_out(out, "ca.pem")).unwrap();
    assert_eq!(
        (ca_summary.not_after - ca_summary.not_before).whole_hours(),
        876_000,
        "ca.expiry 876000h (+5 min backdate)"
    );

    let client = openssl_text(&p("client.pem"));
    assert_eq!(
        extension(&client, "X509v3 Subject Alternative Name").unwrap(),
        "DNS:app-internal-api"
    );
    assert_eq!(
        extension(&client, "X509v3 Key Usage").unwrap(),
        "Digital Signature, Key Encipherment"
    );
    assert_eq!(
        extension(&client, "X509v3 Extended Key Usage").unwrap(),
        "TLS Web Client Authentication"
    );
    assert_eq!(
        extension(&client, "X509v3 Basic Constraints").unwrap(),
        "CA:FALSE"
    );
    assert!(client.contains("Subject: C = JP, ST = Tokyo, CN = appclient"));

    let server = openssl_text(&p("server.pem"));
    assert!(
        extension(&server, "X509v3 Subject Alternative Name").is_none(),
        "hosts [\"\"] gives no SAN"
    );
    assert_eq!(
        extension(&server, "X509v3 Key Usage").unwrap(),
        "Digital Signature, Key Encipherment"
    );
    assert_eq!(
        extension(&server, "X509v3 Extended Key Usage").unwrap(),
        "TLS Web Server Authentication"
    );
    assert!(server.contains("CN = app-internal-api"));

    // the 876000h leaf cannot outlive the 876000h CA: it is clamped to it
    let server_summary = CertificateSummary::from_pem(&read_out(out, "server.pem")).unwrap();
    assert!(server_summary.not_after <= ca_summary.not_after);

    // cfssljson would overwrite; we refuse to replace a key without --force
    let (_ca2, again) = cfssl::initca(&CfsslCsr::from_json(&read("ca-csr.json")).unwrap()).unwrap();
    let err = again.write_bare(out, "ca", false).unwrap_err();
    assert!(matches!(err, Error::FileExists { .. }), "{err}");
    assert_eq!(
        read_out(out, "ca.pem"),
        ca.cert_pem(),
        "refusal leaves the old files untouched"
    );
    again.write_bare(out, "ca", true).unwrap();
}

fn read_out(dir: &std::path::Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

#[test]
fn hosts_are_classified_like_cfssl() {
    let csr = CfsslCsr::from_json(
        r#"{"CN":"x","hosts":["", "10.1.2.3", "::1", "ops@example.com", "spiffe://example.org/x", "svc.local"]}"#,
    )
    .unwrap();
    let sans: Vec<String> = csr.sans().iter().map(ToString::to_string).collect();
    assert_eq!(
        sans,
        [
            "IP:10.1.2.3",
            "IP:::1",
            "email:ops@example.com",
            "URI:spiffe://example.org/x",
            "DNS:svc.local"
        ]
    );
}

#[test]
fn signing_profiles_and_every_documented_usage() {
    let cfg = SigningConfig::from_json(
        r#"{"signing":{"default":{"expiry":"168h","usages":["signing"]},
            "profiles":{"everything":{"expiry":"8760h","usages":["signing","digital signature",
            "key encipherment","server auth","client auth","cert sign","crl sign","key agreement",
            "data encipherment","content commitment","code signing","email protection",
            "timestamping","ocsp signing","ipsec user","any"]}}}}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.profile(Some("everything"))
            .unwrap()
            .expiry()
            .unwrap()
            .as_secs(),
        8760 * 3600
    );
    assert_eq!(
        cfg.profile(None).unwrap().expiry().unwrap().as_secs(),
        168 * 3600
    );
}
