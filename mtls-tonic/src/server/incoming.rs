//! The accept loop: TCP accept as fast as connections arrive, rustls handshakes bounded in
//! time, overall and per source IP (the oldest incomplete one shed when full), verified
//! streams out.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use mtls_core::PeerIdentity;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tracing::{debug, warn};

use super::{
    MtlsConnectInfo, MtlsStream, ServerOptions,
    admission::{Admission, Shed, Slot},
    guard::FrameGuard,
    log_limit::ServerLog,
};

/// A stream of mutually authenticated connections for
/// [`tonic::transport::Server::serve_with_incoming`].
///
/// A background task accepts TCP connections as fast as they arrive and runs each rustls
/// handshake in its own task, bounded in time ([`ServerOptions::handshake_timeout`]) and
/// number ([`ServerOptions::max_concurrent_handshakes`],
/// [`ServerOptions::max_handshakes_per_ip`]). When the slots are full the *oldest*
/// incomplete handshake is shed, so silent, slow or garbage-speaking clients never keep an
/// honest client's connection waiting in the kernel's backlog. Failed, timed-out and shed
/// handshakes are logged at `warn` with the reason (mtls-core's verification error when the
/// peer was rejected) — at most a few lines per second per kind, then one line per second
/// with the counts of the rest. The stream only yields connections whose handshake
/// succeeded. Dropping the stream stops the accept loop.
///
/// Bind the listener with [`ServerOptions::bind`] to set the listen backlog, and put the
/// same options' HTTP/2 limits on tonic's server with [`ServerOptions::server`] (or
/// [`ServerOptions::apply`]). Handlers read the verified peer with
/// [`PeerIdentityExt`](crate::PeerIdentityExt); tonic's own `Request::remote_addr()`,
/// `local_addr()` and `peer_certs()` answer when the server has
/// [`TonicConnectInfoLayer`](crate::server::TonicConnectInfoLayer), which
/// [`ServerOptions::server`] puts on (a bare `Server::builder()`, as below, does not).
///
/// ```no_run
/// # async fn run(config: rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// let incoming = mtls_tonic::server::MtlsIncoming::new(listener, config);
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// tonic::transport::Server::builder()
///     .add_service(health)
///     .serve_with_incoming(incoming)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MtlsIncoming {
    rx: mpsc::Receiver<MtlsStream>,
    local_addr: SocketAddr,
    admission: Arc<Admission>,
    task: JoinHandle<()>,
}

impl MtlsIncoming {
    /// Starts accepting on `listener` with default [`ServerOptions`]. Must be called within a
    /// tokio runtime.
    pub fn new(listener: TcpListener, config: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        Self::configured(listener, config, ServerOptions::default())
    }

    /// Starts accepting on `listener` with the given options. Must be called within a tokio
    /// runtime.
    pub fn configured(
        listener: TcpListener,
        config: impl Into<Arc<rustls::ServerConfig>>,
        options: ServerOptions,
    ) -> Self {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(options.accepted_queue);
        let acceptor = TlsAcceptor::from(config.into());
        let shared = Arc::new(Shared {
            admission: Admission::new(
                options.max_concurrent_handshakes,
                options.max_handshakes_per_ip,
                options
                    .handshake_rate_per_ip
                    .map(|r| (r.burst, r.per_second)),
            ),
            log: Arc::new(ServerLog::new()),
            acceptor,
            options,
        });
        let admission = shared.admission.clone();
        let task = tokio::spawn(accept_loop(listener, shared, tx));
        Self {
            rx,
            local_addr,
            admission,
            task,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections accepted whose TLS handshake has not finished yet (at most
    /// [`ServerOptions::max_concurrent_handshakes`]).
    pub fn incomplete_handshakes(&self) -> usize {
        self.admission.in_progress()
    }
}

impl Drop for MtlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for MtlsIncoming {
    type Item = Result<MtlsStream, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

/// What the accept loop shares with its handshake tasks.
struct Shared {
    admission: Arc<Admission>,
    log: Arc<ServerLog>,
    acceptor: TlsAcceptor,
    options: ServerOptions,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tx: mpsc::Sender<MtlsStream>) {
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = report.tick() => {
                shared.log.report_suppressed();
                continue;
            }
            () = tx.closed() => return,
        };
        if shared.admission.check_rate(remote.ip()).is_err() {
            // Over its rate: closed before any TLS work, so a flood from one source costs
            // an accept and a close, not a handshake.
            if shared.log.handshake_rate_limited.allow() {
                warn!(%remote, "new connection refused: this source is over its handshake rate");
            }
            drop(tcp);
            continue;
        }
        let (slot, shed) = shared.admission.admit(remote.ip());
        if let Some(shed) = shed
            && shared.log.handshake_shed.allow()
        {
            let why = match shed {
                Shed::SameSource => "this source's incomplete handshakes are at the per-IP limit",
                Shed::Oldest => "all handshake slots are taken",
            };
            warn!(%remote, why, "shed the oldest incomplete mTLS handshake for a new connection");
        }
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(stream) = handshake(&shared, slot, tcp, remote).await {
                // The receiver may be gone (server shutting down); the connection just closes.
                let _ = tx.send(stream).await;
            }
        });
    }
}

async fn handshake(
    shared: &Shared,
    mut slot: Slot,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<MtlsStream> {
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let timeout = shared.options.handshake_timeout;
    let log = &shared.log;
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(timeout, shared.acceptor.accept(tcp).into_fallible()) => accepted,
        // Shed for a newer connection (the shedder logged it): just close.
        _ = &mut slot.shed => return None,
    };
    drop(slot);
    crate::metrics::server_handshake(
        accepted
            .as_ref()
            .map(|done| done.as_ref().map(|_| ()).map_err(|(error, _)| error)),
    );
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err((error, tcp))) => {
            if log.handshake_failed.allow() {
                warn!(%remote, reason = %handshake_reason(&error), "mTLS handshake failed");
            }
            linger(tcp).await;
            return None;
        }
        Err(_) => {
            if log.handshake_timed_out.allow() {
                warn!(%remote, ?timeout, "mTLS handshake timed out");
            }
            return None;
        }
    };
    let peer = match PeerIdentity::from_connection(tls.get_ref().1) {
        Ok(peer) => peer,
        Err(error) => {
            if log.handshake_failed.allow() {
                warn!(%remote, %error, "peer identity unreadable after handshake");
            }
            return None;
        }
    };
    debug!(%remote, %peer, tls = peer.negotiated().map(tracing::field::display), "mTLS connection accepted");
    let budget = shared.options.control_frame_budget;
    let guard = FrameGuard::new(budget.burst.max(1), budget.per_second);
    let info = MtlsConnectInfo::accepted(peer, remote, local, &tls);
    let mut stream = MtlsStream::new(tls, info, guard, log.clone());
    if let (Some(age), Some(recycle)) = (
        shared.options.connection_age(),
        shared.options.max_connection_age,
    ) {
        stream.recycle_after(age, recycle.grace);
    }
    Some(stream)
}

/// How long a refused handshake's socket stays open for the client to read our alert.
const LINGER: Duration = Duration::from_secs(1);
/// What a lingering socket reads (and drops) at most.
const LINGER_BYTES: usize = 64 * 1024;

/// After a refused handshake (the alert is written): FIN, then read and drop what the client
/// still sends — with TLS 1.3 its HTTP/2 preface is on the way before it sees the alert —
/// until it closes, at most [`LINGER`] and [`LINGER_BYTES`]. Closing with unread bytes
/// would send a reset, and a reset makes the client's kernel drop the alert unread: the
/// client would see "connection reset" instead of why it was refused (Envoy's delayed
/// close does the same).
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut read = 0;
        while read < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// The most specific reason for a failed handshake: mtls-core's verification error if the
/// peer was rejected by policy, else rustls' or the socket's error.
pub(crate) fn handshake_reason(error: &io::Error) -> String {
    // mtls-core's verification error, or a version/group mismatch explained (what each
    // side offered, what to set), or rustls' / the socket's error.
    mtls_core::explain_handshake_error(error)
}
