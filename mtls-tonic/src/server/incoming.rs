//! The accept loop: TCP accept, bounded concurrent rustls handshakes, verified streams out.

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
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tracing::{debug, warn};

use super::{MtlsConnectInfo, MtlsStream};

/// Limits of the accept loop.
///
/// ```
/// use std::time::Duration;
/// let options = mtls_tonic::ServerOptions::default()
///     .handshake_timeout(Duration::from_secs(5))
///     .max_concurrent_handshakes(64);
/// assert_eq!(options.handshake_timeout_value(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    handshake_timeout: Duration,
    max_concurrent_handshakes: usize,
    accepted_queue: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            accepted_queue: 64,
        }
    }
}

impl ServerOptions {
    /// How long a client gets from TCP accept to a finished TLS handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many handshakes may run at once (default 256). When all slots are busy, accepting
    /// pauses (connections wait in the kernel backlog) until a slot frees or a handshake times out.
    pub fn max_concurrent_handshakes(mut self, n: usize) -> Self {
        self.max_concurrent_handshakes = n.max(1);
        self
    }

    /// The configured handshake timeout.
    pub fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// The configured handshake concurrency.
    pub fn max_concurrent_handshakes_value(&self) -> usize {
        self.max_concurrent_handshakes
    }
}

/// A stream of mutually authenticated connections for
/// [`tonic::transport::Server::serve_with_incoming`].
///
/// A background task accepts TCP connections and runs each rustls handshake in its own task,
/// bounded in time ([`ServerOptions::handshake_timeout`]) and number
/// ([`ServerOptions::max_concurrent_handshakes`]), so a silent or garbage-speaking client
/// never blocks other clients. Failed handshakes are logged at `warn` with the reason
/// (mtls-core's verification error when the peer was rejected) and dropped; the stream only
/// yields connections whose handshake succeeded. Dropping the stream stops the accept loop.
///
/// ```no_run
/// # async fn run(config: rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// let incoming = mtls_tonic::MtlsIncoming::new(listener, config);
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
    task: JoinHandle<()>,
}

impl MtlsIncoming {
    /// Starts accepting on `listener` with default [`ServerOptions`]. Must be called within a
    /// tokio runtime.
    pub fn new(listener: TcpListener, config: impl Into<Arc<rustls::ServerConfig>>) -> Self {
        Self::with_options(listener, config, ServerOptions::default())
    }

    /// Starts accepting on `listener` with the given options. Must be called within a tokio
    /// runtime.
    pub fn with_options(
        listener: TcpListener,
        config: impl Into<Arc<rustls::ServerConfig>>,
        options: ServerOptions,
    ) -> Self {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = mpsc::channel(options.accepted_queue);
        let acceptor = TlsAcceptor::from(config.into());
        let task = tokio::spawn(accept_loop(listener, acceptor, options, tx));
        Self {
            rx,
            local_addr,
            task,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    options: ServerOptions,
    tx: mpsc::Sender<MtlsStream>,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrent_handshakes));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
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
            () = tx.closed() => return,
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let stream = handshake(acceptor, tcp, remote, timeout).await;
            drop(permit);
            if let Some(stream) = stream {
                // The receiver may be gone (server shutting down); the connection just closes.
                let _ = tx.send(stream).await;
            }
        });
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
) -> Option<MtlsStream> {
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            warn!(%remote, reason = %handshake_reason(&error), "mTLS handshake failed");
            return None;
        }
        Err(_) => {
            warn!(%remote, ?timeout, "mTLS handshake timed out");
            return None;
        }
    };
    let peer = match PeerIdentity::from_connection(tls.get_ref().1) {
        Ok(peer) => peer,
        Err(error) => {
            warn!(%remote, %error, "peer identity unreadable after handshake");
            return None;
        }
    };
    debug!(%remote, %peer, "mTLS connection accepted");
    Some(MtlsStream::new(
        tls,
        MtlsConnectInfo::new(peer, remote, local),
    ))
}

/// The most specific reason for a failed handshake: mtls-core's verification error if the
/// peer was rejected by policy, else rustls' or the socket's error.
pub(crate) fn handshake_reason(error: &io::Error) -> String {
    match mtls_core::Error::from_io(error) {
        Some(reason) => reason.to_string(),
        None => error.to_string(),
    }
}
