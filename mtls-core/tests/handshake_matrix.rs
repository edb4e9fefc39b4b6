//! The handshake matrix of issue 3: real loopback TCP, tokio-rustls on both sides, each
//! case asserting the specific outcome.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use mtls_certs::{LeafParams, SpiffeId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Error, Identity, SanMatcher, ServerConfigBuilder, TrustBundle,
};
use support::{Outcome, Pki, handshake, issued, rcgen_leaf, svid_from, tls_error, uri};
use time::{Duration, OffsetDateTime};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

/// A server as `spiffe://example.org/ns/prod/sa/api` that admits members of example.org
/// under /ns/prod, trusting the SPIFFE bundle set; `tweak` adjusts the builder.
fn server(
    pki: &Pki,
    tweak: impl FnOnce(ServerConfigBuilder) -> ServerConfigBuilder,
) -> rustls::ServerConfig {
    let builder =
        ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
            .authorize(
                Authorize::member_of("example.org".parse().unwrap())
                    .and(Authorize::path_prefix("/ns/prod")),
            );
    tweak(builder).build().unwrap()
}

/// A client presenting `identity` that requires the server to be SERVER_ID.
fn client(pki: &Pki, identity: Identity) -> rustls::ClientConfig {
    ClientConfigBuilder::new(Arc::new(identity), Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap()
}

async fn run_with(pki: &Pki, client_identity: Identity) -> Outcome {
    handshake(
        server(pki, |b| b),
        client(pki, client_identity),
        "127.0.0.1",
    )
    .await
}

#[tokio::test]
async fn allowed_svid_is_accepted_and_identified_on_both_sides() {
    let pki = Pki::new();
    let me = pki.svid(CLIENT_ID);
    let serial = me.serial().to_string();
    let out = run_with(&pki, me).await;
    let (client_seen_by_server, server_seen_by_client) = out.assert_ok();
    assert!(client_seen_by_server.is_authenticated());
    assert_eq!(
        client_seen_by_server.spiffe_id().unwrap().to_string(),
        CLIENT_ID
    );
    assert_eq!(
        client_seen_by_server.serial().map(ToString::to_string),
        Some(serial)
    );
    assert_eq!(
        client_seen_by_server.chain().len(),
        2,
        "leaf + intermediate"
    );
    assert_eq!(
        server_seen_by_client.spiffe_id().unwrap().to_string(),
        SERVER_ID
    );
}

#[tokio::test]
async fn wrong_spiffe_id_is_unauthorized_with_presented_and_expected() {
    let pki = Pki::new();
    let out = run_with(&pki, pki.svid("spiffe://example.org/ns/dev/sa/intruder")).await;
    match out.server_rejection() {
        Error::Unauthorized {
            presented,
            expected,
        } => {
            assert_eq!(presented, "spiffe://example.org/ns/dev/sa/intruder");
            assert_eq!(expected, "member of example.org and path prefix /ns/prod/");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    // The client learns it was refused through the alert.
    let client_err = out.client.unwrap_err();
    assert!(
        matches!(
            tls_error(&client_err),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateUnknown
            ))
        ),
        "{client_err:?}"
    );
}

#[tokio::test]
async fn wrong_san_is_refused_by_san_matchers() {
    let pki = Pki::new();
    let matchers: Vec<SanMatcher> =
        vec!["URI:prefix:spiffe://example.org/ns/prod/".parse().unwrap()];
    // A plain CA bundle with Envoy-style SAN policy (no SPIFFE rules).
    let server_cfg = ServerConfigBuilder::new(
        Arc::new(pki.svid(SERVER_ID)),
        Arc::new(TrustBundle::from_pem(pki.root.cert_pem()).unwrap()),
    )
    .match_sans(matchers)
    .build()
    .unwrap();
    let intruder = issued(&pki.int, &LeafParams::client(["intruder.internal"]));
    let out = handshake(server_cfg.clone(), client(&pki, intruder), "127.0.0.1").await;
    match out.server_rejection() {
        Error::SanMismatch {
            presented,
            expected,
        } => {
            assert_eq!(presented, "DNS:intruder.internal");
            assert_eq!(expected, r#"URI prefix "spiffe://example.org/ns/prod/""#);
        }
        other => panic!("expected SanMismatch, got {other:?}"),
    }
    // ...and the right SAN passes the same server.
    let out = handshake(server_cfg, client(&pki, pki.svid(CLIENT_ID)), "127.0.0.1").await;
    out.assert_ok();
}

#[tokio::test]
async fn no_client_certificate_is_refused_by_rustls() {
    let pki = Pki::new();
    let no_cert = ClientConfigBuilder::without_identity(Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap();
    let out = handshake(server(&pki, |b| b), no_cert, "127.0.0.1").await;
    let err = out.server.unwrap_err();
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::NoCertificatesPresented)
        ),
        "{err:?}"
    );
    assert!(out.client.is_err());
}

#[tokio::test]
async fn certificate_from_another_ca_is_an_unknown_issuer() {
    let pki = Pki::new();
    let out = run_with(&pki, svid_from(&pki.intruder, CLIENT_ID)).await;
    match out.server_rejection() {
        Error::UnknownIssuer {
            subject, trusted, ..
        } => {
            assert_eq!(subject, CLIENT_ID);
            assert_eq!(trusted, "the bundle of trust domain example.org");
        }
        other => panic!("expected UnknownIssuer, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let params = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
        .valid_between(now - Duration::hours(2), now - Duration::hours(1));
    let out = run_with(&pki, issued(&pki.int, &params)).await;
    match out.server_rejection() {
        Error::Expired {
            subject,
            not_after,
            now,
        } => {
            assert_eq!(subject, CLIENT_ID);
            assert!(not_after < now, "{not_after} vs {now}");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let params = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
        .valid_between(now + Duration::hours(1), now + Duration::hours(2));
    let out = run_with(&pki, issued(&pki.int, &params)).await;
    assert!(
        matches!(out.server_rejection(), Error::NotYetValid { subject, .. } if subject == CLIENT_ID),
        "{:?}",
        out.server
    );
}

#[tokio::test]
async fn ca_certificate_as_leaf_is_refused() {
    let pki = Pki::new();
    // The intermediate CA's own certificate and key, presented as a client identity.
    let ca_as_leaf = Identity::from_pem(pki.int.chain_pem(), pki.int.key_pem()).unwrap();
    let out = run_with(&pki, ca_as_leaf).await;
    assert!(
        matches!(out.server_rejection(), Error::CaCertificateAsLeaf { subject } if subject.contains("example.org Intermediate")),
        "{:?}",
        out.server
    );
    // Also a CA certificate carrying a SPIFFE ID, signed by the trusted intermediate.
    let spiffe_ca = rcgen_leaf(&pki.int, |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p.subject_alt_names = vec![uri(CLIENT_ID)];
    });
    let out = run_with(&pki, spiffe_ca).await;
    assert!(
        matches!(out.server_rejection(), Error::CaCertificateAsLeaf { .. }),
        "{:?}",
        out.server
    );
}

#[tokio::test]
async fn two_uri_sans_are_refused() {
    let pki = Pki::new();
    let two = rcgen_leaf(&pki.int, |p| {
        p.subject_alt_names = vec![uri(CLIENT_ID), uri("spiffe://example.org/ns/prod/sa/admin")];
    });
    let out = run_with(&pki, two).await;
    match out.server_rejection() {
        Error::SvidUriSanCount { count, presented } => {
            assert_eq!(*count, 2);
            assert_eq!(
                presented,
                &[
                    CLIENT_ID.to_owned(),
                    "spiffe://example.org/ns/prod/sa/admin".to_owned()
                ]
            );
        }
        other => panic!("expected SvidUriSanCount, got {other:?}"),
    }
}

#[tokio::test]
async fn svid_key_usage_and_root_id_rules() {
    let pki = Pki::new();
    let cert_sign = rcgen_leaf(&pki.int, |p| {
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.subject_alt_names = vec![uri(CLIENT_ID)];
    });
    let out = run_with(&pki, cert_sign).await;
    assert!(
        matches!(out.server_rejection(), Error::SvidKeyUsage { key_usage, .. } if key_usage == "digitalSignature,cRLSign"),
        "{:?}",
        out.server
    );
    let root_id = rcgen_leaf(&pki.int, |p| {
        p.subject_alt_names = vec![uri("spiffe://example.org")]
    });
    let out = run_with(&pki, root_id).await;
    assert!(
        matches!(out.server_rejection(), Error::SvidInvalidId { presented, reason } if presented == "spiffe://example.org" && reason.contains("root")),
        "{:?}",
        out.server
    );
}

#[tokio::test]
async fn foreign_trust_domain_id_from_a_ca_trusted_for_another_domain_is_refused() {
    let pki = Pki::new();
    // example.org's CA mints an ID in other.org: other.org's bundle must be the judge.
    let forged = pki.svid("spiffe://other.org/ns/prod/sa/web");
    let server_cfg = server(&pki, |b| b.authorize(Authorize::any()));
    let out = handshake(server_cfg, client(&pki, forged), "127.0.0.1").await;
    match out.server_rejection() {
        Error::UnknownIssuer {
            subject, trusted, ..
        } => {
            assert_eq!(subject, "spiffe://other.org/ns/prod/sa/web");
            assert_eq!(trusted, "the bundle of trust domain other.org");
        }
        other => panic!("expected UnknownIssuer, got {other:?}"),
    }
    // A trust domain with no bundle at all.
    let out = run_with(&pki, pki.svid("spiffe://evil.org/x")).await;
    match out.server_rejection() {
        Error::UnknownTrustDomain {
            trust_domain,
            known,
            ..
        } => {
            assert_eq!(trust_domain, "evil.org");
            assert_eq!(known, "example.org, other.org");
        }
        other => panic!("expected UnknownTrustDomain, got {other:?}"),
    }
}

#[tokio::test]
async fn revoked_certificate_is_refused_by_crl() {
    let pki = Pki::new();
    let revoked_leaf = pki
        .int
        .issue(&LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()))
        .unwrap();
    let crl = support::crl_pem(&pki.int, &[revoked_leaf.certificate().serial().as_bytes()]);
    let bundle = pki.spiffe_bundle().add_crls_pem(&crl).unwrap();
    let server_cfg = ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(bundle))
        .authorize(Authorize::member_of("example.org".parse().unwrap()))
        .build()
        .unwrap();
    let revoked = Identity::from_pem(revoked_leaf.chain_pem(), revoked_leaf.key_pem()).unwrap();
    let revoked_serial = revoked.serial().to_string();
    let out = handshake(server_cfg.clone(), client(&pki, revoked), "127.0.0.1").await;
    match out.server_rejection() {
        Error::Revoked { subject, serial } => {
            assert_eq!(subject, CLIENT_ID);
            assert_eq!(serial, &revoked_serial);
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
    // A sibling not on the CRL still gets in.
    handshake(server_cfg, client(&pki, pki.svid(CLIENT_ID)), "127.0.0.1")
        .await
        .assert_ok();
}

#[tokio::test]
async fn permissive_mode_admits_no_cert_as_unauthenticated_and_still_verifies_certs() {
    let pki = Pki::new();
    let no_cert = ClientConfigBuilder::without_identity(Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap();
    let out = handshake(
        server(&pki, |b| b.allow_unauthenticated()),
        no_cert,
        "127.0.0.1",
    )
    .await;
    let (peer, _) = out.assert_ok();
    assert!(!peer.is_authenticated());
    assert!(peer.spiffe_id().is_none());
    assert_eq!(peer.to_string(), "unauthenticated (no client certificate)");

    let out = handshake(
        server(&pki, |b| b.allow_unauthenticated()),
        client(&pki, pki.svid(CLIENT_ID)),
        "127.0.0.1",
    )
    .await;
    let (peer, _) = out.assert_ok();
    assert!(peer.is_authenticated());
    assert_eq!(peer.spiffe_id().unwrap().to_string(), CLIENT_ID);

    // A certificate that is presented must still be valid, permissive or not.
    let out = handshake(
        server(&pki, |b| b.allow_unauthenticated()),
        client(&pki, pki.svid("spiffe://example.org/ns/dev/x")),
        "127.0.0.1",
    )
    .await;
    assert!(matches!(out.server_rejection(), Error::Unauthorized { .. }));
}

#[tokio::test]
async fn client_authorizes_server_by_policy_not_by_dialed_name() {
    let pki = Pki::new();
    // URI-only SVID on the server; the client dials "localhost" and an IP: both fine.
    for name in ["localhost", "127.0.0.1"] {
        handshake(server(&pki, |b| b), client(&pki, pki.svid(CLIENT_ID)), name)
            .await
            .assert_ok();
    }
    // The wrong server identity is refused by the client with presented/expected.
    let picky =
        ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), Arc::new(pki.spiffe_bundle()))
            .authorize(Authorize::exact(
                "spiffe://example.org/ns/prod/sa/billing".parse().unwrap(),
            ))
            .build()
            .unwrap();
    let out = handshake(server(&pki, |b| b), picky, "127.0.0.1").await;
    match out.client_rejection() {
        Error::Unauthorized {
            presented,
            expected,
        } => {
            assert_eq!(presented, SERVER_ID);
            assert_eq!(expected, "spiffe://example.org/ns/prod/sa/billing");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    // Without a policy the client falls back to checking the dialed name.
    let plain_trust = Arc::new(TrustBundle::from_pem(pki.root.cert_pem()).unwrap());
    let no_policy = ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), plain_trust.clone())
        .build()
        .unwrap();
    let out = handshake(server(&pki, |b| b), no_policy, "127.0.0.1").await;
    assert!(
        matches!(out.client_rejection(), Error::NameMismatch { expected, .. } if expected == "127.0.0.1"),
        "{:?}",
        out.client
    );
    let dns_server = ServerConfigBuilder::new(
        Arc::new(issued(&pki.int, &LeafParams::server(["localhost"]))),
        Arc::new(pki.spiffe_bundle()),
    )
    .build()
    .unwrap();
    let no_policy = ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), plain_trust)
        .build()
        .unwrap();
    handshake(dns_server, no_policy, "localhost")
        .await
        .assert_ok();
}
