//! Every limit a server applies to a peer, in one place: the accept path (listen backlog,
//! handshake timeout, incomplete handshakes overall and per source IP) and HTTP/2 (streams,
//! headers, resets, windows, frames, keepalive, control-frame floods).

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpSocket};

use crate::Keepalive;

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
/// assert_eq!(options.handshake_timeout, Duration::from_secs(5));
/// // The HTTP/2 limits go onto tonic's server builder:
/// let _server = options.apply(tonic::transport::Server::builder());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The kernel's queue of connections not yet accepted (default 1024, at least 1).
    pub listen_backlog: u32,
    /// TCP accept to finished TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Incomplete handshakes held at once (default 256, at least 1).
    pub max_concurrent_handshakes: usize,
    /// Incomplete handshakes of one source IP (default 64, at least 1).
    pub max_handshakes_per_ip: usize,
    /// New connections of one source IP (default 200, +100/s); `None` is unlimited.
    pub handshake_rate_per_ip: Option<RateLimit>,
    pub(crate) accepted_queue: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (default 100, at least 1).
    pub max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` in bytes (default 16 KiB).
    pub max_header_list_size: u32,
    /// Streams reset by the client before they were accepted (default 20).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server reset for the peer's errors (default 1024).
    pub max_local_error_reset_streams: usize,
    /// HTTP/2 initial stream window in bytes (default 1 MiB).
    pub initial_stream_window_size: u32,
    /// HTTP/2 initial connection window in bytes (default 1 MiB).
    pub initial_connection_window_size: u32,
    /// HTTP/2 `SETTINGS_MAX_FRAME_SIZE` in bytes (default 16 KiB).
    pub max_frame_size: u32,
    /// HTTP/2 keepalive PINGs (default 60 s / 20 s); `None` is off.
    pub http2_keepalive: Option<Keepalive>,
    /// PING and SETTINGS frames a connection may send (default 1000, +1000/s; burst at
    /// least 1).
    pub control_frame_budget: RateLimit,
    /// Connection recycling (grpc-go's `MaxConnectionAge` and `MaxConnectionAgeGrace`);
    /// `None` (the default) is off.
    pub max_connection_age: Option<ConnectionAge>,
}

/// A token bucket: `burst` at once, refilled at `per_second`
/// ([`ServerOptions::handshake_rate_per_ip`], [`ServerOptions::control_frame_budget`]).
///
/// ```
/// use mtls_tonic::server::{RateLimit, ServerOptions};
/// let options = ServerOptions::default().handshake_rate_per_ip(Some(RateLimit::new(20, 1)));
/// assert_eq!(options.handshake_rate_per_ip.unwrap().burst, 20);
/// assert_eq!(ServerOptions::default().control_frame_budget.per_second, 1000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// How many at once, with a full bucket.
    pub burst: u32,
    /// How many more each second.
    pub per_second: u32,
}

impl RateLimit {
    /// `burst` at once, refilled at `per_second`.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self { burst, per_second }
    }
}

/// Connection recycling: a GOAWAY once a connection is `age` old (± 10 % jitter per
/// connection), then `grace` for its calls in flight before it is closed
/// ([`ServerOptions::max_connection_age`]).
///
/// ```
/// use std::time::Duration;
/// use mtls_tonic::server::ConnectionAge;
/// let recycle = ConnectionAge::new(Duration::from_secs(300), Duration::from_secs(30));
/// assert_eq!((recycle.age, recycle.grace), (Duration::from_secs(300), Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionAge {
    /// Age before the GOAWAY, before jitter.
    pub age: Duration,
    /// How long calls in flight may finish after the GOAWAY.
    pub grace: Duration,
}

impl ConnectionAge {
    /// GOAWAY at `age` (± 10 %), closed `grace` later.
    pub fn new(age: Duration, grace: Duration) -> Self {
        Self { age, grace }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen_backlog: 1024,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            max_handshakes_per_ip: 64,
            handshake_rate_per_ip: Some(RateLimit::new(200, 100)),
            accepted_queue: 64,
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_frame_size: 16 * 1024,
            http2_keepalive: Some(Keepalive::new(
                Duration::from_secs(60),
                Duration::from_secs(20),
            )),
            control_frame_budget: RateLimit::new(1000, 1000),
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
    pub fn handshake_rate_per_ip(mut self, rate: Option<RateLimit>) -> Self {
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use mtls_tonic::{Keepalive, server::ServerOptions};
    /// let options = ServerOptions::default()
    ///     .http2_keepalive(Some(Keepalive::new(Duration::from_secs(5), Duration::from_secs(2))));
    /// assert_eq!(options.http2_keepalive.unwrap().timeout, Duration::from_secs(2));
    /// ```
    pub fn http2_keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.http2_keepalive = keepalive;
        self
    }

    /// How many PING and SETTINGS frames (acknowledgements not counted) a connection may send:
    /// `burst` at once, refilled at `per_second` (default 1000, +1000/s). A peer over budget
    /// is sent GOAWAY `ENHANCE_YOUR_CALM` and disconnected. h2 answers every PING and
    /// SETTINGS frame and has no limit of its own.
    pub fn control_frame_budget(mut self, budget: RateLimit) -> Self {
        self.control_frame_budget = budget;
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
    /// use mtls_tonic::server::{ConnectionAge, ServerOptions};
    /// let options = ServerOptions::default().max_connection_age(Some(ConnectionAge::new(
    ///     Duration::from_secs(300),
    ///     Duration::from_secs(30),
    /// )));
    /// assert_eq!(options.max_connection_age.unwrap().grace, Duration::from_secs(30));
    /// let jittered = options.connection_age().unwrap();
    /// assert!(jittered >= Duration::from_secs(270) && jittered <= Duration::from_secs(330));
    /// ```
    pub fn max_connection_age(mut self, recycle: Option<ConnectionAge>) -> Self {
        self.max_connection_age = recycle;
        self
    }

    /// One connection's age before its GOAWAY: the configured age ± 10 %, drawn anew on
    /// each call (what [`MtlsIncoming`](crate::server::MtlsIncoming) does for each connection).
    pub fn connection_age(&self) -> Option<Duration> {
        self.max_connection_age
            .map(|c| c.age.mul_f64(0.9 + 0.2 * fastrand::f64()))
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
            .max_concurrent_streams(self.max_concurrent_streams.max(1))
            .http2_max_header_list_size(self.max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(self.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(self.max_local_error_reset_streams))
            .initial_stream_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_frame_size(self.max_frame_size)
            .http2_adaptive_window(Some(false))
            .http2_keepalive_interval(self.http2_keepalive.map(|k| k.interval))
            .http2_keepalive_timeout(self.http2_keepalive.map(|k| k.timeout))
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
        socket.listen(self.listen_backlog.max(1))
    }
}
