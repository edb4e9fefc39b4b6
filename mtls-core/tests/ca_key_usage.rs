//! Issue 13 item 1: every CA certificate of the verified path must be allowed to sign
//! certificates. A CA with a keyUsage extension that lacks keyCertSign (RFC 5280
//! §6.1.4(n), X509-SVID §3.2/§4.3) breaks the chain — on both sides, with a SPIFFE bundle
//! set and with a plain CA bundle. rustls-webpki does not check this itself.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use mtls_certs::{CaParams, CertificateAuthority};
use mtls_core::{
    Authorize, ClientConfigBuilder, Error, Identity, SanMatcher, SanType, ServerConfigBuilder,
    StringMatcher, TrustBundle,
};
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose as Ku};
use support::{handshake, uri};
use time::{Duration, OffsetDateTime};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

/// A CA certificate made with rcgen (mtls-certs refuses to make broken ones).
struct RawCa {
    cert_pem: String,
    key: rcgen::KeyPair,
}

impl RawCa {
    fn issuer(&self) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key = rcgen::KeyPair::from_pem(&self.key.serialize_pem()).unwrap();
        rcgen::Issuer::from_ca_cert_pem(&self.cert_pem, key).unwrap()
    }
}

fn ca_params(name: &str, key_usages: &[Ku], path_len: u8) -> rcgen::CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut p = rcgen::CertificateParams::default();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::hours(2);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = key_usages.to_vec();
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&support::rand_serial()));
    p
}

/// A self-signed root with these key usages.
fn raw_root(name: &str, key_usages: &[Ku]) -> RawCa {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = ca_params(name, key_usages, 1).self_signed(&key).unwrap();
    RawCa {
        cert_pem: cert.pem(),
        key,
    }
}

/// An intermediate under `root` (an mtls-certs CA) with these key usages.
fn raw_intermediate(root: &CertificateAuthority, key_usages: &[Ku]) -> RawCa {
    let key = rcgen::KeyPair::generate().unwrap();
    let root_key = rcgen::KeyPair::from_pem(&root.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root.cert_pem(), root_key).unwrap();
    let cert = ca_params("example.org Intermediate", key_usages, 0)
        .signed_by(&key, &issuer)
        .unwrap();
    RawCa {
        cert_pem: cert.pem(),
        key,
    }
}

/// An X509-SVID for `id` (also carrying DNS `id.test`) signed by `ca`; `chain` follows the
/// leaf in the presented chain.
fn svid(ca: &RawCa, id: &str, chain: &str) -> Identity {
    let now = OffsetDateTime::now_utc();
    let mut p = rcgen::CertificateParams::default();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::hours(1);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![Ku::DigitalSignature];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.subject_alt_names = vec![uri(id)];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&support::rand_serial()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer()).unwrap();
    Identity::from_pem(cert.pem() + chain, key.serialize_pem()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Bundle {
    Spiffe,
    Plain,
}

fn trust(root_pem: &str, bundle: Bundle) -> Arc<TrustBundle> {
    Arc::new(match bundle {
        Bundle::Spiffe => TrustBundle::spiffe()
            .add_domain_pem("example.org".parse().unwrap(), root_pem)
            .unwrap(),
        Bundle::Plain => TrustBundle::from_pem(root_pem).unwrap(),
    })
}

/// One handshake where the side named by `broken_side` presents `broken` and the other
/// side a good SVID. Policy: SPIFFE authorizers with a SPIFFE bundle, SAN matchers with a
/// plain bundle.
async fn run(
    root_pem: &str,
    bundle: Bundle,
    server_identity: Identity,
    client_identity: Identity,
) -> support::Outcome {
    let t = trust(root_pem, bundle);
    let mut server = ServerConfigBuilder::new(Arc::new(server_identity), t.clone());
    let mut client = ClientConfigBuilder::new(Arc::new(client_identity), t);
    match bundle {
        Bundle::Spiffe => {
            server = server.authorize(Authorize::member_of("example.org".parse().unwrap()));
            client = client.authorize(Authorize::exact(SERVER_ID.parse().unwrap()));
        }
        Bundle::Plain => {
            server = server.match_sans([SanMatcher::new(
                SanType::Uri,
                StringMatcher::prefix("spiffe://example.org/").unwrap(),
            )]);
            client = client.match_sans([SanMatcher::new(
                SanType::Uri,
                StringMatcher::exact(SERVER_ID),
            )]);
        }
    }
    handshake(
        server.build().unwrap(),
        client.build().unwrap(),
        "127.0.0.1",
    )
    .await
}

fn assert_key_usage_rejection(err: &Error, ca: &str) {
    match err {
        Error::CaKeyUsage {
            subject,
            ca: named,
            key_usage,
        } => {
            assert!(named.contains(ca), "names the CA: {err}");
            assert!(!key_usage.contains("keyCertSign"), "{err}");
            assert!(subject.starts_with("spiffe://example.org/"), "{err}");
            let text = err.to_string();
            assert!(text.contains("keyCertSign"), "{text}");
        }
        other => panic!("expected CaKeyUsage, got {other:?}"),
    }
}

#[tokio::test]
async fn intermediate_without_key_cert_sign_is_refused_on_both_sides() {
    let root = CertificateAuthority::new_root(&CaParams::new("example.org Root")).unwrap();
    let good = raw_intermediate(&root, &[Ku::KeyCertSign, Ku::CrlSign]);
    // cA=true, but keyUsage only allows CRL signing and digital signatures.
    let bad = raw_intermediate(&root, &[Ku::DigitalSignature, Ku::CrlSign]);
    for bundle in [Bundle::Spiffe, Bundle::Plain] {
        // Control: the same construction with keyCertSign is accepted both ways.
        run(
            &root.cert_pem(),
            bundle,
            svid(&good, SERVER_ID, &good.cert_pem),
            svid(&good, CLIENT_ID, &good.cert_pem),
        )
        .await
        .assert_ok();

        // The client's chain runs through the bad intermediate: the server refuses.
        let out = run(
            &root.cert_pem(),
            bundle,
            svid(&good, SERVER_ID, &good.cert_pem),
            svid(&bad, CLIENT_ID, &bad.cert_pem),
        )
        .await;
        assert_key_usage_rejection(out.server_rejection(), "example.org Intermediate");

        // The server's chain runs through it: the client refuses.
        let out = run(
            &root.cert_pem(),
            bundle,
            svid(&bad, SERVER_ID, &bad.cert_pem),
            svid(&good, CLIENT_ID, &good.cert_pem),
        )
        .await;
        assert_key_usage_rejection(out.client_rejection(), "example.org Intermediate");
    }
}

#[tokio::test]
async fn root_without_key_cert_sign_cannot_issue() {
    // A trusted root whose own keyUsage forbids certificate signing vouches for nobody.
    let root = raw_root(
        "example.org Root without keyCertSign",
        &[Ku::DigitalSignature],
    );
    let good_root = raw_root("example.org Root", &[Ku::KeyCertSign, Ku::CrlSign]);
    for bundle in [Bundle::Spiffe, Bundle::Plain] {
        let both = format!("{}{}", root.cert_pem, good_root.cert_pem);
        let out = run(
            &both,
            bundle,
            svid(&good_root, SERVER_ID, ""),
            svid(&root, CLIENT_ID, ""),
        )
        .await;
        assert_key_usage_rejection(out.server_rejection(), "without keyCertSign");
        let out = run(
            &both,
            bundle,
            svid(&root, SERVER_ID, ""),
            svid(&good_root, CLIENT_ID, ""),
        )
        .await;
        assert_key_usage_rejection(out.client_rejection(), "without keyCertSign");
    }
}
