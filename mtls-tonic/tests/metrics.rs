//! Issue 15: what a real MtlsIncoming server and MtlsConnector record, read back through
//! `metrics-util`'s `DebuggingRecorder` (server, clients and handshake tasks all on one
//! current-thread runtime, so every task records into the test's recorder).
#![cfg(all(feature = "metrics", feature = "balance"))]
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mtls-core/tests/support/metrics.rs"]
mod recorded;
mod support;

use std::time::Duration;

use mtls_core::Authorize;
use mtls_core::metrics::{CLIENT_TLS_HANDSHAKES, HANDSHAKE_RESULT, SERVER_TLS_HANDSHAKES};
use mtls_tonic::metrics::{
    AUTHZ_ALLOWED, AUTHZ_DENIED, BALANCER_ENDPOINTS, CALL_RETRIES, CALL_TRANSPARENT_RETRIES,
    CLIENT_ATTEMPT_DURATION, CLIENT_ATTEMPT_STARTED, CLIENT_CALL_DURATION,
    CONNECTION_ATTEMPTS_FAILED, CONNECTION_ATTEMPTS_SUCCEEDED, CallMetricsLayer, DISCONNECT_ERROR,
    DISCONNECTIONS, DNS_RESOLUTIONS, ENDPOINT_STATE, METHOD, RESULT, SERVER_CALL_DURATION,
    SERVER_CALL_STARTED, STATUS, TARGET,
};
use mtls_tonic::{
    authz::{AuthzLayer, MethodPolicy},
    balance::BalancedChannel,
    client::MtlsConnector,
};
use recorded::{Recorded, Values};
use support::fixture::{Fixture, call, ip, ready_count};
use support::pki::{CLIENT_ID, Pki, SERVICE_NAME};
use support::wait_until;
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

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// A health call to `path` (Check or Watch) as `client`: its status code.
async fn health_call(
    client: rustls::ClientConfig,
    addr: std::net::SocketAddr,
    watch: bool,
) -> tonic::Code {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(support::mtls_channel(client, addr).await);
    let result = if watch {
        health
            .watch(HealthCheckRequest::default())
            .await
            .map(|_| ())
    } else {
        health
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    };
    result.err().map_or(tonic::Code::Ok, |s| s.code())
}

/// A loopback listener admitting members of `pki`'s trust domain: its address and the mTLS
/// incoming stream.
async fn member_listener(pki: &Pki) -> (std::net::SocketAddr, mtls_tonic::server::MtlsIncoming) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming =
        mtls_tonic::server::MtlsIncoming::new(listener, pki.server_config(Pki::member_policy()));
    (addr, incoming)
}

/// [`member_listener`] for a hand-made server: the bound listener, its address and a TLS
/// acceptor admitting members of `pki`'s trust domain.
async fn member_acceptor(
    pki: &Pki,
) -> (
    tokio::net::TcpListener,
    std::net::SocketAddr,
    tokio_rustls::TlsAcceptor,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
        pki.server_config(Pki::member_policy()),
    ));
    (listener, addr, acceptor)
}

/// Only CLIENT_ID may call Check; every other caller and path is denied.
fn only_client_checks() -> MethodPolicy {
    MethodPolicy::deny_by_default()
        .allow(CHECK, Authorize::exact(CLIENT_ID.parse().unwrap()))
        .unwrap()
}

#[test]
fn authorization_counts_allowed_and_denied_by_method_and_unnamed_methods_as_other() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        // TLS admits the trust domain; the method policy lets only CLIENT_ID call Check.
        let (addr, incoming) = member_listener(&pki).await;
        let policy = only_client_checks();
        let (_reporter, service) = support::replica::probe("solo");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(AuthzLayer::new(policy))
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        let outsider = "spiffe://example.org/ns/default/sa/other";
        for _ in 0..2 {
            assert_eq!(
                health_call(pki.client_config(CLIENT_ID), addr, false).await,
                tonic::Code::Ok
            );
        }
        for _ in 0..3 {
            assert_eq!(
                health_call(pki.client_config(outsider), addr, false).await,
                tonic::Code::PermissionDenied
            );
        }
        // Watch is named by no pattern: denied, and counted as `other`.
        assert_eq!(
            health_call(pki.client_config(CLIENT_ID), addr, true).await,
            tonic::Code::PermissionDenied
        );
        let values = rec.take();
        server.abort();
        values
    });
    let sets = values.label_sets(AUTHZ_DENIED);
    assert_eq!(values.counter(AUTHZ_ALLOWED, &[(METHOD, CHECK)]), 2);
    assert_eq!(
        values.counter(AUTHZ_DENIED, &[(METHOD, CHECK)]),
        3,
        "{sets:?}"
    );
    assert_eq!(
        values.counter(AUTHZ_DENIED, &[(METHOD, "other")]),
        1,
        "{sets:?}"
    );
    assert_eq!(values.counter_total(AUTHZ_DENIED), 4, "{sets:?}");
}

#[test]
fn balanced_channel_counts_connections_goaway_and_errors_retries_and_dns() {
    let rec = Recorded::new();
    let (values, retried) = rec.block_on(async {
        let mut fx = Fixture::start(2, 2).await;
        let channel = fx.retrying_builder().build().unwrap();
        assert!(
            wait_until(LIMIT, || ready_count(&channel) == 2).await,
            "{channel:?}"
        );
        // Two endpoints, both ready (a gauge: what take() returns is its current value).
        let now = rec.take();
        let endpoints = |state: &str| {
            now.label_sets(BALANCER_ENDPOINTS)
                .iter()
                .filter(|l| l.iter().any(|(k, v)| k == ENDPOINT_STATE && v == state))
                .map(|l| {
                    let labels: Vec<(&str, &str)> =
                        l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    now.gauge(BALANCER_ENDPOINTS, &labels).unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        assert_eq!(
            endpoints("ready"),
            2.0,
            "{:?}",
            now.label_sets(BALANCER_ENDPOINTS)
        );
        assert_eq!(endpoints("connecting"), 0.0);
        // Replica .2 answers UNAVAILABLE: each call it gets is retried once, on .3.
        let failing = &fx.replicas[&ip(2)];
        failing.answer_with(tonic::Code::Unavailable);
        let before = failing.checks();
        for _ in 0..8 {
            call(&channel, "").await.unwrap();
        }
        let retried = fx.replicas[&ip(2)].checks() - before;
        fx.replicas[&ip(2)].answer_with(tonic::Code::Ok);
        // .2 shuts down gracefully (GOAWAY), .3 is killed (its connections close, with or
        // without a GOAWAY depending on which task the runtime drops first); the
        // reconnections find no listener and fail. The reset without a GOAWAY is the next
        // test's.
        fx.replicas.get_mut(&ip(2)).unwrap().shutdown_gracefully();
        fx.replicas.get_mut(&ip(3)).unwrap().kill();
        // The DNS server goes away: the next look-ups fail.
        fx.dns.stop().await;
        let mut values = now;
        let later = rec
            .take_until(LIMIT, |v| {
                v.counter_total(DISCONNECTIONS) >= 2
                    && v.counter_total(CONNECTION_ATTEMPTS_FAILED) >= 2
                    && v.label_sets(DNS_RESOLUTIONS)
                        .iter()
                        .any(|l| l.iter().any(|(k, v)| k == RESULT && v == "failed"))
            })
            .await;
        values.merge(later);
        drop(channel);
        (values, retried)
    });
    let sets = values.label_sets(CONNECTION_ATTEMPTS_SUCCEEDED);
    assert_eq!(sets.len(), 1, "one target: {sets:?}");
    let target = sets[0]
        .iter()
        .find(|(k, _)| k == TARGET)
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(target.contains("bookstore.test"), "{target}");
    let t = target.as_str();
    assert_eq!(
        values.counter(CONNECTION_ATTEMPTS_SUCCEEDED, &[(TARGET, t)]),
        2
    );
    assert!(values.counter(CONNECTION_ATTEMPTS_FAILED, &[(TARGET, t)]) >= 2);
    let disconnections = values.label_sets(DISCONNECTIONS);
    assert!(
        values.counter(DISCONNECTIONS, &[(TARGET, t), (DISCONNECT_ERROR, "GOAWAY")]) >= 1,
        "{disconnections:?}"
    );
    assert_eq!(
        values.counter_total(DISCONNECTIONS),
        2,
        "{disconnections:?}"
    );
    // One histogram sample per retried call, each one retry.
    assert!(
        retried >= 1,
        "round robin sent some calls to the failing replica"
    );
    let samples = values.histogram(CALL_RETRIES, &[(TARGET, t)]);
    assert_eq!(samples.len() as u64, retried, "{samples:?}");
    assert!(samples.iter().all(|&n| n == 1.0), "{samples:?}");
    let dns = |result: &str| values.counter(DNS_RESOLUTIONS, &[(TARGET, t), (RESULT, result)]);
    assert!(dns("found") >= 1);
    assert!(dns("failed") >= 1);
}

#[test]
fn a_connection_reset_without_goaway_counts_as_an_error_disconnection() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        // A real HTTP/2 server (the h2 crate) over mTLS that, once the client is connected,
        // resets the TCP connection (SO_LINGER 0) without a GOAWAY.
        let (listener, addr, acceptor) = member_acceptor(&pki).await;
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            // RST on close; blocking on drop is what linger 0 never does.
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut h2 = h2::server::handshake(tls).await.unwrap();
            tokio::select! {
                _ = h2.accept() => {}
                _ = reset_rx => {}
            }
            // Dropping the h2 connection writes nothing (no GOAWAY, no TLS close_notify:
            // both need an async write): the socket closes with RST (linger 0). The
            // listener goes too, so the reconnection is refused.
            drop(h2);
            drop(listener);
        });
        let connector = MtlsConnector::new(pki.client_config(CLIENT_ID))
            .server_name(SERVICE_NAME)
            .unwrap();
        let channel = mtls_tonic::balance::BalancedChannel::builder(addr.to_string(), connector)
            .build()
            .unwrap();
        assert!(
            wait_until(LIMIT, || ready_count(&channel) == 1).await,
            "{channel:?}"
        );
        reset_tx.send(()).unwrap();
        let values = rec
            .take_until(LIMIT, |v| v.counter_total(DISCONNECTIONS) >= 1)
            .await;
        server.abort();
        drop(channel);
        values
    });
    let sets = values.label_sets(DISCONNECTIONS);
    assert_eq!(values.counter_total(DISCONNECTIONS), 1, "{sets:?}");
    assert!(
        sets.iter().all(|l| l
            .iter()
            .any(|(k, v)| k == DISCONNECT_ERROR && v != "GOAWAY")),
        "{sets:?}"
    );
    assert_eq!(values.counter_total(CONNECTION_ATTEMPTS_SUCCEEDED), 1);
}

/// A balanced channel to one address with `client`'s identity.
fn channel_to(client: rustls::ClientConfig, addr: std::net::SocketAddr) -> BalancedChannel {
    let connector = MtlsConnector::new(client)
        .server_name(SERVICE_NAME)
        .unwrap();
    BalancedChannel::builder(addr.to_string(), connector)
        .build()
        .unwrap()
}

/// One Check through `channel` for `service` ("slow:<ms>" makes the probe wait): its code.
async fn check(channel: &BalancedChannel, service: &str) -> tonic::Code {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match HealthClient::new(channel.clone()).check(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// A unary call to `path` with an empty message, read to its end: the status it ended with.
async fn raw_call(channel: &BalancedChannel, path: &str) -> Option<String> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{SERVICE_NAME}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(&[0, 0, 0, 0, 0]),
        )))
        .unwrap();
    let response = channel.clone().oneshot(request).await.unwrap();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or(headers);
    trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The one `grpc.target` label recorded for `name`.
fn target_of(values: &Values, name: &str) -> String {
    let targets: std::collections::BTreeSet<String> = values
        .label_sets(name)
        .iter()
        .flat_map(|l| {
            l.iter()
                .filter(|(k, _)| k == TARGET)
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(targets.len(), 1, "{:?}", values.label_sets(name));
    targets.into_iter().next().unwrap()
}

#[test]
fn per_call_metrics_record_each_calls_final_status_on_client_and_server() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        let (addr, incoming) = member_listener(&pki).await;
        // Only CLIENT_ID may call Check; every other path is denied.
        let policy = only_client_checks();
        let fail_with = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let (_reporter, service) =
            support::replica::probe_failing("solo", fail_with.clone(), Default::default());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(
                    CallMetricsLayer::new()
                        .service("grpc.health.v1.Health")
                        .label("replica", "solo"),
                )
                .layer(AuthzLayer::new(policy))
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        let client = channel_to(pki.client_config(CLIENT_ID), addr);
        for _ in 0..2 {
            assert_eq!(check(&client, "").await, tonic::Code::Ok);
        }
        // A handler error: the status is in a trailers-only response's headers.
        fail_with.store(
            tonic::Code::NotFound as i32,
            std::sync::atomic::Ordering::Relaxed,
        );
        assert_eq!(check(&client, "").await, tonic::Code::NotFound);
        fail_with.store(0, std::sync::atomic::Ordering::Relaxed);
        // An authorization denial (another member of the trust domain).
        let outsider = channel_to(
            pki.client_config("spiffe://example.org/ns/default/sa/other"),
            addr,
        );
        assert_eq!(check(&outsider, "").await, tonic::Code::PermissionDenied);
        // A path the server does not serve: the client names it, the server says `other`.
        assert_eq!(
            raw_call(&client, "/made.Up/Call").await.as_deref(),
            Some("7")
        );
        // A call the caller gives up on: CANCELLED on both sides.
        let slow = tokio::time::timeout(Duration::from_millis(300), check(&client, "slow:3000"));
        assert!(slow.await.is_err(), "the slow call was cut short");
        let values = rec
            .take_until(LIMIT, |v| {
                v.histogram(
                    SERVER_CALL_DURATION,
                    &[(METHOD, CHECK), ("replica", "solo"), (STATUS, "CANCELLED")],
                )
                .len()
                    == 1
            })
            .await;
        server.abort();
        values
    });
    let server_sets = values.label_sets(SERVER_CALL_DURATION);
    let served = |method: &str, status: &str| {
        // The server's constant label (CallMetricsLayer::label) is on every series.
        values.histogram(
            SERVER_CALL_DURATION,
            &[(METHOD, method), ("replica", "solo"), (STATUS, status)],
        )
    };
    assert_eq!(served(CHECK, "OK").len(), 2, "{server_sets:?}");
    assert_eq!(served(CHECK, "NOT_FOUND").len(), 1, "{server_sets:?}");
    assert_eq!(
        served(CHECK, "PERMISSION_DENIED").len(),
        1,
        "{server_sets:?}"
    );
    assert_eq!(
        served("other", "PERMISSION_DENIED").len(),
        1,
        "{server_sets:?}"
    );
    assert_eq!(served(CHECK, "CANCELLED").len(), 1, "{server_sets:?}");
    assert_eq!(server_sets.len(), 5, "nothing else: {server_sets:?}");
    assert!(
        served(CHECK, "CANCELLED")[0] >= 0.3,
        "{:?}",
        served(CHECK, "CANCELLED")
    );
    let started = |method| {
        values.counter(
            SERVER_CALL_STARTED,
            &[(METHOD, method), ("replica", "solo")],
        )
    };
    assert_eq!(started(CHECK), 5);
    assert_eq!(started("other"), 1);

    let target = target_of(&values, CLIENT_CALL_DURATION);
    let t = target.as_str();
    assert_eq!(t, target_of(&values, CLIENT_ATTEMPT_DURATION));
    assert!(t.starts_with("127.0.0.1:"), "{t}");
    for name in [CLIENT_CALL_DURATION, CLIENT_ATTEMPT_DURATION] {
        let sets = values.label_sets(name);
        let called = |method: &str, status: &str| {
            values
                .histogram(name, &[(METHOD, method), (TARGET, t), (STATUS, status)])
                .len()
        };
        assert_eq!(called(CHECK, "OK"), 2, "{name}: {sets:?}");
        assert_eq!(called(CHECK, "NOT_FOUND"), 1, "{name}: {sets:?}");
        assert_eq!(called(CHECK, "PERMISSION_DENIED"), 1, "{name}: {sets:?}");
        assert_eq!(
            called("/made.Up/Call", "PERMISSION_DENIED"),
            1,
            "{name}: {sets:?}"
        );
        assert_eq!(called(CHECK, "CANCELLED"), 1, "{name}: {sets:?}");
        assert_eq!(sets.len(), 5, "{name}: nothing else: {sets:?}");
        let cancelled =
            values.histogram(name, &[(METHOD, CHECK), (TARGET, t), (STATUS, "CANCELLED")]);
        assert!((0.3..3.0).contains(&cancelled[0]), "{name}: {cancelled:?}");
    }
    assert_eq!(
        values.counter(CLIENT_ATTEMPT_STARTED, &[(METHOD, CHECK), (TARGET, t)]),
        5
    );
}

#[test]
fn a_refused_stream_is_retried_transparently_and_counted() {
    let pki = Pki::new();
    let rec = Recorded::new();
    let values = rec.block_on(async {
        // A real HTTP/2 server (the h2 crate) over mTLS that refuses the first stream
        // (RST_STREAM REFUSED_STREAM before any response: gRFC A6's transparent case) and
        // answers the next ones SERVING.
        let (listener, addr, acceptor) = member_acceptor(&pki).await;
        let streams = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = streams.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut h2 = h2::server::handshake(tls).await.unwrap();
            while let Some(Ok((_request, mut respond))) = h2.accept().await {
                if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let head = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(head, false).unwrap();
                // HealthCheckResponse { status: SERVING } in a gRPC message frame.
                send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]), false)
                    .unwrap();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                send.send_trailers(trailers).unwrap();
            }
        });
        let client = channel_to(pki.client_config(CLIENT_ID), addr);
        assert!(
            wait_until(LIMIT, || ready_count(&client) == 1).await,
            "{client:?}"
        );
        assert_eq!(
            check(&client, "").await,
            tonic::Code::Ok,
            "the caller saw no failure"
        );
        assert_eq!(streams.load(std::sync::atomic::Ordering::Relaxed), 2);
        let values = rec.take();
        drop(client);
        server.abort();
        values
    });
    let t = target_of(&values, CLIENT_CALL_DURATION);
    let t = t.as_str();
    assert_eq!(
        values.histogram(CALL_TRANSPARENT_RETRIES, &[(TARGET, t)]),
        vec![1.0],
        "{:?}",
        values.label_sets(CALL_TRANSPARENT_RETRIES)
    );
    assert!(
        values.label_sets(CALL_RETRIES).is_empty(),
        "no retry by policy"
    );
    // Two attempts (the refused one UNAVAILABLE), one call (OK).
    let attempts = |status: &str| {
        values
            .histogram(
                CLIENT_ATTEMPT_DURATION,
                &[(METHOD, CHECK), (TARGET, t), (STATUS, status)],
            )
            .len()
    };
    assert_eq!(
        attempts("UNAVAILABLE"),
        1,
        "{:?}",
        values.label_sets(CLIENT_ATTEMPT_DURATION)
    );
    assert_eq!(attempts("OK"), 1);
    assert_eq!(
        values.counter(CLIENT_ATTEMPT_STARTED, &[(METHOD, CHECK), (TARGET, t)]),
        2
    );
    assert_eq!(
        values
            .histogram(
                CLIENT_CALL_DURATION,
                &[(METHOD, CHECK), (TARGET, t), (STATUS, "OK")]
            )
            .len(),
        1,
        "{:?}",
        values.label_sets(CLIENT_CALL_DURATION)
    );
}
