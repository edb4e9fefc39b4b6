//! MtlsIncoming: failed handshakes are logged with their reason and do not stop the server.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mtls_tonic::client::MtlsConnector;
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
    let server = support::serve_probe(listener, pki.server_config(Pki::member_policy()));

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

/// Answers `check` with what tonic's own accessors say about the call's connection:
/// `x-remote`, `x-local`, and `x-certs` (how many certificates tonic's TLS connect info
/// holds, and whether the first is the leaf of `peer_identity()`).
struct Accessors;

/// tonic's `TlsConnectInfo<TcpConnectInfo>`, what `Request::peer_certs()` reads (named
/// through the impl that makes it: tonic exports the type only with its TLS features on).
type TonicTlsInfo = <tokio_rustls::server::TlsStream<tokio::net::TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Accessors {
    async fn check(
        &self,
        request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        use mtls_tonic::PeerIdentityExt;
        let remote = request
            .remote_addr()
            .map_or("none".into(), |a| a.to_string());
        let local = request
            .local_addr()
            .map_or("none".into(), |a| a.to_string());
        let certs = match request.extensions().get::<TonicTlsInfo>() {
            Some(tls) => {
                let certs = tls.peer_certs().unwrap_or_default();
                let leaf = request.peer_identity().map(|p| p.chain()[0].clone());
                format!("{} leaf={}", certs.len(), certs.first().cloned() == leaf)
            }
            None => "none".into(),
        };
        let mut response =
            tonic::Response::new(tonic_health::pb::HealthCheckResponse { status: 1 });
        for (key, value) in [("x-remote", remote), ("x-local", local), ("x-certs", certs)] {
            response.metadata_mut().insert(key, value.parse().unwrap());
        }
        Ok(response)
    }

    type WatchStream = tonic_health::server::WatchStream;

    async fn watch(
        &self,
        _request: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

/// tonic's `Request::remote_addr()` / `local_addr()` (and the TLS connect info behind
/// `peer_certs()`) answer over MtlsIncoming with the real addresses: a client bound to
/// 127.0.0.5 calling a server on 127.0.0.2, with a server from `ServerOptions::server()`
/// and with a plain tonic builder plus `TonicConnectInfoLayer`.
#[tokio::test]
async fn tonic_accessors_name_both_addresses_over_mtls_incoming() {
    let pki = Pki::new();
    for with_options in [true, false] {
        let options = mtls_tonic::server::ServerOptions::default();
        let (addr, incoming) = support::member_incoming(&pki, "127.0.0.2", &options);
        let service = tonic_health::pb::health_server::HealthServer::new(Accessors);
        let server = if with_options {
            tokio::spawn(
                options
                    .server()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            )
        } else {
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(mtls_tonic::server::TonicConnectInfoLayer)
                    .add_service(service)
                    .serve_with_incoming(incoming),
            )
        };

        let connector = MtlsConnector::new(pki.client_config(CLIENT_ID))
            .server_name(SERVICE_NAME)
            .unwrap()
            .local_address(Some("127.0.0.5".parse().unwrap()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        for _ in 0..2 {
            let response = client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
            let meta = |key: &str| support::meta(&response, key);
            let remote: std::net::SocketAddr = meta("x-remote").parse().unwrap();
            assert_eq!(remote.ip().to_string(), "127.0.0.5", "{with_options}");
            assert_ne!(remote.port(), 0);
            assert_eq!(meta("x-local"), addr.to_string(), "{with_options}");
            // The client's chain (leaf + the issuing root is not sent: leaf only).
            assert_eq!(meta("x-certs"), "1 leaf=true", "{with_options}");
        }
        server.abort();
    }
}
