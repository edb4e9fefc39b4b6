//! Issue 15: mtls-core's metrics, read back through `metrics-util`'s `DebuggingRecorder`
//! after real loopback handshakes (tokio-rustls on both sides) and real rotations.
#![cfg(feature = "metrics")]
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/metrics.rs"]
mod recorded;
mod support;

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use mtls_certs::{LeafParams, SpiffeId};
use mtls_core::metrics::{
    CERT_EXPIRATION, CERT_KIND, CERT_NAME, CLIENT_TLS_HANDSHAKES, HANDSHAKE_RESULT,
    HandshakeResult, HandshakeSide, ROTATION_KIND, ROTATIONS, SERVER_TLS_HANDSHAKES, TRUST_DOMAIN,
};
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, IdentityHandle, SanMatcher, ServerConfigBuilder,
    TrustHandle,
};
use recorded::Recorded;
use support::{Outcome, Pki, handshake, issued, rcgen_leaf, svid_from, uri};
use time::{Duration, OffsetDateTime};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

fn server(pki: &Pki) -> rustls::ServerConfig {
    ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
        .authorize(
            Authorize::member_of("example.org".parse().unwrap())
                .and(Authorize::path_prefix("/ns/prod")),
        )
        .build()
        .unwrap()
}

fn client(pki: &Pki, identity: Identity) -> rustls::ClientConfig {
    ClientConfigBuilder::new(Arc::new(identity), Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap()
}

/// Runs one handshake and counts both sides the way a driver of handshakes does.
async fn counted(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Outcome {
    let out = handshake(server, client, "127.0.0.1").await;
    mtls_core::metrics::handshake(HandshakeSide::Server, HandshakeResult::of(&out.server));
    mtls_core::metrics::handshake(HandshakeSide::Client, HandshakeResult::of(&out.client));
    out
}

fn server_result(values: &recorded::Values, result: &str) -> u64 {
    values.counter(SERVER_TLS_HANDSHAKES, &[(HANDSHAKE_RESULT, result)])
}

#[test]
fn each_refusal_is_counted_under_its_own_result_by_exactly_the_attempts() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let now = OffsetDateTime::now_utc();
    rec.block_on(async {
        counted(server(&pki), client(&pki, pki.svid(CLIENT_ID)))
            .await
            .assert_ok();
        // An intruder outside /ns/prod, three times: the authorizer refuses each.
        for _ in 0..3 {
            let intruder = pki.svid("spiffe://example.org/ns/dev/sa/intruder");
            counted(server(&pki), client(&pki, intruder)).await;
        }
        // SAN matchers (Envoy's match_typed_subject_alt_names) refuse twice.
        for _ in 0..2 {
            let sans: Vec<SanMatcher> = serde_json::from_str(
                r#"[{"san_type": "URI", "matcher": {"exact": "spiffe://example.org/ns/prod/sa/other"}}]"#,
            )
            .unwrap();
            let config = ServerConfigBuilder::new(
                Arc::new(pki.svid(SERVER_ID)),
                Arc::new(pki.spiffe_bundle()),
            )
            .match_sans(sans)
            .build()
            .unwrap();
            counted(config, client(&pki, pki.svid(CLIENT_ID))).await;
        }
        let no_cert = ClientConfigBuilder::without_identity(Arc::new(pki.spiffe_bundle()))
            .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
            .build()
            .unwrap();
        counted(server(&pki), no_cert).await;
        counted(
            server(&pki),
            client(&pki, svid_from(&pki.intruder, CLIENT_ID)),
        )
        .await;
        let expired = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
            .valid_between(now - Duration::hours(2), now - Duration::hours(1));
        counted(server(&pki), client(&pki, issued(&pki.int, &expired))).await;
        let early = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
            .valid_between(now + Duration::hours(1), now + Duration::hours(2));
        counted(server(&pki), client(&pki, issued(&pki.int, &early))).await;
        let two_uris = rcgen_leaf(&pki.int, |p| {
            p.subject_alt_names = vec![uri(CLIENT_ID), uri("spiffe://example.org/ns/prod/sa/b")];
        });
        counted(server(&pki), client(&pki, two_uris)).await;
    });
    let values = rec.take();
    for (result, expected) in [
        ("success", 1),
        ("authorizer_denied", 3),
        ("san_mismatch", 2),
        ("no_certificate", 1),
        ("unknown_ca", 1),
        ("expired", 1),
        ("not_yet_valid", 1),
        ("svid_invalid", 1),
        ("other", 0),
    ] {
        assert_eq!(
            server_result(&values, result),
            expected,
            "server {result}: {:?}",
            values.label_sets(SERVER_TLS_HANDSHAKES)
        );
    }
    assert_eq!(values.counter_total(SERVER_TLS_HANDSHAKES), 11);
    // The refused clients were told by an alert; the one accepted client counted success.
    assert_eq!(
        values.counter(CLIENT_TLS_HANDSHAKES, &[(HANDSHAKE_RESULT, "success")]),
        1
    );
    assert_eq!(values.counter_total(CLIENT_TLS_HANDSHAKES), 11);
    // A second read starts from zero: the counts above are this test's events only.
    assert_eq!(rec.take().counter_total(SERVER_TLS_HANDSHAKES), 0);
}

#[test]
fn a_client_refusing_the_server_counts_on_the_client_side() {
    let pki = Pki::new();
    let rec = Recorded::new();
    rec.block_on(async {
        let wants_other =
            ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), Arc::new(pki.spiffe_bundle()))
                .authorize(Authorize::exact(
                    "spiffe://example.org/ns/prod/sa/billing".parse().unwrap(),
                ))
                .build()
                .unwrap();
        counted(server(&pki), wants_other).await;
    });
    let values = rec.take();
    let denied = [(HANDSHAKE_RESULT, "authorizer_denied")];
    let sets = values.label_sets(CLIENT_TLS_HANDSHAKES);
    assert_eq!(
        values.counter(CLIENT_TLS_HANDSHAKES, &denied),
        1,
        "{sets:?}"
    );
    assert_eq!(
        values.counter(SERVER_TLS_HANDSHAKES, &[(HANDSHAKE_RESULT, "success")]),
        0
    );
}

fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn identity_expiry_gauge_follows_rotation_and_rotations_are_counted() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let now = OffsetDateTime::now_utc();
    let short = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
        .valid_between(now - Duration::minutes(1), now + Duration::hours(1));
    let long = LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap())
        .valid_between(now - Duration::minutes(1), now + Duration::hours(5));
    let (first, second) = (issued(&pki.int, &short), issued(&pki.int, &long));
    let (first_end, second_end) = (unix(first.not_after()), unix(second.not_after()));
    let labels = [(CERT_KIND, "identity"), (CERT_NAME, CLIENT_ID)];

    let handle = rec.run(|| IdentityHandle::new(first));
    let values = rec.take();
    assert_eq!(values.gauge(CERT_EXPIRATION, &labels), Some(first_end));
    assert_eq!(
        values.counter(ROTATIONS, &[(ROTATION_KIND, "identity")]),
        0,
        "the first identity is not a rotation"
    );

    rec.run(|| handle.rotate(second));
    let values = rec.take();
    assert_eq!(values.gauge(CERT_EXPIRATION, &labels), Some(second_end));
    assert_eq!(values.counter(ROTATIONS, &[(ROTATION_KIND, "identity")]), 1);
}

#[test]
fn each_trust_anchor_has_an_expiry_gauge_and_bundle_rotations_are_counted() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let trust = rec.run(|| TrustHandle::new(pki.spiffe_bundle()));
    let values = rec.take();
    let anchors: Vec<_> = values
        .label_sets(CERT_EXPIRATION)
        .into_iter()
        .map(|labels| {
            let get = |k: &str| labels.iter().find(|(key, _)| key == k).unwrap().1.clone();
            (get(TRUST_DOMAIN), get(CERT_NAME), get(CERT_KIND))
        })
        .collect();
    assert_eq!(anchors.len(), 2, "{anchors:?}");
    for (domain, ca) in [("example.org", &pki.root), ("other.org", &pki.other)] {
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        let subject = cert.subject().to_string();
        let not_after = cert.validity().not_after.timestamp() as f64;
        assert!(anchors.contains(&(domain.to_owned(), subject.clone(), "trust_anchor".into())));
        assert_eq!(
            values.gauge(
                CERT_EXPIRATION,
                &[
                    (CERT_KIND, "trust_anchor"),
                    (CERT_NAME, &subject),
                    (TRUST_DOMAIN, domain)
                ]
            ),
            Some(not_after)
        );
    }
    rec.run(|| trust.rotate(pki.spiffe_bundle()));
    rec.run(|| trust.rotate(pki.spiffe_bundle()));
    assert_eq!(
        rec.take()
            .counter(ROTATIONS, &[(ROTATION_KIND, "trust_bundle")]),
        2
    );
}

#[test]
fn file_sources_count_a_reload_as_a_rotation() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |id: &str| {
        let leaf = pki
            .int
            .issue(&LeafParams::svid(SpiffeId::new(id).unwrap()))
            .unwrap();
        std::fs::write(&cert, leaf.chain_pem()).unwrap();
        std::fs::write(&key, leaf.key_pem()).unwrap();
    };
    write(CLIENT_ID);
    let rec = Recorded::new();
    let source = rec
        .run(|| mtls_core::FileIdentitySource::open(&cert, &key))
        .unwrap();
    write(CLIENT_ID);
    assert!(rec.run(|| source.reload()).unwrap());
    // Unchanged files are not a rotation.
    assert!(!rec.run(|| source.reload()).unwrap());
    let values = rec.take();
    assert_eq!(values.counter(ROTATIONS, &[(ROTATION_KIND, "identity")]), 1);
    assert!(
        values
            .gauge(
                CERT_EXPIRATION,
                &[(CERT_KIND, "identity"), (CERT_NAME, CLIENT_ID)]
            )
            .is_some()
    );
}
