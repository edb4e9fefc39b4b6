//! Every limit a server applies to a peer, in one place: the accept path (listen backlog,
//! handshake timeout, incomplete handshakes overall and per source IP) and HTTP/2 (streams,
//! headers, resets, windows, frames, keepalive, control-frame floods).

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpSocket};

/// The limits of an mTLS server: the accept path of [`MtlsIncoming`](crate::server::MtlsIncoming)
/// and the HTTP/2 settings of tonic's server ([`ServerOptions::apply`]).
///
/// Every limit is set on purpose, because an attacker is a user too — including an
/// authenticated peer whose workload was compromised. The defaults and why:
///
/// | limit | default | bounds |
/// |---|---|---|
/// | [`listen_backlog`](Self::listen_backlog) | 1024 | SYNs queued while the accept loop catches up (the kernel caps it at `net.core.somaxconn`) |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | TCP accept to finished TLS handshake, however slowly the peer sends (slowloris) |
/// | [`max_concurrent_handshakes`](Self::max_concurrent_handshakes) | 256 | incomplete handshakes held; when full, the *oldest* is shed and accepting never pauses |
/// | [`max_handshakes_per_ip`](Self::max_handshakes_per_ip) | 64 | incomplete handshakes of one source IP; a new one sheds that source's oldest, never another source's |
/// | [`handshake_rate_per_ip`](Self::handshake_rate_per_ip) | 200, +100/s | new connections of one source IP; over it, closed at once before any TLS work (a full-handshake flood costs an accept, not a signature) |
/// | [`max_concurrent_streams`](Self::max_concurrent_streams) | 100 | open streams per connection (tonic's default is unlimited); refused streams count as local resets |
/// | [`max_header_list_size`](Self::max_header_list_size) | 16 KiB | decoded request headers (h2 closes the connection at an abuse multiple of it: CONTINUATION floods) |
/// | [`max_pending_accept_reset_streams`](Self::max_pending_accept_reset_streams) | 20 | streams the client reset before the server accepted them (rapid reset, CVE-2023-44487) |
/// | [`max_local_error_reset_streams`](Self::max_local_error_reset_streams) | 1024 | streams the server had to reset for protocol errors or refusal (tonic's default is unlimited; CVE-2025-8671) |
/// | [`initial_stream_window_size`](Self::initial_stream_window_size) | 1 MiB | request bytes a stream may send before the service reads them |
/// | [`initial_connection_window_size`](Self::initial_connection_window_size) | 1 MiB | unread request bytes of all streams of a connection together |
/// | [`max_frame_size`](Self::max_frame_size) | 16 KiB | one frame the server must buffer whole |
/// | [`http2_keepalive`](Self::http2_keepalive) | 60 s / 20 s | a peer that stops reading (slow reader) or vanishes: no PING answer within the timeout closes the connection |
/// | [`control_frame_budget`](Self::control_frame_budget) | 1000, +1000/s | PING and SETTINGS frames a peer may send (h2 answers each); over budget: GOAWAY `ENHANCE_YOUR_CALM` |
///
/// Not reachable through tonic and left at h2's defaults: the send buffer per stream
/// (400 KiB, filled only as far as the peer's flow-control window allows), the cache of
/// reset streams (50 for 1 s) and the small-DATA-frame budget (`ENHANCE_YOUR_CALM` on
/// floods of tiny DATA frames). One connection thus holds at most about
/// `max_concurrent_streams` × (400 KiB + the service's message limit) however it behaves,
/// and a connection that stops reading is closed by the keepalive.
///
/// ```
/// use std::time::Duration;
/// let options = mtls_tonic::server::ServerOptions::default()
///     .handshake_timeout(Duration::from_secs(5))
///     .max_concurrent_handshakes(64)
///     .max_concurrent_streams(50);
/// assert_eq!(options.handshake_timeout_value(), Duration::from_secs(5));
/// // The HTTP/2 limits go onto tonic's server builder:
/// let _server = options.apply(tonic::transport::Server::builder());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    pub(crate) listen_backlog: u32,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_concurrent_handshakes: usize,
    pub(crate) max_handshakes_per_ip: usize,
    pub(crate) handshake_rate_per_ip: Option<(u32, u32)>,
    pub(crate) accepted_queue: usize,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_header_list_size: u32,
    pub(crate) max_pending_accept_reset_streams: usize,
    pub(crate) max_local_error_reset_streams: usize,
    pub(crate) initial_stream_window_size: u32,
    pub(crate) initial_connection_window_size: u32,
    pub(crate) max_frame_size: u32,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) control_frame_burst: u32,
    pub(crate) control_frames_per_second: u32,
    /// grpc-go's MaxConnectionAge (jittered per connection) and MaxConnectionAgeGrace.
    pub(crate) max_connection_age: Option<(Duration, Duration)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen_backlog: 1024,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            max_handshakes_per_ip: 64,
            handshake_rate_per_ip: Some((200, 100)),
            accepted_queue: 64,
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_frame_size: 16 * 1024,
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_timeout: Duration::from_secs(20),
            control_frame_burst: 1000,
            control_frames_per_second: 1000,
            max_connection_age: None,
        }
    }
}

impl ServerOptions {
    /// The kernel's queue of connections not yet accepted, used by [`ServerOptions::bind`]
    /// (default 1024; Linux caps it at `net.core.somaxconn`).
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.listen_backlog = backlog.max(1);
        self
    }

    /// How long a client gets from TCP accept to a finished TLS handshake (default 10 s),
    /// however it spreads its bytes over that time.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many incomplete handshakes are held at once (default 256). A new connection
    /// beyond that sheds the oldest incomplete handshake: accepting never pauses, so an
    /// honest client's SYN is never left in a full backlog behind silent connections.
    pub fn max_concurrent_handshakes(mut self, n: usize) -> Self {
        self.max_concurrent_handshakes = n.max(1);
        self
    }

    /// How many incomplete handshakes one source IP may hold (default 64). A new connection
    /// beyond that sheds the oldest incomplete handshake *of the same source*, so one source
    /// cannot push out the handshakes of others.
    pub fn max_handshakes_per_ip(mut self, n: usize) -> Self {
        self.max_handshakes_per_ip = n.max(1);
        self
    }

    /// New connections one source IP may open: `burst` at once, refilled at `per_second`
    /// (default 200, +100/s). Beyond it, a connection is closed as soon as it is accepted,
    /// before any TLS work, so one source flooding full handshakes cannot take the CPU from
    /// others. `None` turns it off (e.g. many clients behind one NAT address).
    pub fn handshake_rate_per_ip(mut self, rate: Option<(u32, u32)>) -> Self {
        self.handshake_rate_per_ip = rate;
        self
    }

    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (default 100).
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.max_concurrent_streams = n.max(1);
        self
    }

    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` in bytes (default 16 KiB).
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.max_header_list_size = bytes;
        self
    }

    /// Streams the client may reset before the server accepted them, at once, before the
    /// connection is closed with `ENHANCE_YOUR_CALM` (default 20; rapid reset).
    pub fn max_pending_accept_reset_streams(mut self, n: usize) -> Self {
        self.max_pending_accept_reset_streams = n;
        self
    }

    /// Streams the server may reset because of the peer's errors (or refuse) on one
    /// connection before closing it with `ENHANCE_YOUR_CALM` (default 1024).
    pub fn max_local_error_reset_streams(mut self, n: usize) -> Self {
        self.max_local_error_reset_streams = n;
        self
    }

    /// HTTP/2 initial stream window in bytes (default 1 MiB).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.initial_stream_window_size = bytes;
        self
    }

    /// HTTP/2 initial connection window in bytes (default 1 MiB).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.initial_connection_window_size = bytes;
        self
    }

    /// HTTP/2 `SETTINGS_MAX_FRAME_SIZE` in bytes (default 16 KiB, the protocol minimum).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// HTTP/2 keepalive: a PING after `interval` without frames from the peer, and the
    /// connection closed when no answer comes within `timeout` (default 60 s / 20 s).
    /// `None` turns it off (then a peer that stops reading holds its connection).
    pub fn http2_keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// How many PING and SETTINGS frames (acknowledgements not counted) a connection may send:
    /// `burst` at once, refilled at `per_second` (default 1000, +1000/s). A peer over budget
    /// is sent GOAWAY `ENHANCE_YOUR_CALM` and disconnected. h2 answers every PING and
    /// SETTINGS frame and has no limit of its own.
    pub fn control_frame_budget(mut self, burst: u32, per_second: u32) -> Self {
        self.control_frame_burst = burst.max(1);
        self.control_frames_per_second = per_second;
        self
    }

    /// Connection recycling, grpc-go's `MaxConnectionAge` + `MaxConnectionAgeGrace`: each
    /// connection is sent an HTTP/2 GOAWAY once it is `age` old (± 10 % jitter, drawn per
    /// connection as grpc-go does, so the connections a client opened together do not all
    /// recycle at once), its calls in flight may finish for `grace`, then it is closed.
    /// Clients reconnect — with a [`BalancedChannel`](crate::balance::BalancedChannel), without
    /// losing a call — and so handshake again: this is how a rotated server certificate,
    /// and a client's rotated certificate, reach long-lived connections.
    ///
    /// [`MtlsIncoming`](crate::server::MtlsIncoming) does both on each connection: the GOAWAY
    /// (last-stream-id 2^31-1, `NO_ERROR`: the client opens no new stream, every stream it
    /// already sent is served) goes out between two of h2's frames, and the client closes
    /// the connection once its calls are done, so the close never races a request in
    /// flight. tonic's own `max_connection_age` (one age for every connection of a server)
    /// and `max_connection_age_grace` (closes *without* a GOAWAY) are not used. Off by
    /// default.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = mtls_tonic::server::ServerOptions::default()
    ///     .max_connection_age(Duration::from_secs(300), Duration::from_secs(30));
    /// let (age, grace) = options.max_connection_age_value().unwrap();
    /// assert_eq!(age, Duration::from_secs(300));
    /// assert_eq!(grace, Duration::from_secs(30));
    /// let jittered = options.connection_age().unwrap();
    /// assert!(jittered >= Duration::from_secs(270) && jittered <= Duration::from_secs(330));
    /// ```
    pub fn max_connection_age(mut self, age: Duration, grace: Duration) -> Self {
        self.max_connection_age = Some((age, grace));
        self
    }

    /// The connection age (before jitter) and the grace, when recycling is on.
    pub fn max_connection_age_value(&self) -> Option<(Duration, Duration)> {
        self.max_connection_age
    }

    /// One connection's age before its GOAWAY: the configured age ± 10 %, drawn anew on
    /// each call (what [`MtlsIncoming`](crate::server::MtlsIncoming) does for each connection).
    pub fn connection_age(&self) -> Option<Duration> {
        self.max_connection_age
            .map(|(age, _)| age.mul_f64(0.9 + 0.2 * fastrand::f64()))
    }

    /// Puts the HTTP/2 limits onto a tonic server builder (any layer stack).
    ///
    /// ```
    /// let options = mtls_tonic::server::ServerOptions::default();
    /// let server = options.apply(tonic::transport::Server::builder());
    /// # let _ = server;
    /// ```
    pub fn apply<L>(&self, server: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_header_list_size(self.max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(self.max_local_error_reset_streams))
            .initial_stream_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_frame_size(self.max_frame_size)
            .http2_adaptive_window(Some(false))
            .http2_keepalive_interval(self.keepalive_interval)
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
    }

    /// A tonic server builder with these HTTP/2 limits and tonic's own accessors
    /// (`Request::remote_addr()`, `local_addr()`, `peer_certs()`) working over
    /// [`MtlsIncoming`](crate::server::MtlsIncoming):
    /// `apply(Server::builder()).layer(TonicConnectInfoLayer)`. Layers added to it run
    /// inside [`TonicConnectInfoLayer`](crate::server::TonicConnectInfoLayer), so they see those
    /// accessors too.
    ///
    /// ```
    /// let options = mtls_tonic::server::ServerOptions::default();
    /// let (_reporter, health) = tonic_health::server::health_reporter();
    /// let _router = options.server().add_service(health);
    /// ```
    pub fn server(
        &self,
    ) -> tonic::transport::Server<
        tower_layer::Stack<crate::server::TonicConnectInfoLayer, tower_layer::Identity>,
    > {
        self.apply(tonic::transport::Server::builder())
            .layer(crate::server::TonicConnectInfoLayer)
    }

    /// Binds a listener with [`ServerOptions::listen_backlog`] (and `SO_REUSEADDR`, so a
    /// restarted server gets its port back at once). Must be called within a tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let options = mtls_tonic::server::ServerOptions::default().listen_backlog(4096);
    /// let listener = options.bind("127.0.0.1:0".parse().unwrap())?;
    /// assert!(listener.local_addr()?.port() != 0);
    /// # Ok(()) }
    /// ```
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(self.listen_backlog)
    }

    /// The configured listen backlog.
    pub fn listen_backlog_value(&self) -> u32 {
        self.listen_backlog
    }

    /// The configured handshake timeout.
    pub fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// The configured limit of incomplete handshakes.
    pub fn max_concurrent_handshakes_value(&self) -> usize {
        self.max_concurrent_handshakes
    }

    /// The configured limit of incomplete handshakes per source IP.
    pub fn max_handshakes_per_ip_value(&self) -> usize {
        self.max_handshakes_per_ip
    }

    /// The configured `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub fn max_concurrent_streams_value(&self) -> u32 {
        self.max_concurrent_streams
    }
}
