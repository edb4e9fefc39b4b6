//! tonic parity of the balanced channel: which endpoint served a call (`ServedBy`), and
//! tonic `Endpoint`'s settings on the builder, each shown to take effect against real
//! replicas on loopback.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use mtls_tonic::{
    balance::{BalancedChannel, BalancedEndpoint, LoadPolicy, ServedBy},
    client::MtlsConnector,
    server::{MtlsIncoming, ServerOptions},
};
use support::{
    fixture::Fixture,
    meta,
    pki::{CLIENT_ID, Pki, SERVICE_NAME},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every response names the endpoint that served it, and it is the replica that answered
/// (the replica names itself in `x-replica`): 30 calls over 3 replicas, each seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_the_endpoint_that_served_it() {
    let fixture = Fixture::start(3, 3).await;
    let channel = fixture
        .builder()
        .load_policy(LoadPolicy::RoundRobin)
        .build()
        .unwrap();
    let mut client = HealthClient::new(channel.clone());
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let response = client.check(HealthCheckRequest::default()).await.unwrap();
        let replica = meta(&response, "x-replica");
        let ServedBy(addr) = *response.extensions().get::<ServedBy>().unwrap();
        assert_eq!(addr.ip().to_string(), replica);
        assert_eq!(addr.port(), fixture.port);
        *served.entry(replica).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "{served:?}");
}

/// `check` answers with what the call looked like on the server: `x-user-agent` and
/// `x-grpc-timeout` (the headers as received); service `slow:<ms>` answers after `<ms>`,
/// `count:<ms>` too, counted in [`IN_FLIGHT`] / [`MAX_IN_FLIGHT`] (one test uses them).
struct Echo;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Echo {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let (agent, timeout) = (header("user-agent"), header("grpc-timeout"));
        if let Some(ms) = request.get_ref().service.strip_prefix("slow:") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        if let Some(ms) = request.get_ref().service.strip_prefix("count:") {
            let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
        let mut response =
            tonic::Response::new(tonic_health::pb::HealthCheckResponse { status: 1 });
        response
            .metadata_mut()
            .insert("x-user-agent", agent.parse().unwrap());
        response
            .metadata_mut()
            .insert("x-grpc-timeout", timeout.parse().unwrap());
        Ok(response)
    }

    type WatchStream = tonic_health::server::WatchStream;

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

/// An [`Echo`] server on 127.0.0.2 (on this runtime) and a static-list channel builder to it.
async fn echo_server(
    pki: &Pki,
) -> (
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    mtls_tonic::balance::BalancedChannelBuilder,
) {
    let options = ServerOptions::default();
    let (addr, incoming) = support::member_incoming(pki, "127.0.0.2", &options);
    let server = tokio::spawn(
        options
            .server()
            .add_service(tonic_health::pb::health_server::HealthServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    let builder = BalancedChannel::static_list(
        format!("{SERVICE_NAME}:{}", addr.port()),
        [BalancedEndpoint::new(addr)],
        MtlsConnector::new(pki.client_config(CLIENT_ID)),
    )
    .ready_timeout(Duration::from_secs(5));
    (server, builder)
}

async fn echo(
    channel: &BalancedChannel,
    service: &str,
    timeout: Option<Duration>,
) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    HealthClient::new(channel.clone()).check(request).await
}

/// A `grpc-timeout` value as a duration.
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unit {other}"),
    }
}

/// `timeout`: a call without its own deadline gets the channel's (DEADLINE_EXCEEDED when
/// the server is slower, and the server is told it); a call's own shorter one wins.
#[tokio::test]
async fn the_default_timeout_bounds_calls_without_a_shorter_one() {
    let pki = Pki::new();
    let (server, builder) = echo_server(&pki).await;
    let channel = builder.timeout(Duration::from_millis(400)).build().unwrap();
    let fast = echo(&channel, "", None).await.unwrap();
    let sent = grpc_timeout(&meta(&fast, "x-grpc-timeout"));
    assert!(
        sent > Duration::from_millis(300) && sent <= Duration::from_millis(400),
        "{sent:?}"
    );
    // The call's own, shorter, deadline is kept; a longer one is cut to the channel's.
    let own = echo(&channel, "", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert!(
        grpc_timeout(&meta(&own, "x-grpc-timeout")) <= Duration::from_millis(100),
        "{own:?}"
    );
    let started = Instant::now();
    let slow = echo(&channel, "slow:3000", Some(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(slow.code(), tonic::Code::DeadlineExceeded, "{slow:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    // Without the setting, the slow call completes.
    let (server2, builder) = echo_server(&pki).await;
    let plain = builder.build().unwrap();
    let done = echo(&plain, "slow:600", None).await.unwrap();
    assert_eq!(meta(&done, "x-grpc-timeout"), "none");
    server.abort();
    server2.abort();
}

/// `user_agent`: the server sees the application's agent, then ours; by default ours alone.
#[tokio::test]
async fn the_user_agent_reaches_the_server() {
    let pki = Pki::new();
    let (server, builder) = echo_server(&pki).await;
    let ours = concat!("mtls-tonic/", env!("CARGO_PKG_VERSION"));
    let channel = builder
        .user_agent("bookstore-client/1.2")
        .unwrap()
        .build()
        .unwrap();
    let response = echo(&channel, "", None).await.unwrap();
    let agent = meta(&response, "x-user-agent");
    // tonic's generated client may add its own agent first; ours come last, in order.
    assert!(
        agent.ends_with(&format!("bookstore-client/1.2 {ours}")),
        "{agent}"
    );
    let (server2, builder) = echo_server(&pki).await;
    let default = builder.build().unwrap();
    let agent = meta(&echo(&default, "", None).await.unwrap(), "x-user-agent");
    assert!(
        agent.ends_with(ours) && !agent.contains("bookstore-client"),
        "{agent}"
    );
    let (server3, builder) = echo_server(&pki).await;
    assert!(matches!(
        builder.user_agent("bad\nagent"),
        Err(mtls_tonic::Error::InvalidUserAgent { .. })
    ));
    server.abort();
    server2.abort();
    server3.abort();
}

/// The first flight of HTTP/2 frames a client sends to a TLS server on `listener`:
/// SETTINGS values and the connection WINDOW_UPDATE increment (0 when none was sent).
async fn client_first_flight(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
) -> (HashMap<u16, u32>, u32) {
    use tokio::io::AsyncReadExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = acceptor.accept(tcp).await.unwrap();
    let mut preface = [0u8; 24];
    tls.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let (mut settings, mut window) = (HashMap::new(), 0);
    // Frames until the client waits for our SETTINGS (it sends its first flight at once).
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout(Duration::from_millis(500), tls.read_exact(&mut head));
        let Ok(Ok(_)) = read.await else { break };
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tls.read_exact(&mut payload).await.unwrap();
        match head[3] {
            0x4 if head[4] & 1 == 0 => {
                for entry in payload.chunks(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    settings.insert(id, value);
                }
            }
            0x8 if stream == 0 => {
                window = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
            }
            _ => {}
        }
    }
    (settings, window)
}

/// A change to a channel builder.
type Tune =
    fn(mtls_tonic::balance::BalancedChannelBuilder) -> mtls_tonic::balance::BalancedChannelBuilder;

/// The HTTP/2 windows and adaptive window reach the wire: what the client announces in
/// its SETTINGS (INITIAL_WINDOW_SIZE, id 4) and its connection WINDOW_UPDATE, by default
/// (hyper's, as tonic: 2 MiB / 5 MiB), set, and adaptive (the spec's 64 KiB, growing).
#[tokio::test]
async fn http2_windows_and_adaptive_window_reach_the_wire() {
    const SPEC: u32 = 65_535;
    let pki = Pki::new();
    let cases: [(&str, Tune, u32, u32); 3] = [
        ("default", |b| b, 2 << 20, 5 << 20),
        (
            "set",
            |b| {
                b.initial_stream_window_size(1_000_000)
                    .initial_connection_window_size(3_000_000)
            },
            1_000_000,
            3_000_000,
        ),
        (
            "adaptive",
            |b| {
                b.initial_stream_window_size(1_000_000)
                    .http2_adaptive_window(true)
            },
            SPEC,
            SPEC,
        ),
    ];
    for (name, tune, stream_window, connection_window) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(client_first_flight(
            listener,
            pki.server_config(Pki::member_policy()),
        ));
        let builder = BalancedChannel::static_list(
            format!("{SERVICE_NAME}:{}", addr.port()),
            [BalancedEndpoint::new(addr)],
            MtlsConnector::new(pki.client_config(CLIENT_ID)),
        );
        let channel = tune(builder).build().unwrap();
        let (settings, window) = server.await.unwrap();
        assert_eq!(
            settings.get(&4).copied().unwrap_or(SPEC),
            stream_window,
            "{name}: {settings:?}"
        );
        assert_eq!(
            window + SPEC,
            connection_window.max(SPEC),
            "{name}: {window}"
        );
        if connection_window == SPEC {
            assert_eq!(window, 0, "{name}");
        }
        drop(channel);
    }
}

/// `tcp_nodelay` / `tcp_keepalive` are set on the sockets the connector makes (the
/// balanced channel's builder sets them on its connector): read back from the socket.
#[tokio::test]
async fn tcp_nodelay_and_keepalive_are_set_on_the_socket() {
    let pki = Pki::new();
    let listener = ServerOptions::default()
        .bind("127.0.0.2:0".parse().unwrap())
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = MtlsIncoming::new(listener, pki.server_config(Pki::member_policy()));
    let server = tokio::spawn(
        ServerOptions::default()
            .server()
            .add_service(tonic_health::pb::health_server::HealthServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    let connector = || {
        MtlsConnector::new(pki.client_config(CLIENT_ID))
            .server_name(SERVICE_NAME)
            .unwrap()
    };
    let tls = connector().connect(addr, None).await.unwrap();
    let socket = socket2::SockRef::from(tls.get_ref().0);
    assert!(socket.tcp_nodelay().unwrap(), "default: on, as tonic");
    assert!(!socket.keepalive().unwrap(), "default: off, as tonic");
    let tls = connector()
        .tcp_nodelay(false)
        .tcp_keepalive(Some(Duration::from_secs(42)))
        .connect(addr, None)
        .await
        .unwrap();
    let socket = socket2::SockRef::from(tls.get_ref().0);
    assert!(!socket.tcp_nodelay().unwrap());
    assert!(socket.keepalive().unwrap());
    assert_eq!(
        socket.tcp_keepalive_time().unwrap(),
        Duration::from_secs(42)
    );
    server.abort();
}

/// `concurrency_limit`: 6 concurrent callers on clones of one channel limited to 2 are
/// never more than 2 in flight at the server (and take 3 rounds); without it all 6 are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_bounds_calls_in_flight() {
    let pki = Pki::new();
    for limit in [Some(2), None] {
        let (server, builder) = echo_server(&pki).await;
        let builder = match limit {
            Some(n) => builder.concurrency_limit(n),
            None => builder,
        };
        let channel = builder.build().unwrap();
        echo(&channel, "", None).await.unwrap(); // connected
        MAX_IN_FLIGHT.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let channel = channel.clone();
                tokio::spawn(async move { echo(&channel, "count:300", None).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let took = started.elapsed();
        let max = MAX_IN_FLIGHT.load(Ordering::SeqCst);
        match limit {
            Some(n) => {
                assert_eq!(max, n, "limit {n}");
                assert!(took >= Duration::from_millis(850), "{took:?}");
            }
            None => assert_eq!(max, 6, "no limit"),
        }
        server.abort();
    }
}

/// `rate_limit`: 2 calls per 400 ms make 6 calls take at least two more windows; without
/// it they are quick.
#[tokio::test]
async fn the_rate_limit_spaces_calls() {
    let pki = Pki::new();
    let (server, builder) = echo_server(&pki).await;
    let channel = builder
        .rate_limit(2, Duration::from_millis(400))
        .build()
        .unwrap();
    echo(&channel, "", None).await.unwrap(); // connected (1 of the first window)
    tokio::time::sleep(Duration::from_millis(450)).await;
    let started = Instant::now();
    for _ in 0..6 {
        echo(&channel, "", None).await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (server2, builder) = echo_server(&pki).await;
    let plain = builder.build().unwrap();
    echo(&plain, "", None).await.unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        echo(&plain, "", None).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    server.abort();
    server2.abort();
}

/// `connect_timeout`: a server that accepts TCP and never answers the TLS handshake fails
/// the attempt at the bound (the channel then fails calls fast, naming it), not at the
/// default 20 s.
#[tokio::test]
async fn the_connect_timeout_bounds_a_silent_server() {
    let pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds every connection, silent.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let channel = BalancedChannel::static_list(
        format!("{SERVICE_NAME}:{}", addr.port()),
        [BalancedEndpoint::new(addr)],
        MtlsConnector::new(pki.client_config(CLIENT_ID)),
    )
    .connect_timeout(Duration::from_millis(300))
    .ready_timeout(Duration::from_secs(10))
    .build()
    .unwrap();
    let started = Instant::now();
    let status = echo(&channel, "", None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("300ms"), "{}", status.message());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(channel);
    silent.abort();
}

/// The builder's `tcp_keepalive` reaches the channel's sockets: `ss` (iproute2) shows a
/// keepalive timer on the client's connection to the server, and none without it.
#[tokio::test]
async fn the_builders_tcp_keepalive_reaches_the_channels_socket() {
    let pki = Pki::new();
    for keepalive in [Some(Duration::from_secs(42)), None] {
        let (server, builder) = echo_server(&pki).await;
        let channel = builder.tcp_keepalive(keepalive).build().unwrap();
        echo(&channel, "", None).await.unwrap();
        let server_addr = channel.endpoints()[0].addr;
        let out = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established"])
            .arg(format!("dst {server_addr}"))
            .output()
            .expect("ss (iproute2) is needed by this test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "one connection: {text}");
        assert_eq!(
            text.contains("timer:(keepalive"),
            keepalive.is_some(),
            "{keepalive:?}: {text}"
        );
        drop(channel);
        server.abort();
    }
}
