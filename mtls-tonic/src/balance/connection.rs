//! The endpoint task: connect (TCP, TLS, HTTP/2), become ready when the server speaks,
//! watch health, reconnect with backoff, drain when removed.

use std::{
    io,
    net::SocketAddr,
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
    endpoint::{Phase, Shared},
    health,
};
use crate::Error;

type Conn = hyper::client::conn::http2::Connection<
    TokioIo<FirstRead<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    Body,
    TokioExecutor,
>;

struct Connected {
    sender: SendRequest<Body>,
    conn: Conn,
    first_read: oneshot::Receiver<()>,
}

async fn connect(ctx: &Ctx, addr: SocketAddr) -> Result<Connected, Error> {
    let tls = ctx.connector.connect(addr, Some(&ctx.sni)).await?;
    let (tx, first_read) = oneshot::channel();
    let io = TokioIo::new(FirstRead {
        inner: tls,
        signal: Some(tx),
    });
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    if let Some((interval, timeout)) = ctx.settings.keepalive {
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
    })
}

enum Ended {
    Removed,
    Closed { reason: String, lived: Duration },
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
            attempt = connect(&ctx, shared.addr) => attempt,
            () = shared.removed() => break,
        };
        let reason = match attempt {
            Ok(connected) => match serve(&ctx, &shared, connected).await {
                Ended::Removed => break,
                Ended::Closed { reason, .. } if shared.not_in_dns_since().is_some() => {
                    // Kept only through an empty DNS answer: once its connection ends (it
                    // failed, or its server drained it), it goes.
                    info!(target = %ctx.target, endpoint = %shared.addr, %reason, "endpoint not in DNS lost its connection: removing");
                    shared.remove();
                    ctx.request_reresolve(shared.addr);
                    break;
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
                    reason
                }
            },
            Err(error) => error.to_string(),
        };
        shared.fail(reason);
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

async fn serve(ctx: &Ctx, shared: &Arc<Shared>, connected: Connected) -> Ended {
    let Connected {
        sender,
        conn,
        first_read,
    } = connected;
    let started = Instant::now();
    let mut conn = std::pin::pin!(conn);
    // Ready only once the server has spoken HTTP/2 (its SETTINGS): with TLS 1.3 the client
    // finishes its handshake before the server has checked our certificate, so a server that
    // rejects us would otherwise look ready for a moment.
    tokio::select! {
        heard = first_read => if heard.is_err() {
            return Ended::Closed { reason: "connection closed before HTTP/2 SETTINGS".to_owned(), lived: started.elapsed() };
        },
        result = &mut conn => {
            return Ended::Closed { reason: closed_reason(result, "before HTTP/2 SETTINGS"), lived: started.elapsed() };
        }
        () = tokio::time::sleep(ctx.settings.connect_timeout) => {
            return Ended::Closed { reason: format!("no HTTP/2 SETTINGS within {:?}", ctx.settings.connect_timeout), lived: started.elapsed() };
        }
        () = shared.removed() => return Ended::Removed,
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
            let reason = closed_reason(result, "");
            shared.update(|inner| inner.sender = None);
            Ended::Closed { reason, lived: started.elapsed() }
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
    /// An I/O wrapper that signals once when the first bytes arrive from the peer.
    struct FirstRead<T> {
        #[pin]
        inner: T,
        signal: Option<oneshot::Sender<()>>,
    }
}

impl<T: AsyncRead> AsyncRead for FirstRead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && let Some(signal) = this.signal.take()
        {
            let _ = signal.send(());
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for FirstRead<T> {
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
