//! Shared test fixtures: test PKI, an in-process DNS server (hickory-server) whose records
//! change at run time, and tonic replicas on 127.0.0.2.. sharing one port.
// Test fixtures may panic on a broken fixture: that is a failed test, not a library bug.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#![allow(unused_imports)] // the shared helpers re-exported here: each test uses a part

pub mod dns;
pub mod fixture;
pub mod pki;
pub mod replica;

/// Logs for failing tests: `RUST_LOG=mtls_tonic=debug cargo test`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The log lines written under [`CapturedLogs::warnings`]' thread-local subscriber.
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures WARN and ERROR lines (no colours) of this thread until the guard drops: run
    /// the server on a current_thread runtime so its tasks log here too.
    pub fn warnings() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Callsites first hit by another test's thread (no capturing subscriber there) may
        // have cached an interest that leaves this subscriber out: re-evaluate them now.
        tracing::callsite::rebuild_interest_cache();
        (captured, guard)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Polling with a deadline, as every crate's tests do it.
pub use mtls_test_support::wait_until;

/// Serves the health probe on `addr`'s listener with `config` (on the caller's runtime).
pub fn serve_probe(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let incoming = mtls_tonic::server::MtlsIncoming::new(listener, config);
    let (_reporter, service) = replica::probe("solo");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    )
}

/// A tonic channel to `addr` through an [`MtlsConnector`](mtls_tonic::client::MtlsConnector)
/// with `client`, checking the server name `bookstore.test`.
pub async fn mtls_channel(
    client: rustls::ClientConfig,
    addr: std::net::SocketAddr,
) -> tonic::transport::Channel {
    let connector = mtls_tonic::client::MtlsConnector::new(client)
        .server_name(pki::SERVICE_NAME)
        .unwrap();
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap()
}

/// An mTLS incoming stream on a fresh port of `ip`, bound with `options` and admitting
/// members of `pki`'s trust domain: its address and the stream.
pub fn member_incoming(
    pki: &pki::Pki,
    ip: &str,
    options: &mtls_tonic::server::ServerOptions,
) -> (std::net::SocketAddr, mtls_tonic::server::MtlsIncoming) {
    let listener = options.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = pki.server_config(pki::Pki::member_policy());
    let incoming = mtls_tonic::server::MtlsIncoming::configured(listener, config, options.clone());
    (addr, incoming)
}

/// One health check as `client` against `addr` (server name `bookstore.test`); panics if
/// it fails.
pub async fn health_check_as(client: rustls::ClientConfig, addr: std::net::SocketAddr) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(mtls_channel(client, addr).await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}

/// The metadata value `key` of `response` (the test replicas name themselves in `x-replica`
/// and the caller's identity in `x-peer`); panics if it is missing or not text.
pub fn meta<T>(response: &tonic::Response<T>, key: &str) -> String {
    response
        .metadata()
        .get(key)
        .unwrap_or_else(|| panic!("expected metadata {key}, saw {:?}", response.metadata()))
        .to_str()
        .unwrap()
        .to_owned()
}
