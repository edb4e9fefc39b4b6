//! BalancedChannel over a user's connector (`balance::Connector`, any `Service<Uri>`): plain
//! TCP to a plain (h2c) tonic server, and a connector's error in the call's explanation.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use mtls_tonic::balance::BalancedChannel;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A plain-text gRPC health server on loopback, stopped by dropping the sender.
async fn plain_health_server() -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    (addr, stop, task)
}

#[tokio::test]
async fn a_plain_tcp_connector_reaches_an_h2c_server() {
    let (addr, stop, server) = plain_health_server().await;
    let dialed = Arc::new(Mutex::new(Vec::<http::Uri>::new()));
    let seen = dialed.clone();
    let plain = tower::service_fn(move |uri: http::Uri| {
        seen.lock().unwrap().push(uri.clone());
        async move {
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            tokio::net::TcpStream::connect(authority)
                .await
                .map(TokioIo::new)
        }
    });
    let channel = BalancedChannel::builder(addr.to_string(), plain)
        .ready_timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("a health check over the plain connector");
    assert_eq!(
        response.into_inner().status(),
        ServingStatus::Serving,
        "expected SERVING from the h2c server"
    );
    let dialed: Vec<String> = dialed
        .lock()
        .unwrap()
        .iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(
        dialed,
        [format!("http://{addr}/")],
        "expected one dial of the endpoint through our connector"
    );

    drop(channel);
    drop(stop);
    server.await.unwrap();
}

#[tokio::test]
async fn a_connector_error_is_named_in_the_calls_failure() {
    let refusing = tower::service_fn(|_: http::Uri| async {
        Err::<TokioIo<tokio::net::TcpStream>, _>(std::io::Error::other(
            "no route in this test's overlay",
        ))
    });
    // A loopback address nobody dials: the connector refuses before any socket is opened.
    let channel = BalancedChannel::builder("127.0.0.1:9", refusing)
        .ready_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("expected the call to fail: the only endpoint's connector refuses");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no route in this test's overlay"),
        "expected the connector's error in the explanation, saw {:?}",
        status.message()
    );
}
