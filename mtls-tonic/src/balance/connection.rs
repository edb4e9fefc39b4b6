//! The endpoint task: connect (TCP, TLS, HTTP/2), become ready when the server speaks,
//! watch health, reconnect with backoff, drain when removed.

use std::{
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
};
use tonic::body::Body;
use tracing::{debug, info, warn};

use super::{
    ctx::Ctx,
    dial::{CustomIo, Dialer, dial_custom},
    endpoint::{Phase, Shared},
    health,
};
use crate::{
    Error,
    frames::{GOAWAY, Scanner},
};

/// The pause before reconnecting after a GOAWAY on a connection younger than 1 s.
const YOUNG_GOAWAY_PACE: Duration = Duration::from_millis(100);

/// Why an attempt failed: an ordinary failure, or a refusal at the TLS layer.
enum Failure {
    Failed(String),
    Refused(String),
}

/// The connection's I/O, boxed: hyper spawns every call's response future as one variant
/// of an enum whose largest variant holds the whole connection (h2's codec and this I/O), so
/// the size of this type is copied into a new task on every call. A rustls stream inline
/// made that task ~2.6 KiB (past glibc's per-thread cache, several `memmove`s of it per
/// call: a fifth of the client's CPU at concurrency 128); boxed, as tonic's `Channel` boxes
/// its I/O, it is a pointer.
/// (A user's connector's I/O is boxed once more inside: `dial::CustomIo`.)
type Io<I> = TokioIo<Box<Watched<I>>>;

type Conn<I> = hyper::client::conn::http2::Connection<Io<I>, Body, TokioExecutor>;

/// The mTLS connector's stream, polled without indirection.
type TlsIo = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A connection over the mTLS connector's stream or a user's connector's I/O.
enum Attempt {
    Tls(Connected<TlsIo>),
    Custom(Connected<CustomIo>),
}

/// What a connection runs over: the mTLS stream or a user's connector's I/O.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

struct Connected<I: Stream> {
    sender: SendRequest<Body>,
    conn: Conn<I>,
    /// The server's first bytes arrived (`Ok`), or why none came (`Err`: a TLS alert, a
    /// reset, a close).
    first_read: oneshot::Receiver<Result<(), ReadFailure>>,
    /// The server sent GOAWAY.
    goaway: oneshot::Receiver<()>,
}

/// Why the server's first bytes never came.
#[derive(Debug)]
struct ReadFailure {
    reason: String,
    /// The TLS layer failed: the server refused our certificate (an alert), or the session
    /// broke during the handshake's last flight.
    tls: bool,
}

async fn connect(ctx: &Ctx, shared: &Shared) -> Result<Attempt, Error> {
    let addr = shared.addr;
    let (connector, sni) = match (&shared.dial, &ctx.connector) {
        (Some((connector, sni)), _) => (connector, sni),
        (None, Dialer::Mtls(connector)) => (connector, &ctx.sni),
        (None, Dialer::Custom(dial)) => {
            let io = dial_custom(dial.as_ref(), addr, ctx.settings.connect_timeout).await?;
            return Ok(Attempt::Custom(handshake(ctx, addr, io).await?));
        }
    };
    let tls = connector.connect(addr, Some(sni)).await?;
    Ok(Attempt::Tls(handshake(ctx, addr, tls).await?))
}

/// HTTP/2 over `inner`, watched for the server's first bytes and its GOAWAY.
async fn handshake<I: Stream>(
    ctx: &Ctx,
    addr: std::net::SocketAddr,
    inner: I,
) -> Result<Connected<I>, Error> {
    let (tx, first_read) = oneshot::channel();
    let (goaway_tx, goaway) = oneshot::channel();
    let io: Io<I> = TokioIo::new(Box::new(Watched {
        inner,
        first: Some(tx),
        frames: Scanner::new(false),
        goaway: Some(goaway_tx),
    }));
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let http2 = &ctx.settings.http2;
    builder
        .initial_stream_window_size(http2.initial_stream_window_size)
        .initial_connection_window_size(http2.initial_connection_window_size);
    if http2.adaptive_window {
        // Both windows start at the spec's 64 KiB and grow with the measured BDP.
        builder.adaptive_window(true);
    }
    if let Some(crate::Keepalive {
        interval, timeout, ..
    }) = ctx.settings.keepalive
    {
        builder
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    let (sender, conn) = builder
        .handshake(io)
        .await
        .map_err(|source| Error::Http2 { addr, source })?;
    Ok(Connected {
        sender,
        conn,
        first_read,
        goaway,
    })
}

enum Ended {
    Removed,
    /// The connection ended before it was ready (counts as a failed attempt).
    Failed(String),
    /// The server refused the connection at the TLS layer (its alert, or our verifier).
    Refused(String),
    /// A ready connection ended without a GOAWAY.
    Closed {
        reason: String,
        lived: Duration,
    },
    /// The server sent GOAWAY (graceful shutdown, connection recycling): never a failure,
    /// whatever the connection's age; the old connection drains on its own.
    GoingAway {
        lived: Duration,
    },
}

impl Ended {
    /// Counts how the connection ended: a failed attempt, or a disconnection.
    fn counted(self, ctx: &Ctx) -> Self {
        match &self {
            Ended::Removed => {}
            Ended::Failed(_) | Ended::Refused(_) => crate::metrics::connect_failed(&ctx.target),
            Ended::Closed { reason, .. } => {
                crate::metrics::disconnected(&ctx.target, false, reason)
            }
            Ended::GoingAway { .. } => crate::metrics::disconnected(&ctx.target, true, ""),
        }
        self
    }
}

/// Runs one endpoint until it is removed: connect, serve, reconnect with backoff, drain.
pub(crate) async fn run(ctx: Arc<Ctx>, shared: Arc<Shared>) {
    let settings = &ctx.settings;
    let mut backoff = settings.backoff.start();
    loop {
        if shared.is_removed() {
            break;
        }
        shared.update(|inner| {
            if !matches!(inner.phase, Phase::Draining) {
                inner.phase = Phase::Connecting;
            }
        });
        let attempt = tokio::select! {
            attempt = connect(&ctx, &shared) => attempt,
            () = shared.removed() => break,
        };
        if attempt.is_err() {
            crate::metrics::connect_failed(&ctx.target);
        }
        let reason = match attempt {
            Ok(attempt) => match match attempt {
                Attempt::Tls(connected) => serve(&ctx, &shared, connected).await,
                Attempt::Custom(connected) => serve(&ctx, &shared, connected).await,
            }
            .counted(&ctx)
            {
                Ended::Removed => break,
                Ended::Closed { .. } | Ended::GoingAway { .. }
                    if shared.not_in_dns_since().is_some() =>
                {
                    // Kept only through an empty DNS answer: once its connection ends (it
                    // failed, or its server drained it), it goes.
                    info!(target = %ctx.target, endpoint = %shared.addr, "endpoint not in DNS lost its connection: removing");
                    shared.remove();
                    ctx.request_reresolve(shared.addr);
                    break;
                }
                Ended::GoingAway { lived } => {
                    // Not a failure (gRPC goes READY -> IDLE -> CONNECTING): reconnect at
                    // once, paced only when the server keeps sending GOAWAY to young
                    // connections, so a misbehaving server cannot make us spin.
                    backoff.reset();
                    shared.lost("server sent GOAWAY".to_owned());
                    ctx.request_reresolve(shared.addr);
                    if lived < Duration::from_secs(1) {
                        let pace = YOUNG_GOAWAY_PACE.mul_f64(0.8 + 0.4 * fastrand::f64());
                        tokio::select! {
                            () = tokio::time::sleep(pace) => {}
                            () = shared.removed() => break,
                        }
                    }
                    continue;
                }
                Ended::Closed { reason, lived } => {
                    // A connection that was up for a while reconnects at once (gRPC resets
                    // the backoff on READY); one that died young waits like a failed dial.
                    if lived >= Duration::from_secs(1) {
                        backoff.reset();
                        shared.lost(reason);
                        ctx.request_reresolve(shared.addr);
                        continue;
                    }
                    Failure::Failed(reason)
                }
                Ended::Failed(reason) => Failure::Failed(reason),
                Ended::Refused(reason) => Failure::Refused(reason),
            },
            Err(Error::Handshake { addr, reason }) => {
                Failure::Refused(format!("TLS handshake with {addr}: {reason}"))
            }
            Err(error) => Failure::Failed(error.to_string()),
        };
        match reason {
            Failure::Failed(reason) => shared.fail(reason),
            Failure::Refused(reason) => shared.refuse(reason),
        }
        ctx.request_reresolve(shared.addr);
        let delay = backoff.next_delay();
        debug!(endpoint = %shared.addr, ?delay, "reconnect backoff");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.removed() => break,
        }
    }
    drain(&ctx, &shared).await;
    ctx.unregister(&shared);
    info!(target = %ctx.target, endpoint = %shared.addr, "endpoint removed");
}

/// Waits until the calls in flight on a removed endpoint are done (bounded).
async fn drain(ctx: &Ctx, shared: &Shared) {
    let deadline = tokio::time::Instant::now() + ctx.settings.drain_timeout;
    // A call may have been dispatched just as the removal landed: give it a moment to count.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while shared.in_flight.load(Ordering::Acquire) > 0 {
        let idle = shared.idle.notified();
        tokio::select! {
            () = idle => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = tokio::time::sleep_until(deadline) => {
                warn!(endpoint = %shared.addr, "drain timeout: closing with calls in flight");
                break;
            }
        }
    }
}

async fn serve<I: Stream>(ctx: &Ctx, shared: &Arc<Shared>, connected: Connected<I>) -> Ended {
    let Connected {
        sender,
        conn,
        mut first_read,
        mut goaway,
    } = connected;
    let started = Instant::now();
    let mut conn = Box::pin(conn);
    // Ready only once the server has spoken HTTP/2 (its SETTINGS): with TLS 1.3 the client
    // finishes its handshake before the server has checked our certificate, so a server that
    // rejects us would otherwise look ready for a moment. Its refusal (a TLS alert) is what
    // the first read returns; the connection task fails from the same read, so whichever
    // branch wins, the reason comes from `first_read`.
    let heard = tokio::select! {
        biased;
        heard = &mut first_read => heard.ok(),
        result = &mut conn => {
            let heard = first_read.try_recv().ok();
            match heard {
                Some(Err(failure)) => Some(Err(failure)),
                _ => return Ended::Failed(closed_reason(result, "before HTTP/2 SETTINGS")),
            }
        }
        () = tokio::time::sleep(ctx.settings.connect_timeout) => {
            return Ended::Failed(format!("no HTTP/2 SETTINGS within {:?}", ctx.settings.connect_timeout));
        }
        () = shared.removed() => return Ended::Removed,
    };
    match heard {
        Some(Ok(())) => crate::metrics::connected(&ctx.target),
        Some(Err(ReadFailure { reason, tls: true })) => {
            return Ended::Refused(format!("the server refused the mTLS session: {reason}"));
        }
        Some(Err(ReadFailure { reason, tls: false })) => {
            return Ended::Failed(format!(
                "connection closed before HTTP/2 SETTINGS: {reason}"
            ));
        }
        None => {
            return Ended::Failed("connection closed before HTTP/2 SETTINGS".to_owned());
        }
    }
    let health_on = ctx.settings.health_service.is_some();
    shared.update(|inner| {
        if !matches!(inner.phase, Phase::Draining) {
            inner.phase = Phase::Connected;
            inner.serving = !health_on;
            inner.sender = Some(sender.clone());
            inner.failed = false;
            inner.last_error = None;
        }
    });
    let health = async {
        match &ctx.settings.health_service {
            Some(service) => health::watch(ctx, shared, sender.clone(), service.clone()).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        result = &mut conn => {
            shared.update(|inner| inner.sender = None);
            // h2 closes at once after a GOAWAY when no call is in flight: the GOAWAY was
            // read in the same poll.
            if goaway.try_recv().is_ok() {
                debug!(endpoint = %shared.addr, reason = %closed_reason(result, "after GOAWAY"), "connection ended");
                return Ended::GoingAway { lived: started.elapsed() };
            }
            let reason = closed_reason(result, "");
            Ended::Closed { reason, lived: started.elapsed() }
        }
        // `Ok` only: the sender is dropped with the connection's IO, and a connection that
        // ended without a GOAWAY is the branch above's, not this one.
        Ok(()) = &mut goaway => {
            // No new call goes to this connection (h2 refuses new streams after a GOAWAY;
            // the balancer stops picking it now); calls on it finish while it drains on its
            // own, and a new connection is dialed at once, as grpc-go does.
            shared.lost("server sent GOAWAY".to_owned());
            drop(sender);
            let drain = ctx.settings.drain_timeout;
            let addr = shared.addr;
            tokio::spawn(async move {
                match tokio::time::timeout(drain, conn).await {
                    Ok(result) => debug!(endpoint = %addr, reason = %closed_reason(result, "after GOAWAY"), "drained connection ended"),
                    Err(_) => warn!(endpoint = %addr, ?drain, "connection after GOAWAY still busy at the drain timeout: closing"),
                }
            });
            Ended::GoingAway { lived: started.elapsed() }
        }
        () = health => Ended::Closed { reason: "health checking stopped".to_owned(), lived: started.elapsed() },
        () = shared.removed() => {
            drop(sender);
            // Keep driving the connection while in-flight calls finish.
            tokio::select! {
                () = drain(ctx, shared) => {}
                _ = &mut conn => {}
            }
            Ended::Removed
        }
    }
}

fn closed_reason(result: hyper::Result<()>, when: &str) -> String {
    let suffix = if when.is_empty() {
        String::new()
    } else {
        format!(" {when}")
    };
    match result {
        Ok(()) => format!("connection closed{suffix}"),
        Err(error) => {
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            format!("connection failed{suffix}: {reason}")
        }
    }
}

pin_project_lite::pin_project! {
    /// An I/O wrapper that reports the server's first bytes (or why none came) and its first
    /// GOAWAY frame, read from the frame headers of the bytes passing to h2.
    struct Watched<T> {
        #[pin]
        inner: T,
        first: Option<oneshot::Sender<Result<(), ReadFailure>>>,
        frames: Scanner,
        goaway: Option<oneshot::Sender<()>>,
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let result = this.inner.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        match &result {
            Poll::Ready(Ok(())) if !room => {}
            Poll::Ready(Ok(())) if !read.is_empty() => {
                if let Some(first) = this.first.take() {
                    let _ = first.send(Ok(()));
                }
                if this.goaway.is_some() {
                    let mut seen = false;
                    // Not HTTP/2 (`Err`) cannot happen without a preface to check.
                    let _ = this.frames.feed(read, |head| {
                        seen |= head.kind == GOAWAY;
                        true
                    });
                    if seen && let Some(goaway) = this.goaway.take() {
                        let _ = goaway.send(());
                    }
                }
            }
            Poll::Ready(Ok(())) => {
                if let Some(first) = this.first.take() {
                    let _ = first.send(Err(ReadFailure {
                        reason: "the server closed it".to_owned(),
                        tls: false,
                    }));
                }
            }
            Poll::Ready(Err(error)) => {
                if let Some(first) = this.first.take() {
                    let tls = error
                        .get_ref()
                        .is_some_and(|inner| inner.is::<rustls::Error>());
                    let _ = first.send(Err(ReadFailure {
                        reason: crate::server::handshake_reason_pub(error),
                        tls,
                    }));
                }
            }
            Poll::Pending => {}
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
