//! MtlsIncoming: failed handshakes are logged with their reason and do not stop the server.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mtls_tonic::{MtlsConnector, MtlsIncoming};
use support::pki::{CLIENT_ID, Pki, SERVICE_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// current_thread: the accept loop and handshake tasks run on this thread, under the
// thread-local subscriber set below.
#[tokio::test]
async fn failed_handshakes_are_logged_with_reason_and_server_keeps_serving() {
    let (captured, _guard) = support::CapturedLogs::warnings();

    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = MtlsIncoming::new(listener, pki.server_config(Pki::member_policy()));
    let (_reporter, service) = support::replica::probe("solo");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );

    // 1. A client certificate from an untrusted CA.
    let intruder = MtlsConnector::new(pki.intruder_client_config())
        .server_name(SERVICE_NAME)
        .unwrap();
    if let Ok(mut tls) = intruder.connect(addr, None).await {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
    }
    // 2. Not TLS at all.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(2), garbage.read(&mut buf)).await;

    let logged = support::wait_until(Duration::from_secs(3), || {
        captured.text().matches("mTLS handshake failed").count() >= 2
    })
    .await;
    let text = captured.text();
    assert!(logged, "{text}");
    assert!(text.contains("remote=127.0.0.1:"), "{text}");
    // The intruder's rejection names mtls-core's reason (unknown issuer), not just "bad cert".
    assert!(text.to_lowercase().contains("issuer"), "{text}");

    // The server is still serving legitimate clients.
    support::health_check_as(pki.client_config(CLIENT_ID), addr).await;
    server.abort();
}
