//! Every refusal the issue lists, each asserting its specific error variant.
// Tests may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[cfg(feature = "cfssl")]
use mtls_certs::cfssl::{CfsslCsr, SigningConfig};
use mtls_certs::{
    CaParams, CertificateAuthority, CertificateSigningRequest, CsrParams, CsrPolicy, Error,
    KeyAlgorithm, KeyPair, LeafParams, Profile, SpiffeId, Subject, SubjectAltName, Usage,
    parse_certificates_pem, verify_chain,
};
use time::{Duration, OffsetDateTime};

fn root() -> CertificateAuthority {
    CertificateAuthority::new_root(&CaParams::new("Neg Root")).unwrap()
}

#[test]
fn garbage_and_truncated_pem() {
    let ca = root();
    let pem = ca.cert_pem();
    let truncated = &pem[..pem.len() / 2];
    for bad in [
        "",
        "garbage",
        truncated,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ] {
        let err = parse_certificates_pem(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidPem { .. } | Error::InvalidDer { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        parse_certificates_pem(truncated),
        Err(Error::InvalidPem { .. })
    ));
    assert!(matches!(
        parse_certificates_pem("garbage"),
        Err(Error::InvalidPem { .. })
    ));
    // A well-formed PEM block whose DER is not a certificate.
    let not_der = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        parse_certificates_pem(not_der),
        Err(Error::InvalidDer { .. })
    ));
    // Keys too.
    let key = ca.key_pem();
    assert!(matches!(
        KeyPair::from_pem(&key[..key.len() / 2]),
        Err(Error::InvalidPem { .. })
    ));
    assert!(matches!(
        KeyPair::from_pem("garbage"),
        Err(Error::InvalidPem { .. })
    ));
    assert!(matches!(
        CertificateAuthority::from_pem(truncated, &key),
        Err(Error::InvalidPem { .. })
    ));
    assert!(matches!(
        mtls_certs::inspect(b"\x30\x03\x02\x01\x01"),
        Err(Error::InvalidDer { .. })
    ));
}

#[test]
fn key_not_matching_cert() {
    let a = root();
    let b = root();
    let err = CertificateAuthority::from_pem(&a.cert_pem(), &b.key_pem()).unwrap_err();
    let Error::KeyMismatch {
        expected,
        presented,
    } = &err
    else {
        panic!("{err}")
    };
    assert_ne!(expected, presented);
    assert!(err.to_string().contains("expected public key"));
}

#[test]
fn non_ca_cert_used_as_ca() {
    let leaf = root().issue(&LeafParams::server(["a.internal"])).unwrap();
    let err = CertificateAuthority::from_pem(&leaf.cert_pem(), &leaf.key_pem()).unwrap_err();
    assert!(
        matches!(err, Error::NotACa { ref presented, .. } if presented == "CA:FALSE"),
        "{err}"
    );
}

#[test]
fn ca_without_key_cert_sign_is_not_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("c.pem");
    let (ok, out) = support::openssl(&mtls_test_support::words_and(
        "req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout",
        &[
            key.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
            "-days",
            "1",
            "-subj",
            "/CN=no-certsign",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature",
        ],
    ));
    assert!(ok, "{out}");
    let err = CertificateAuthority::from_pem(
        &std::fs::read_to_string(&crt).unwrap(),
        &std::fs::read_to_string(&key).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotACa {
                expected: "keyUsage keyCertSign",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn expired_ca_refuses_to_issue() {
    let now = OffsetDateTime::now_utc();
    let expired = CertificateAuthority::new_root(
        &CaParams::new("Expired Root")
            .valid_between(now - Duration::days(30), now - Duration::days(1)),
    )
    .unwrap();
    let err = expired
        .issue(&LeafParams::server(["a.internal"]))
        .unwrap_err();
    assert!(matches!(err, Error::CaNotValid { .. }), "{err}");
    let err = expired.new_intermediate(&CaParams::new("Int")).unwrap_err();
    assert!(matches!(err, Error::CaNotValid { .. }), "{err}");
}

#[test]
fn intermediate_with_pathlen_zero_cannot_sign_a_ca() {
    let int = root().new_intermediate(&CaParams::new("Int")).unwrap();
    assert!(matches!(
        int.new_intermediate(&CaParams::new("Int2")),
        Err(Error::PathLenExceeded { .. })
    ));
}

#[test]
fn csr_asking_for_ca_is_refused_or_stripped() {
    let ca = root();
    let (csr, _key) = CertificateSigningRequest::generate(
        &CsrParams::new(Subject::common_name("sneaky"))
            .add_names(["sneaky.internal"])
            .requesting_ca(),
    )
    .unwrap();
    assert!(csr.requests_ca());
    let err = ca
        .sign_csr(&csr, &CsrPolicy::new(Profile::Server))
        .unwrap_err();
    assert!(
        matches!(err, Error::CsrRefused { ref presented, .. } if presented.contains("CA:TRUE")),
        "{err}"
    );

    let issued = ca
        .sign_csr(
            &csr,
            &CsrPolicy::new(Profile::Server).stripping_ca_requests(),
        )
        .unwrap();
    let summary = mtls_certs::CertificateSummary::from_der(issued.der()).unwrap();
    assert!(!summary.is_ca);
    assert_eq!(summary.key_usage, ["digitalSignature"]);
}

#[test]
fn csr_with_bad_signature() {
    let (csr, _key) =
        CertificateSigningRequest::generate(&CsrParams::new(Subject::common_name("x"))).unwrap();
    let mut der = csr.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = CertificateSigningRequest::from_der(&der).unwrap_err();
    assert!(matches!(err, Error::CsrBadSignature { .. }), "{err}");
}

#[test]
fn csr_outside_trust_domain_is_refused() {
    let ca = root();
    let (csr, _key) = CertificateSigningRequest::generate(
        &CsrParams::new(Subject::empty()).add_san(SubjectAltName::Dns("not-a-spiffe-id".into())),
    )
    .unwrap();
    let err = ca
        .sign_csr(&csr, &CsrPolicy::svid_in("example.org".parse().unwrap()))
        .unwrap_err();
    assert!(matches!(err, Error::CsrRefused { .. }), "{err}");
}

#[test]
fn invalid_spiffe_ids() {
    for bad in [
        "spiffe://Example.org/api",      // uppercase trust domain
        "spiffe://example.org/a/../b",   // dot-dot segment
        "spiffe://example.org/./b",      // dot segment
        "spiffe://example.org/api?x=1",  // query
        "spiffe://example.org/api#frag", // fragment
        "spiffe://example.org:8443/api", // port
        "spiffe://user@example.org/api", // userinfo
        "spiffe://example.org/api/",     // trailing slash
        "spiffe://example.org//api",     // empty segment
        "https://example.org/api",       // wrong scheme
        "spiffe:///api",                 // no trust domain
    ] {
        assert!(
            matches!(
                mtls_certs::SpiffeId::new(bad).map_err(Error::from),
                Err(Error::InvalidSpiffeId { .. })
            ),
            "{bad}"
        );
    }
    // An SVID needs a workload path: the bare trust-domain ID is refused.
    let ca = root();
    let err = ca
        .issue(&LeafParams::svid(
            SpiffeId::new("spiffe://example.org").unwrap(),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSpiffeId { .. }), "{err}");
    // And an uppercase trust domain slipped in as a raw URI SAN is refused too.
    let err = ca
        .issue(
            &LeafParams::new(Profile::Svid)
                .add_san(SubjectAltName::Uri("spiffe://Example.org/api".into())),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSpiffeId { .. }), "{err}");
}

#[test]
fn svid_needs_exactly_one_uri_san() {
    let ca = root();
    let two = LeafParams::svid(SpiffeId::new("spiffe://example.org/a").unwrap())
        .add_san(SubjectAltName::Uri("spiffe://example.org/b".into()));
    assert!(matches!(ca.issue(&two), Err(Error::InvalidSan { .. })));
    assert!(matches!(
        ca.issue(&LeafParams::new(Profile::Svid)),
        Err(Error::InvalidSan { .. })
    ));
    assert!(matches!(
        ca.issue(&LeafParams::server(Vec::<String>::new())),
        Err(Error::InvalidSan { .. })
    ));
}

#[test]
fn rsa_1024_is_refused_everywhere() {
    assert!(matches!(
        KeyAlgorithm::rsa(1024),
        Err(Error::RsaKeyTooSmall { presented: 1024 })
    ));
    assert!(matches!(
        "rsa1024".parse::<KeyAlgorithm>(),
        Err(Error::RsaKeyTooSmall { .. })
    ));
    #[cfg(feature = "cfssl")]
    {
        let csr = CfsslCsr::from_json(r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#).unwrap();
        assert!(matches!(
            csr.key_algorithm(),
            Err(Error::RsaKeyTooSmall { presented: 1024 })
        ));
    }
    // A 1024-bit key made by openssl is refused when loaded.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("rsa1024.pem");
    let (ok, out) = support::openssl(&mtls_test_support::words_and(
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out",
        &[key.to_str().unwrap()],
    ));
    assert!(ok, "{out}");
    let err = KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap_err();
    assert!(
        matches!(err, Error::RsaKeyTooSmall { presented: 1024 }),
        "{err}"
    );
}

#[cfg(feature = "cfssl")]
#[test]
fn unknown_cfssl_key_algo_and_usage() {
    let csr = CfsslCsr::from_json(r#"{"CN":"x","key":{"algo":"dsa","size":2048}}"#).unwrap();
    let err = csr.key_algorithm().unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedKeyAlgorithm { ref presented, .. } if presented == "dsa"),
        "{err}"
    );
    let err = SigningConfig::from_json(
        r#"{"signing":{"default":{"expiry":"1h","usages":["signing","teleportation"]}}}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::UnknownUsage { ref presented, .. } if presented == "teleportation"),
        "{err}"
    );
    assert!(err.to_string().contains("teleportation"));
    let cfg =
        SigningConfig::from_json(r#"{"signing":{"default":{"usages":["signing"]}}}"#).unwrap();
    assert!(matches!(
        cfg.profile(Some("www")),
        Err(Error::UnknownProfile { .. })
    ));
}

#[test]
fn webpki_rejects_wrong_root_and_expired_leaf() {
    let ca = root();
    let other = root();
    let leaf = ca.issue(&LeafParams::server(["a.internal"])).unwrap();
    let err = verify_chain(
        &leaf.cert_chain(),
        &[other.cert_der().clone()],
        Usage::Server,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ChainVerification { .. }), "{err}");
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue(
            &LeafParams::server(["a.internal"])
                .valid_between(now - Duration::hours(2), now - Duration::hours(1)),
        )
        .unwrap();
    let err = verify_chain(
        &expired.cert_chain(),
        &[ca.cert_der().clone()],
        Usage::Server,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::ChainVerification { ref reason, .. } if reason.contains("a certificate that expired at ")),
        "{err}"
    );
    // a client certificate is not a server certificate
    let client = ca.issue(&LeafParams::client(["c"])).unwrap();
    assert!(matches!(
        verify_chain(
            &client.cert_chain(),
            &[ca.cert_der().clone()],
            Usage::Server
        ),
        Err(Error::ChainVerification { .. })
    ));
}
