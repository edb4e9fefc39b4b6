//! One endpoint: its HTTP/2 connection task (connect, readiness, backoff, health, drain) and
//! the `Service` the balancer sees.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::task::AtomicWaker;
use http::uri::Authority;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, oneshot, watch},
};
use tonic::{Status, body::Body};
use tower::load::Load;
use tracing::{debug, info, warn};

use super::{
    EndpointInfo, EndpointState,
    ctx::{Ctx, lock},
    health,
};
use crate::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Phase {
    Connecting,
    Connected,
    Failed(String),
    Draining,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    serving: bool,
    sender: Option<SendRequest<Body>>,
}

/// What the endpoint task, the balancer's service and introspection share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    target: String,
    authority: Authority,
    inner: Mutex<Inner>,
    waker: AtomicWaker,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    removed: watch::Sender<bool>,
    idle: Notify,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr, ctx: &Ctx) -> Arc<Self> {
        Arc::new(Self {
            addr,
            target: ctx.target.to_string(),
            authority: ctx.authority.clone(),
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                serving: true,
                sender: None,
            }),
            waker: AtomicWaker::new(),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            removed: watch::Sender::new(false),
            idle: Notify::new(),
        })
    }

    fn public_state(inner: &Inner) -> EndpointState {
        match &inner.phase {
            Phase::Connecting => EndpointState::Connecting,
            Phase::Connected if inner.serving => EndpointState::Ready,
            Phase::Connected => EndpointState::NotServing,
            Phase::Failed(reason) => EndpointState::TransientFailure {
                reason: reason.clone(),
            },
            Phase::Draining => EndpointState::Draining,
        }
    }

    pub(crate) fn info(&self) -> EndpointInfo {
        EndpointInfo {
            addr: self.addr,
            state: Self::public_state(&lock(&self.inner)),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }

    /// Changes the state under the lock, logs the transition, wakes the balancer.
    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let (from, to) = {
            let mut inner = lock(&self.inner);
            let from = Self::public_state(&inner);
            f(&mut inner);
            (from, Self::public_state(&inner))
        };
        if from != to {
            match &to {
                EndpointState::TransientFailure { .. } | EndpointState::NotServing => {
                    warn!(target = %self.target, endpoint = %self.addr, %from, %to, "endpoint state changed")
                }
                _ => {
                    info!(target = %self.target, endpoint = %self.addr, %from, %to, "endpoint state changed")
                }
            }
        }
        self.waker.wake();
    }

    /// Records a failed attempt or a lost connection (a removed endpoint stays draining).
    fn fail(&self, reason: String) {
        self.update(|inner| {
            inner.sender = None;
            if !matches!(inner.phase, Phase::Draining) {
                inner.phase = Phase::Failed(reason);
            }
        });
    }

    pub(crate) fn set_serving(&self, serving: bool) {
        self.update(|inner| inner.serving = serving);
    }

    /// Marks the endpoint removed from DNS: no new calls; its task drains and exits.
    pub(crate) fn remove(&self) {
        self.update(|inner| {
            inner.phase = Phase::Draining;
            inner.sender = None;
        });
        self.removed.send_replace(true);
    }

    fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        // The sender lives in `self`, so `wait_for` only ends when the flag is set.
        let _ = rx.wait_for(|removed| *removed).await;
    }

    /// A ready sender, or `None` (and the balancer's task is woken on the next change).
    fn poll_sender(&self, cx: &mut Context<'_>) -> Option<SendRequest<Body>> {
        self.waker.register(cx.waker());
        let mut inner = lock(&self.inner);
        if !(matches!(inner.phase, Phase::Connected) && inner.serving) {
            return None;
        }
        let sender = inner.sender.as_mut()?;
        match sender.poll_ready(cx) {
            Poll::Ready(Ok(())) => Some(sender.clone()),
            // Closed: the endpoint task sees the connection end and moves the state on.
            Poll::Ready(Err(_)) | Poll::Pending => None,
        }
    }
}

/// Counts a call as in flight until its response body is done (or the call failed).
#[derive(Debug)]
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        shared.calls.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The balancer's view of one endpoint: ready only while connected (and serving), never an
/// error from `poll_ready` (tower's balancer would drop the endpoint for good).
#[derive(Debug)]
pub(crate) struct Subchannel {
    shared: Arc<Shared>,
    ready: Option<SendRequest<Body>>,
}

impl Subchannel {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ready: None,
        }
    }
}

impl Load for Subchannel {
    type Metric = usize;

    fn load(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

/// Puts scheme and authority on a request whose URI holds only the path (hyper's HTTP/2
/// client needs an absolute URI; tonic clients send the path).
pub(crate) fn set_origin(request: &mut http::Request<Body>, authority: &Authority) {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

impl tower_service::Service<http::Request<Body>> for Subchannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = SubchannelFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = self.shared.poll_sender(cx);
        if self.ready.is_some() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, mut request: http::Request<Body>) -> SubchannelFuture {
        let addr = self.shared.addr;
        let Some(mut sender) = self.ready.take() else {
            return SubchannelFuture {
                addr,
                inner: None,
                guard: None,
            };
        };
        set_origin(&mut request, &self.shared.authority);
        let guard = InFlight::new(self.shared.clone());
        SubchannelFuture {
            addr,
            inner: Some(Box::pin(sender.send_request(request))),
            guard: Some(guard),
        }
    }
}

type HyperResponse = hyper::Result<http::Response<hyper::body::Incoming>>;

/// The response future of one call on one endpoint.
pub(crate) struct SubchannelFuture {
    addr: SocketAddr,
    inner: Option<Pin<Box<dyn Future<Output = HyperResponse> + Send>>>,
    guard: Option<InFlight>,
}

impl std::fmt::Debug for SubchannelFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubchannelFuture")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Future for SubchannelFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let addr = self.addr;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(Box::new(Status::unavailable(format!(
                "endpoint {addr} called while not ready"
            )))));
        };
        let result = std::task::ready!(inner.as_mut().poll(cx));
        let guard = self.guard.take();
        Poll::Ready(match result {
            Ok(response) => Ok(response.map(|body| {
                Body::new(CountedBody {
                    inner: body,
                    _guard: guard,
                })
            })),
            Err(error) => Err(Box::new(Status::unavailable(format!(
                "endpoint {addr}: {error}"
            )))),
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted as in flight until it is dropped.
    struct CountedBody {
        #[pin]
        inner: hyper::body::Incoming,
        _guard: Option<InFlight>,
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------------------
// The endpoint task.

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
                Ended::Closed { reason, lived } => {
                    // A connection that was up for a while reconnects at once (gRPC resets
                    // the backoff on READY); one that died young waits like a failed dial.
                    if lived >= Duration::from_secs(1) {
                        backoff.reset();
                        shared.fail(reason);
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
