//! SPIFFE bundles checked by independent parsers: Python's `cryptography` loads our `x5c`
//! (and agrees with the JWK members), `openssl verify` verifies our SVIDs against the `x5c`
//! exported to PEM, PyJWT's `PyJWKSet` loads the `jwt-svid` keys and verifies our JWT-SVIDs
//! (and mtls-jwt does, from the bundle's JWKS), py-spiffe's `X509Bundle.parse` reads our PEM.
//! Then the parser's rules: unknown `kty`/`use` skipped, a lower `spiffe_sequence` never
//! replaces a higher one, and malformed documents refused naming what was expected and seen.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mtls_certs::{CaParams, CertificateAuthority, KeyAlgorithm, LeafParams, SpiffeId};
use mtls_core::{
    BundleSet, Error, FileTrustSource, JwtAuthority, SpiffeBundle, TrustDomain, TrustSource,
};
use serde_json::{Value, json};

const ID: &str = "spiffe://example.org/ns/prod/sa/api";

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// Runs tests/support/bundle_peer.py; its stdout lines, or a panic with its stderr.
fn peer(args: &[&str]) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/bundle_peer.py");
    let out = Command::new(mtls_test_support::peers::python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bundle_peer.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn openssl_verify(dir: &Path, ca: &str, untrusted: &str, leaf: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-CAfile", ca, "-untrusted", untrusted, leaf])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    std::fs::write(dir.join(name), contents).unwrap();
    name.to_owned()
}

#[test]
fn x5c_loads_in_cryptography_and_openssl_verifies_our_svids_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let ec = CertificateAuthority::new_root(&CaParams::new("example.org EC Root")).unwrap();
    let rsa = CertificateAuthority::new_root(
        &CaParams::new("example.org RSA Root").key_algorithm(KeyAlgorithm::Rsa2048),
    )
    .unwrap();
    let int = ec
        .new_intermediate(&CaParams::new("example.org Intermediate"))
        .unwrap();
    let svid = int
        .issue(&LeafParams::svid(SpiffeId::new(ID).unwrap()))
        .unwrap();
    let other = CertificateAuthority::new_root(&CaParams::new("other.org Root")).unwrap();

    let bundle = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(ec.cert_pem() + &rsa.cert_pem())
        .unwrap()
        .spiffe_sequence(1);
    let json_path = dir.path().join("bundle.json");
    std::fs::write(&json_path, bundle.to_json()).unwrap();
    let exported = dir.path().join("exported.pem");
    let subjects = peer(&[
        "x5c",
        json_path.to_str().unwrap(),
        exported.to_str().unwrap(),
    ]);
    assert_eq!(
        subjects,
        ["CN=example.org EC Root", "CN=example.org RSA Root"]
    );

    write(dir.path(), "int.pem", &int.cert_pem());
    write(dir.path(), "leaf.pem", &svid.cert_pem());
    let (ok, text) = openssl_verify(dir.path(), "exported.pem", "int.pem", "leaf.pem");
    assert!(ok, "openssl verify against the exported x5c: {text}");

    // The same check fails against another domain's bundle: the test can fail.
    let foreign = SpiffeBundle::new(td("other.org"))
        .add_x509_authorities_pem(other.cert_pem())
        .unwrap();
    std::fs::write(&json_path, foreign.to_json()).unwrap();
    peer(&[
        "x5c",
        json_path.to_str().unwrap(),
        exported.to_str().unwrap(),
    ]);
    let (ok, text) = openssl_verify(dir.path(), "exported.pem", "int.pem", "leaf.pem");
    assert!(
        !ok,
        "openssl verify must fail against other.org's CA: {text}"
    );
}

#[tokio::test]
async fn pyjwkset_loads_jwt_svid_keys_and_verifies_our_jwt_svids() {
    use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator};
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new_root(&CaParams::new("example.org Root")).unwrap();
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let bundle = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(ca.cert_pem())
        .unwrap()
        .add_jwt_authority(JwtAuthority::new("es-1", es.jwk(None)).unwrap())
        .unwrap()
        .add_jwt_authority(JwtAuthority::new("rs-1", rs.jwk(None)).unwrap())
        .unwrap();
    // Keys a newer publisher might add: PyJWKSet and we both pass over them.
    let mut doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"use": "wit-svid", "kty": "EC", "kid": "wit"}));
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, doc.to_string()).unwrap();

    let token = |key: &SigningKey, kid: &str, sub: &str| {
        key.mint(
            &TokenSpec::new(Duration::from_secs(300))
                .kid(kid)
                .subject(sub)
                .audience("bookstore"),
        )
        .unwrap()
    };
    let t_es = token(&es, "es-1", "spiffe://example.org/es");
    let t_rs = token(&rs, "rs-1", "spiffe://example.org/rs");
    let subs = peer(&["jwt", path.to_str().unwrap(), "bookstore", &t_es, &t_rs]);
    assert_eq!(subs, ["spiffe://example.org/es", "spiffe://example.org/rs"]);

    // mtls-jwt validates the same JWT-SVIDs from the bundle's JWT authorities...
    let parsed = SpiffeBundle::parse(td("example.org"), &doc.to_string()).unwrap();
    assert_eq!(parsed.skipped(), 1);
    let validator = Validator::builder()
        .jwks(JwksSource::inline(parsed.jwt_jwks_json()))
        .jwt_svid("bookstore")
        .build()
        .unwrap();
    for (t, sub) in [
        (&t_es, "spiffe://example.org/es"),
        (&t_rs, "spiffe://example.org/rs"),
    ] {
        let claims = validator.validate(t).await.unwrap();
        assert_eq!(claims.subject(), Some(sub));
    }
    // ...and refuses a token of a key that is not in the bundle.
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let err = validator
        .validate(&token(&stranger, "es-2", "spiffe://example.org/es"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, mtls_jwt::Error::UnknownKid { kid } if kid == "es-2"),
        "{err}"
    );
}

#[test]
fn py_spiffe_x509_bundle_parse_reads_our_pem() {
    let dir = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::new_root(&CaParams::new("example.org Root A")).unwrap();
    let b = CertificateAuthority::new_root(&CaParams::new("example.org Root B")).unwrap();
    let bundle = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(a.cert_pem() + &b.cert_pem())
        .unwrap();
    // Through JSON and back, as `mtls bundle convert --to pem` does.
    let bundle = SpiffeBundle::parse(td("example.org"), &bundle.to_json()).unwrap();
    let path = dir.path().join("example.org.spiffe-trust-bundle.pem");
    std::fs::write(&path, bundle.to_pem()).unwrap();
    assert_eq!(
        peer(&["pem", "example.org", path.to_str().unwrap()]),
        [
            "example.org",
            "CN=example.org Root A",
            "CN=example.org Root B"
        ]
    );
}

#[test]
fn unknown_kty_and_use_are_skipped_with_a_count() {
    let ca = CertificateAuthority::new_root(&CaParams::new("example.org Root")).unwrap();
    let bundle = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(ca.cert_pem())
        .unwrap();
    let mut doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(json!({"use": "wit-svid", "kty": "EC", "crv": "P-256"}));
    keys.push(json!({"use": "x509-svid", "kty": "ML-DSA", "x5c": ["not even base64"]}));
    keys.push(json!({"use": "jwt-svid", "kty": "AKP", "kid": "pq"}));
    keys.push(json!({"kty": "EC", "kid": "no-use"}));
    let parsed = SpiffeBundle::parse(td("example.org"), &doc.to_string()).unwrap();
    assert_eq!(parsed.skipped(), 4);
    assert_eq!(parsed.x509_authorities(), bundle.x509_authorities());
    assert!(parsed.jwt_authorities().is_empty());
}

/// Log lines written while `f` runs (WARN and up, this thread only).
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

/// A new root CA named `name`.
fn root(name: &str) -> CertificateAuthority {
    CertificateAuthority::new_root(&CaParams::new(name)).unwrap()
}

/// `example.org`'s bundle of `ca`'s root, at the SPIFFE sequence `seq`.
fn example_org_bundle(ca: &CertificateAuthority, seq: u64) -> SpiffeBundle {
    SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(ca.cert_pem())
        .unwrap()
        .spiffe_sequence(seq)
}

#[test]
fn other_authorities_under_the_same_sequence_are_refused_with_a_warning() {
    let (old_ca, new_ca) = (root("old"), root("new"));
    let v = example_org_bundle;
    let mut set = BundleSet::new();
    assert!(set.insert(v(&old_ca, 7)).unwrap());
    // The same contents again: unchanged, no warning.
    let (same, logs) = warnings_during(|| set.insert(v(&old_ca, 7)));
    assert!(!same.unwrap());
    assert_eq!(logs, "");
    // Other contents, same sequence: kept the stored one, warned naming both.
    let (changed, logs) = warnings_during(|| set.insert(v(&new_ca, 7)));
    assert!(
        !changed.unwrap(),
        "an equal sequence must not replace other contents"
    );
    assert_eq!(
        set.get(&td("example.org")).unwrap().to_pem(),
        old_ca.cert_pem()
    );
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("same spiffe_sequence"), "{logs}");
    assert!(logs.contains("sequence=7"), "{logs}");
    assert!(logs.contains("CN=old"), "current named: {logs}");
    assert!(logs.contains("CN=new"), "presented named: {logs}");
    // A higher sequence takes it.
    assert!(set.insert(v(&new_ca, 8)).unwrap());
    assert_eq!(
        set.get(&td("example.org")).unwrap().to_pem(),
        new_ca.cert_pem()
    );
}

#[test]
fn a_lower_sequence_never_replaces_a_higher_one() {
    let (old_ca, new_ca) = (root("old"), root("new"));
    let v = example_org_bundle;
    let mut set = BundleSet::new();
    assert!(set.insert(v(&new_ca, 5)).unwrap());
    let err = set.insert(v(&old_ca, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleBundle {
                presented: 4,
                current: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "SPIFFE bundle of trust domain example.org: sequence 4 is older than the current 5; keeping the current bundle"
    );
    let current = set.get(&td("example.org")).unwrap();
    assert_eq!(current.to_pem(), new_ca.cert_pem());
    // Per-domain: another domain's sequence is its own.
    assert!(
        set.insert(
            SpiffeBundle::new(td("other.org"))
                .add_x509_authorities_pem(old_ca.cert_pem())
                .unwrap()
                .spiffe_sequence(1)
        )
        .unwrap()
    );
    let trust = set.to_trust_bundle().unwrap();
    assert_eq!(
        trust.roots(Some(&td("example.org"))),
        [new_ca.cert_der().clone()]
    );
    assert_eq!(
        trust.roots(Some(&td("other.org"))),
        [old_ca.cert_der().clone()]
    );
    // A higher one does.
    assert!(set.insert(v(&old_ca, 6)).unwrap());
}

#[test]
fn file_trust_source_reads_pem_or_spiffe_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::new_root(&CaParams::new("A")).unwrap();
    let b = CertificateAuthority::new_root(&CaParams::new("B")).unwrap();
    let path = dir.path().join("bundle");
    let json = |ca: &CertificateAuthority| {
        SpiffeBundle::new(td("example.org"))
            .add_x509_authorities_pem(ca.cert_pem())
            .unwrap()
            .to_json()
    };
    std::fs::write(&path, json(&a)).unwrap();
    let source = FileTrustSource::watch_spiffe(
        td("example.org"),
        &path,
        None::<&str>,
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(
        source.current().roots(Some(&td("example.org"))),
        [a.cert_der().clone()]
    );
    std::fs::write(&path, b.cert_pem()).unwrap();
    assert!(source.reload().unwrap());
    assert_eq!(
        source.current().roots(Some(&td("example.org"))),
        [b.cert_der().clone()]
    );
    std::fs::write(&path, format!("\n  {}", json(&a))).unwrap();
    assert!(source.reload().unwrap());
    assert_eq!(
        source.current().roots(Some(&td("example.org"))),
        [a.cert_der().clone()]
    );
    // A truncated document keeps the last good bundle, naming the problem.
    let full = json(&b);
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = source.reload().unwrap_err();
    assert!(
        err.to_string().contains("expected a JSON document"),
        "{err}"
    );
    assert_eq!(
        source.current().roots(Some(&td("example.org"))),
        [a.cert_der().clone()]
    );

    // A plain CA bundle reads the JSON's X.509 authorities too.
    std::fs::write(&path, json(&b)).unwrap();
    let plain = FileTrustSource::open(&path, None::<&str>).unwrap();
    assert!(!plain.current().is_spiffe());
    assert_eq!(plain.current().roots(None), [b.cert_der().clone()]);
}

// ---- refused documents: the error names what was expected and what was seen ----------

fn parse_err(doc: &str) -> String {
    SpiffeBundle::parse(td("example.org"), doc)
        .unwrap_err()
        .to_string()
}

#[test]
fn truncated_json_is_refused() {
    let ca = CertificateAuthority::new_root(&CaParams::new("Root")).unwrap();
    let doc = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(ca.cert_pem())
        .unwrap()
        .to_json();
    let err = parse_err(&doc[..doc.len() - 10]);
    assert!(
        err.starts_with("SPIFFE bundle of trust domain example.org: expected a JSON document (a JWK Set), saw invalid JSON: EOF while parsing"),
        "{err}"
    );
}

#[test]
fn x5c_not_a_ca_or_not_base64_is_refused() {
    let ca = CertificateAuthority::new_root(&CaParams::new("Root")).unwrap();
    let leaf = ca
        .issue(&LeafParams::svid(SpiffeId::new(ID).unwrap()))
        .unwrap();
    let leaf_der =
        mtls_core::rustls::pki_types::CertificateDer::from(rustls_pki_types_der(&leaf.cert_pem()));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(leaf_der.as_ref());
    let err =
        parse_err(&json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [b64]}]}).to_string());
    assert!(
        err.contains("key #0: use x509-svid: expected a CA certificate (basicConstraints cA=true), saw the end-entity certificate"),
        "{err}"
    );
    let err = parse_err(r#"{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["MII*"]}]}"#);
    assert!(
        err.contains("key #0: use x509-svid: expected [x5c] in standard base64, saw"),
        "{err}"
    );
    let err = parse_err(r#"{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": []}]}"#);
    assert!(
        err.contains("expected [x5c] to hold exactly one certificate, saw 0 entries"),
        "{err}"
    );
}

#[test]
fn duplicate_kid_is_refused() {
    let key = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256).unwrap();
    let mut jwk = key.jwk(Some("k1"));
    jwk["use"] = "jwt-svid".into();
    let err = parse_err(&json!({"keys": [jwk.clone(), jwk]}).to_string());
    assert!(
        err.contains("key #1: use jwt-svid: expected a unique kid, saw \"k1\" a second time"),
        "{err}"
    );
    let err = parse_err(&json!({"keys": [{"use": "jwt-svid", "kty": "EC"}]}).to_string());
    assert!(
        err.contains("expected a non-empty [kid], saw none"),
        "{err}"
    );
}

#[test]
fn a_ca_of_another_trust_domain_is_refused() {
    // SPIRE's CAs carry the trust domain's ID as a URI SAN: a CA of other.org does not go
    // into example.org's bundle.
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "other.org CA");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://other.org").unwrap(),
    )];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = SpiffeBundle::new(td("example.org"))
        .add_x509_authorities_pem(cert.pem())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "SPIFFE bundle of trust domain example.org: expected a CA of trust domain example.org, saw CN=other.org CA naming spiffe://other.org"
    );
    // The same CA is fine in its own domain's bundle, and through JSON too.
    let own = SpiffeBundle::new(td("other.org"))
        .add_x509_authorities_pem(cert.pem())
        .unwrap();
    let err = SpiffeBundle::parse(td("example.org"), &own.to_json()).unwrap_err();
    assert!(
        err.to_string().contains("expected a CA of trust domain example.org, saw CN=other.org CA naming spiffe://other.org"),
        "{err}"
    );
}

fn rustls_pki_types_der(pem: &str) -> Vec<u8> {
    use mtls_core::rustls::pki_types::CertificateDer;
    use mtls_core::rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
