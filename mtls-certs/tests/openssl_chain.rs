//! Chains made by mtls-certs, checked by the real `openssl` CLI: `openssl verify` and the
//! extensions `openssl x509 -text` shows (SANs, basic constraints, KU, EKU, SKI/AKI).
// Tests may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mtls_certs::{
    CaParams, CertificateAuthority, CertificateSigningRequest, CsrParams, CsrPolicy, KeyAlgorithm,
    LeafParams, Profile, SpiffeId, Subject, SubjectAltName, Usage, verify_chain,
};
use support::{extension, openssl, openssl_text, openssl_verify, put};

fn pki(alg: KeyAlgorithm) -> (CertificateAuthority, CertificateAuthority) {
    let root =
        CertificateAuthority::new_root(&CaParams::new("Test Root").key_algorithm(alg)).unwrap();
    let int = root
        .new_intermediate(&CaParams::new("Test Intermediate").key_algorithm(alg))
        .unwrap();
    (root, int)
}

#[test]
fn ca_extensions_as_openssl_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let (root, int) = pki(KeyAlgorithm::EcdsaP256);
    let root_pem = put(dir.path(), "root.pem", &root.cert_pem());
    let int_pem = put(dir.path(), "int.pem", &int.chain_pem());
    openssl_verify(&root_pem, None, &int_pem);

    let root_text = openssl_text(&root_pem);
    assert_eq!(
        extension(&root_text, "X509v3 Basic Constraints").unwrap(),
        "CA:TRUE, pathlen:1"
    );
    assert_eq!(
        extension(&root_text, "X509v3 Key Usage").unwrap(),
        "Digital Signature, Certificate Sign, CRL Sign"
    );
    assert!(extension(&root_text, "X509v3 Subject Key Identifier").is_some());
    assert!(
        extension(&root_text, "X509v3 Authority Key Identifier").is_none(),
        "root has no AKI"
    );

    let int_text = openssl_text(&int_pem);
    assert_eq!(
        extension(&int_text, "X509v3 Basic Constraints").unwrap(),
        "CA:TRUE, pathlen:0"
    );
    let root_ski = extension(&root_text, "X509v3 Subject Key Identifier").unwrap();
    let int_aki = extension(&int_text, "X509v3 Authority Key Identifier").unwrap();
    assert!(
        int_aki.contains(&root_ski),
        "AKI {int_aki} must name the root's SKI {root_ski}"
    );
    assert!(extension(&int_text, "X509v3 Subject Key Identifier").is_some());
    // 10 years for the root by default
    let summary = mtls_certs::CertificateSummary::from_pem(&root.cert_pem()).unwrap();
    let years = (summary.not_after - summary.not_before).whole_days() / 365;
    assert_eq!(years, 10);
}

#[test]
fn every_profile_and_key_algorithm_verifies_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
    ] {
        let (root, int) = pki(alg);
        let root_pem = put(dir.path(), &format!("{alg}-root.pem"), &root.cert_pem());
        let int_pem = put(dir.path(), &format!("{alg}-int.pem"), &int.cert_pem());
        let int_ski = extension(&openssl_text(&int_pem), "X509v3 Subject Key Identifier").unwrap();
        let cases: Vec<(LeafParams, &str, &str)> = vec![
            (
                LeafParams::server(["api.internal", "127.0.0.1"]),
                "DNS:api.internal, IP Address:127.0.0.1",
                "TLS Web Server Authentication",
            ),
            (
                LeafParams::client(["app-internal-api"]),
                "DNS:app-internal-api",
                "TLS Web Client Authentication",
            ),
            (
                LeafParams::peer(["peer.internal"]),
                "DNS:peer.internal",
                "TLS Web Server Authentication, TLS Web Client Authentication",
            ),
            (
                LeafParams::svid(SpiffeId::new("spiffe://example.org/ns/shop/sa/api").unwrap())
                    .add_dns_name("api.shop.svc"),
                "URI:spiffe://example.org/ns/shop/sa/api, DNS:api.shop.svc",
                "TLS Web Server Authentication, TLS Web Client Authentication",
            ),
        ];
        for (params, sans, eku) in cases {
            let profile = params.profile;
            let leaf = int.issue(&params.key_algorithm(alg)).unwrap();
            let name = format!("{alg}-{profile}");
            let leaf_pem = put(dir.path(), &format!("{name}.pem"), &leaf.cert_pem());
            openssl_verify(&root_pem, Some(&int_pem), &leaf_pem);
            // the chain file (leaf + intermediate) also verifies as a whole via -untrusted
            let chain_pem = put(dir.path(), &format!("{name}-chain.pem"), &leaf.chain_pem());
            openssl_verify(&root_pem, Some(&chain_pem), &leaf_pem);
            // webpki agrees
            verify_chain(&leaf.cert_chain(), &[root.cert_der().clone()], Usage::Any).unwrap();

            let text = openssl_text(&leaf_pem);
            assert_eq!(
                extension(&text, "X509v3 Subject Alternative Name").unwrap(),
                sans,
                "{name}"
            );
            assert_eq!(
                extension(&text, "X509v3 Basic Constraints").unwrap(),
                "CA:FALSE",
                "{name}"
            );
            assert!(text.contains("X509v3 Key Usage: critical"), "{name}");
            let ku = extension(&text, "X509v3 Key Usage").unwrap();
            let want_ku = if alg.is_rsa() {
                "Digital Signature, Key Encipherment"
            } else {
                "Digital Signature"
            };
            assert_eq!(ku, want_ku, "{name}");
            assert!(!ku.contains("Certificate Sign") && !ku.contains("CRL Sign"));
            assert_eq!(
                extension(&text, "X509v3 Extended Key Usage").unwrap(),
                eku,
                "{name}"
            );
            let aki = extension(&text, "X509v3 Authority Key Identifier").unwrap();
            assert!(
                aki.contains(&int_ski),
                "{name}: AKI {aki} vs issuer SKI {int_ski}"
            );
            assert!(extension(&text, "X509v3 Subject Key Identifier").is_some());
            // not_before backdated by 5 minutes, 24 h lifetime from now
            let c = leaf.certificate();
            let life = c.not_after() - c.not_before();
            assert_eq!(life.whole_minutes(), 24 * 60 + 5, "{name}");
            assert_eq!(profile, params_profile(&text));
        }
    }
}

fn params_profile(text: &str) -> Profile {
    let eku = extension(text, "X509v3 Extended Key Usage").unwrap();
    let san = extension(text, "X509v3 Subject Alternative Name").unwrap();
    match (
        eku.contains("Server"),
        eku.contains("Client"),
        san.contains("URI:spiffe"),
    ) {
        (true, false, _) => Profile::Server,
        (false, true, _) => Profile::Client,
        (true, true, true) => Profile::Svid,
        _ => Profile::Peer,
    }
}

#[test]
fn leaf_never_outlives_its_issuer() {
    let root = CertificateAuthority::new_root(
        &CaParams::new("Short Root").valid_for(std::time::Duration::from_secs(3600)),
    )
    .unwrap();
    let leaf = root
        .issue(
            &LeafParams::server(["a.internal"]).valid_for(std::time::Duration::from_secs(86_400)),
        )
        .unwrap();
    assert!(leaf.certificate().was_clamped());
    assert_eq!(leaf.certificate().not_after(), root.not_after());
    let short = root
        .issue(&LeafParams::server(["a.internal"]).valid_for(std::time::Duration::from_secs(60)))
        .unwrap();
    assert!(!short.certificate().was_clamped());
}

#[test]
fn our_csrs_pass_openssl_req_verify_and_openssl_csrs_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (root, int) = pki(KeyAlgorithm::EcdsaP256);
    let (csr, _key) = CertificateSigningRequest::generate(
        &CsrParams::new(Subject::common_name("api"))
            .add_san(SubjectAltName::Uri("spiffe://example.org/api".into())),
    )
    .unwrap();
    let csr_path = put(dir.path(), "ours.csr", &csr.pem());
    let (ok, out) = openssl(&mtls_test_support::words_and(
        "req -verify -noout -in",
        &[&csr_path],
    ));
    assert!(ok && out.contains("verify OK"), "{out}");

    // A CSR made by openssl, signed under an SVID policy.
    let key = dir.path().join("theirs.key");
    let their_csr = dir.path().join("theirs.csr");
    let (ok, out) = openssl(&mtls_test_support::words_and(
        "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout",
        &[
            key.to_str().unwrap(),
            "-out",
            their_csr.to_str().unwrap(),
            "-subj",
            "/CN=worker",
            "-addext",
            "subjectAltName=URI:spiffe://example.org/worker",
        ],
    ));
    assert!(ok, "{out}");
    let csr =
        CertificateSigningRequest::from_pem(&std::fs::read_to_string(&their_csr).unwrap()).unwrap();
    let issued = int
        .sign_csr(&csr, &CsrPolicy::svid_in("example.org".parse().unwrap()))
        .unwrap();
    let root_pem = put(dir.path(), "root.pem", &root.cert_pem());
    let int_pem = put(dir.path(), "int.pem", &int.cert_pem());
    let leaf_pem = put(dir.path(), "worker.pem", &issued.pem());
    openssl_verify(&root_pem, Some(&int_pem), &leaf_pem);
    let text = openssl_text(&leaf_pem);
    assert_eq!(
        extension(&text, "X509v3 Subject Alternative Name").unwrap(),
        "URI:spiffe://example.org/worker"
    );
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints").unwrap(),
        "CA:FALSE"
    );
    // the key openssl made matches the certificate we issued
    let (ok, cert_pub) = openssl(&mtls_test_support::words_and(
        "x509 -noout -pubkey -in",
        &[&leaf_pem],
    ));
    assert!(ok);
    let (ok, key_pub) = openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(cert_pub, key_pub);
}

#[test]
fn ca_loaded_from_pem_keeps_issuing_verifiable_chains() {
    let dir = tempfile::tempdir().unwrap();
    let (root, int) = pki(KeyAlgorithm::EcdsaP384);
    let cert_pem = format!("{}{}", int.chain_pem(), root.cert_pem());
    let reloaded = CertificateAuthority::from_pem(&cert_pem, &int.key_pem()).unwrap();
    assert_eq!(reloaded.root_pem().unwrap(), root.cert_pem());
    let leaf = reloaded.issue(&LeafParams::peer(["x.internal"])).unwrap();
    let root_pem = put(dir.path(), "root.pem", &root.cert_pem());
    let chain_pem = put(dir.path(), "chain.pem", &leaf.chain_pem());
    let leaf_pem = put(dir.path(), "leaf.pem", &leaf.cert_pem());
    openssl_verify(&root_pem, Some(&chain_pem), &leaf_pem);

    // A CA made by openssl (SEC1 key, SHA-1 SKI) can be loaded and issue too.
    let ca_key = dir.path().join("ossl-ca.key");
    let ca_crt = dir.path().join("ossl-ca.pem");
    let (ok, out) = openssl(&mtls_test_support::words_and(
        "ecparam -name prime256v1 -genkey -noout -out",
        &[ca_key.to_str().unwrap()],
    ));
    assert!(ok, "{out}");
    let (ok, out) = openssl(&mtls_test_support::words_and(
        "req -x509 -new -key",
        &[
            ca_key.to_str().unwrap(),
            "-out",
            ca_crt.to_str().unwrap(),
            "-days",
            "30",
            "-subj",
            "/CN=openssl CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ));
    assert!(ok, "{out}");
    let ossl_ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(&ca_crt).unwrap(),
        &std::fs::read_to_string(&ca_key).unwrap(),
    )
    .unwrap();
    let leaf = ossl_ca
        .issue(&LeafParams::server(["svc.internal"]))
        .unwrap();
    let leaf_pem = put(dir.path(), "ossl-leaf.pem", &leaf.cert_pem());
    openssl_verify(ca_crt.to_str().unwrap(), None, &leaf_pem);
    let ca_ski = extension(
        &openssl_text(ca_crt.to_str().unwrap()),
        "X509v3 Subject Key Identifier",
    )
    .unwrap();
    let aki = extension(&openssl_text(&leaf_pem), "X509v3 Authority Key Identifier").unwrap();
    assert!(
        aki.contains(&ca_ski),
        "AKI {aki} must equal the openssl CA's SKI {ca_ski}"
    );
}
