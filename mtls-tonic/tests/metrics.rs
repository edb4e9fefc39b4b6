//! Issue 15: what a real MtlsIncoming server and MtlsConnector record, read back through
//! `metrics-util`'s `DebuggingRecorder` (server, clients and handshake tasks all on one
//! current-thread runtime, so every task records into the test's recorder).
#![cfg(feature = "metrics")]
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mtls-core/tests/support/metrics.rs"]
mod recorded;
mod support;

use std::time::Duration;

use mtls_core::Authorize;
use mtls_core::metrics::{CLIENT_TLS_HANDSHAKES, HANDSHAKE_RESULT, SERVER_TLS_HANDSHAKES};
use mtls_tonic::MtlsConnector;
use recorded::{Recorded, Values};
use support::pki::{CLIENT_ID, Pki, SERVICE_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

fn server(values: &Values, result: &str) -> u64 {
    values.counter(SERVER_TLS_HANDSHAKES, &[(HANDSHAKE_RESULT, result)])
}

/// Tries a handshake and one read, as a client that will be refused does.
async fn attempt(connector: &MtlsConnector, addr: std::net::SocketAddr) {
    if let Ok(mut tls) = connector.connect(addr, None).await {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
    }
}

#[test]
fn server_counts_each_refused_handshake_by_reason_and_exactly_per_attempt() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Only CLIENT_ID may connect.
        let policy = Authorize::exact(CLIENT_ID.parse().unwrap());
        let server_task = support::serve_probe(listener, pki.server_config(policy));

        // Three intruders with a certificate from an untrusted CA.
        let intruder = MtlsConnector::new(pki.intruder_client_config())
            .server_name(SERVICE_NAME)
            .unwrap();
        for _ in 0..3 {
            attempt(&intruder, addr).await;
        }
        // Two members of the trust domain that the server's authorizer does not admit.
        let outsider =
            MtlsConnector::new(pki.client_config("spiffe://example.org/ns/default/sa/other"))
                .server_name(SERVICE_NAME)
                .unwrap();
        for _ in 0..2 {
            attempt(&outsider, addr).await;
        }
        // One peer that does not speak TLS.
        let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await;
        // And the one client that is allowed, making a call.
        support::health_check_as(pki.client_config(CLIENT_ID), addr).await;
        let values = rec
            .take_until(LIMIT, |v| v.counter_total(SERVER_TLS_HANDSHAKES) >= 7)
            .await;
        server_task.abort();
        values
    });
    let sets = values.label_sets(SERVER_TLS_HANDSHAKES);
    assert_eq!(server(&values, "unknown_ca"), 3, "{sets:?}");
    assert_eq!(server(&values, "authorizer_denied"), 2, "{sets:?}");
    assert_eq!(server(&values, "other"), 1, "{sets:?}");
    assert_eq!(server(&values, "success"), 1, "{sets:?}");
    assert_eq!(values.counter_total(SERVER_TLS_HANDSHAKES), 7, "{sets:?}");
    // TLS 1.3: a client finishes its side before the server has checked its certificate,
    // so every client here counts a completed handshake (as gRPC's clients do).
    assert_eq!(
        values.counter(CLIENT_TLS_HANDSHAKES, &[(HANDSHAKE_RESULT, "success")]),
        6,
        "{:?}",
        values.label_sets(CLIENT_TLS_HANDSHAKES)
    );
}

#[test]
fn client_counts_a_server_it_refuses() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = support::serve_probe(listener, pki.server_config(Pki::member_policy()));
        // A client that wants another server identity than the one presented.
        let config = mtls_core::ClientConfigBuilder::new(pki.identity(CLIENT_ID, &[]), pki.trust())
            .authorize(Authorize::exact(
                "spiffe://example.org/ns/default/sa/billing"
                    .parse()
                    .unwrap(),
            ))
            .build()
            .unwrap();
        let picky = MtlsConnector::new(config)
            .server_name(SERVICE_NAME)
            .unwrap();
        assert!(picky.connect(addr, None).await.is_err());
        let values = rec
            .take_until(LIMIT, |v| v.counter_total(SERVER_TLS_HANDSHAKES) >= 1)
            .await;
        server_task.abort();
        values
    });
    assert_eq!(
        values.counter(
            CLIENT_TLS_HANDSHAKES,
            &[(HANDSHAKE_RESULT, "authorizer_denied")]
        ),
        1,
        "{:?}",
        values.label_sets(CLIENT_TLS_HANDSHAKES)
    );
    assert_eq!(
        server(&values, "peer_rejected"),
        1,
        "{:?}",
        values.label_sets(SERVER_TLS_HANDSHAKES)
    );
}
