//! One endpoint's shared state (connection, readiness, in-flight count) and the `Service`
//! the balancer sees; the task that drives it is in `connection.rs`.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};

use crate::metrics::CallRecorder;
use futures_util::task::AtomicWaker;
use http::uri::Authority;
use hyper::client::conn::http2::SendRequest;
use tokio::sync::{Notify, watch};
use tonic::{Status, body::Body};
use tower::load::Load;
use tracing::{info, warn};

use super::{
    EndpointInfo, EndpointState, OutlierDetection,
    call::NotSent,
    ctx::{Ctx, lock},
    outlier,
};

/// Calls that ended on this endpoint, for outlier detection.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) consecutive: AtomicU32,
}

/// The endpoint that served a call of a [`BalancedChannel`](crate::balance::BalancedChannel): a
/// response extension on every response it returns (the last attempt's endpoint when the
/// call was retried). tonic keeps response extensions, so a generated client reads it with
/// `response.extensions().get::<ServedBy>()`.
///
/// ```no_run
/// # async fn f(channel: mtls_tonic::balance::BalancedChannel) -> Result<(), tonic::Status> {
/// use mtls_tonic::balance::ServedBy;
/// use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
/// let response = HealthClient::new(channel).check(HealthCheckRequest::default()).await?;
/// if let Some(ServedBy(addr)) = response.extensions().get::<ServedBy>() {
///     println!("served by {addr}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServedBy(pub SocketAddr);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub(super) enum Phase {
    Connecting,
    Connected,
    Failed(String),
    /// The latest attempt was refused at the TLS layer (either side's verifier).
    Refused(String),
    Draining,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) phase: Phase,
    pub(super) serving: bool,
    pub(super) sender: Option<SendRequest<Body>>,
    /// Failed since it was last ready (gRPC's sticky TRANSIENT_FAILURE for aggregation).
    pub(super) failed: bool,
    /// Why the latest attempt or connection failed (kept while reconnecting).
    pub(super) last_error: Option<String>,
    /// Kept after an empty DNS answer: since when DNS no longer names it.
    pub(super) not_in_dns_since: Option<SystemTime>,
    /// Ejected by outlier detection: why.
    pub(super) ejected: Option<String>,
    /// Recent ejections (the next one lasts this many + 1 base times).
    pub(super) ejections: u32,
}

impl Inner {
    /// Whether calls may be sent here: connected, serving and not ejected.
    fn takes_calls(&self) -> bool {
        matches!(self.phase, Phase::Connected) && self.serving && self.ejected.is_none()
    }
}

/// What the endpoint task, the balancer's service and introspection share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    /// This endpoint's own connector and TLS server name (discovery gave them), else the
    /// channel's.
    pub(crate) dial: Option<(
        crate::client::MtlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    target: String,
    /// The `grpc.target` label of the per-attempt metrics.
    labels: crate::metrics::ClientLabels,
    authority: Authority,
    ctx: Weak<Ctx>,
    /// Consecutive failures that eject (outlier detection on).
    eject_after: Option<u32>,
    pub(crate) outcomes: Outcomes,
    pub(super) inner: Mutex<Inner>,
    waker: AtomicWaker,
    pub(super) in_flight: AtomicUsize,
    calls: AtomicU64,
    removed: watch::Sender<bool>,
    pub(super) idle: Notify,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr, ctx: &Arc<Ctx>) -> Arc<Self> {
        Self::with_dial(addr, ctx, None)
    }

    /// An endpoint dialed with its own connector and server name.
    pub(crate) fn with_dial(
        addr: SocketAddr,
        ctx: &Arc<Ctx>,
        dial: Option<(
            crate::client::MtlsConnector,
            rustls_pki_types::ServerName<'static>,
        )>,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            dial,
            target: ctx.target.to_string(),
            labels: ctx.labels.clone(),
            authority: ctx.authority.clone(),
            ctx: Arc::downgrade(ctx),
            eject_after: ctx.outlier.as_ref().and_then(|o| o.consecutive_failures),
            outcomes: Outcomes::default(),
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                serving: true,
                sender: None,
                failed: false,
                last_error: None,
                not_in_dns_since: None,
                ejected: None,
                ejections: 0,
            }),
            waker: AtomicWaker::new(),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            removed: watch::Sender::new(false),
            idle: Notify::new(),
        })
        .counted()
    }

    /// Counts the new endpoint in `mtls.balancer.endpoints` (connecting).
    fn counted(self: Arc<Self>) -> Arc<Self> {
        crate::metrics::endpoint_state(&self.target, None, Some(&EndpointState::Connecting));
        self
    }

    fn public_state(inner: &Inner) -> EndpointState {
        if let Some(reason) = &inner.ejected
            && !matches!(inner.phase, Phase::Draining)
        {
            return EndpointState::Ejected {
                reason: reason.clone(),
            };
        }
        match &inner.phase {
            Phase::Connecting => EndpointState::Connecting,
            Phase::Connected if inner.serving => EndpointState::Ready,
            Phase::Connected => EndpointState::NotServing,
            Phase::Failed(reason) => EndpointState::TransientFailure {
                reason: reason.clone(),
            },
            Phase::Refused(reason) => EndpointState::Refused {
                reason: reason.clone(),
            },
            Phase::Draining => EndpointState::Draining,
        }
    }

    /// Uncounts the endpoint from `mtls.balancer.endpoints` (it is gone).
    pub(crate) fn uncount(&self) {
        let state = Self::public_state(&lock(&self.inner));
        crate::metrics::endpoint_state(&self.target, Some(&state), None);
    }

    pub(crate) fn info(&self) -> EndpointInfo {
        let inner = lock(&self.inner);
        EndpointInfo {
            addr: self.addr,
            state: Self::public_state(&inner),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            not_in_dns_since: inner.not_in_dns_since,
        }
    }

    /// (ready, failed since last ready or not serving, draining) for the channel state.
    pub(crate) fn health(&self) -> (bool, bool, bool) {
        let inner = lock(&self.inner);
        let ready = inner.takes_calls();
        let failed = inner.failed
            || inner.ejected.is_some()
            || matches!(inner.phase, Phase::Failed(_) | Phase::Refused(_))
            || (matches!(inner.phase, Phase::Connected) && !inner.serving);
        (ready, failed, matches!(inner.phase, Phase::Draining))
    }

    pub(crate) fn is_draining(&self) -> bool {
        matches!(lock(&self.inner).phase, Phase::Draining)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        lock(&self.inner).ejected.is_some()
    }

    /// Ejects for `base × (recent ejections + 1)`, capped; returns for how long.
    pub(crate) fn eject(&self, detection: &OutlierDetection, why: &str) -> std::time::Duration {
        let mut duration = std::time::Duration::ZERO;
        self.update(|inner| {
            inner.ejections = inner.ejections.saturating_add(1);
            duration = detection
                .base_ejection_time
                .saturating_mul(inner.ejections)
                .min(
                    detection
                        .max_ejection_time
                        .max(detection.base_ejection_time),
                );
            inner.ejected = Some(format!("{why}; for {:.1}s", duration.as_secs_f64()));
        });
        self.outcomes.consecutive.store(0, Ordering::Relaxed);
        duration
    }

    pub(crate) fn uneject(&self) {
        let was = lock(&self.inner).ejected.is_some();
        self.update(|inner| inner.ejected = None);
        if was {
            info!(target = %self.target, endpoint = %self.addr, "endpoint back from ejection");
        }
    }

    /// One interval without ejection lowers the multiplier of the next ejection.
    pub(crate) fn decay_ejections(&self) {
        let mut inner = lock(&self.inner);
        if inner.ejected.is_none() && inner.ejections > 0 {
            inner.ejections -= 1;
        }
    }

    /// A finished call: outlier detection's count, ejection on too many failures in a row.
    pub(crate) fn record(self: &Arc<Self>, failed: bool) {
        let Some(limit) = self.eject_after else {
            return;
        };
        if outlier::count(self, failed) >= limit
            && let Some(ctx) = self.ctx.upgrade()
        {
            outlier::consecutive_limit(&ctx, self);
        }
    }

    /// Sends `request` here at once if the endpoint is ready (a retry avoiding the endpoints
    /// that failed this call); gives the request back otherwise.
    #[expect(
        clippy::result_large_err,
        reason = "the request goes back unboxed, as in hyper's own TrySendError"
    )]
    pub(crate) fn try_call(
        self: &Arc<Self>,
        request: http::Request<Body>,
    ) -> Result<SubchannelFuture, http::Request<Body>> {
        match self.ready_sender() {
            Some(sender) => Ok(self.dispatch_on(sender, request)),
            None => Err(request),
        }
    }

    /// A sender on this endpoint's connection while calls may be sent to it (connected,
    /// serving, not ejected, the connection open).
    pub(crate) fn ready_sender(&self) -> Option<SendRequest<Body>> {
        let inner = lock(&self.inner);
        inner
            .sender
            .as_ref()
            .filter(|sender| inner.takes_calls() && sender.is_ready())
            .cloned()
    }

    /// Sends `request` on `sender` (a sender of this endpoint's connection).
    pub(crate) fn dispatch_on(
        self: &Arc<Self>,
        sender: SendRequest<Body>,
        request: http::Request<Body>,
    ) -> SubchannelFuture {
        let mut subchannel = Subchannel::new(self.clone());
        subchannel.ready = Some(sender);
        subchannel.dispatch(request)
    }

    /// Whether this endpoint is only kept because of the empty-answer grace.
    pub(crate) fn not_in_dns_since(&self) -> Option<SystemTime> {
        lock(&self.inner).not_in_dns_since
    }

    /// Marks the endpoint kept-but-not-in-DNS (`Some`) or named by DNS again (`None`).
    pub(crate) fn set_not_in_dns(&self, since: Option<SystemTime>) {
        self.update(|inner| inner.not_in_dns_since = since);
    }

    /// Whether calls may be sent to it now.
    pub(crate) fn is_ready(&self) -> bool {
        self.health().0
    }

    /// Changes the state under the lock, logs the transition, wakes the balancer.
    pub(super) fn update(&self, f: impl FnOnce(&mut Inner)) {
        let (from, to) = {
            let mut inner = lock(&self.inner);
            let from = Self::public_state(&inner);
            f(&mut inner);
            (from, Self::public_state(&inner))
        };
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.recompute_state();
        }
        if from != to {
            crate::metrics::endpoint_state(&self.target, Some(&from), Some(&to));
            match &to {
                EndpointState::TransientFailure { .. }
                | EndpointState::Refused { .. }
                | EndpointState::NotServing => {
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
    pub(super) fn fail(&self, reason: String) {
        self.update(|inner| {
            inner.sender = None;
            inner.failed = true;
            inner.last_error = Some(reason.clone());
            if !matches!(inner.phase, Phase::Draining) {
                inner.phase = Phase::Failed(reason);
            }
        });
    }

    /// Records an attempt refused at the TLS layer: the server's alert, or our verifier's
    /// reason for refusing the server (a removed endpoint stays draining).
    pub(super) fn refuse(&self, reason: String) {
        self.update(|inner| {
            inner.sender = None;
            inner.failed = true;
            inner.last_error = Some(reason.clone());
            if !matches!(inner.phase, Phase::Draining) {
                inner.phase = Phase::Refused(reason);
            }
        });
    }

    /// A connection that was ready ended (or its server said GOAWAY): reconnecting, which is
    /// not a failure (gRPC goes READY -> IDLE -> CONNECTING).
    pub(super) fn lost(&self, reason: String) {
        self.update(|inner| {
            inner.sender = None;
            inner.last_error = Some(reason);
            if matches!(inner.phase, Phase::Connected) {
                inner.phase = Phase::Connecting;
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

    pub(super) fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    pub(super) async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        // The sender lives in `self`, so `wait_for` only ends when the flag is set.
        let _ = rx.wait_for(|removed| *removed).await;
    }

    /// A ready sender, or `None` (and the balancer's task is woken on the next change).
    fn poll_sender(&self, cx: &mut Context<'_>) -> Option<SendRequest<Body>> {
        self.waker.register(cx.waker());
        let mut inner = lock(&self.inner);
        if !inner.takes_calls() {
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

    fn call(&mut self, request: http::Request<Body>) -> SubchannelFuture {
        self.dispatch(request)
    }
}

impl Subchannel {
    fn dispatch(&mut self, mut request: http::Request<Body>) -> SubchannelFuture {
        let addr = self.shared.addr;
        let Some(mut sender) = self.ready.take() else {
            return SubchannelFuture {
                addr,
                inner: None,
                guard: None,
                attempt: CallRecorder::unused(),
            };
        };
        let attempt = CallRecorder::client_attempt(&self.shared.labels, request.uri().path());
        set_origin(&mut request, &self.shared.authority);
        let guard = InFlight::new(self.shared.clone());
        SubchannelFuture {
            addr,
            inner: Some(Box::pin(sender.try_send_request(request))),
            guard: Some(guard),
            attempt,
        }
    }
}

type HyperResponse = Result<
    http::Response<hyper::body::Incoming>,
    hyper::client::conn::TrySendError<http::Request<Body>>,
>;

/// The response future of one call on one endpoint.
pub(crate) struct SubchannelFuture {
    addr: SocketAddr,
    inner: Option<Pin<Box<dyn Future<Output = HyperResponse> + Send>>>,
    guard: Option<InFlight>,
    /// gRFC A66's per-attempt metrics (nothing without the feature `metrics`).
    attempt: CallRecorder,
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
        let mut attempt = std::mem::replace(&mut self.attempt, CallRecorder::unused());
        Poll::Ready(match result {
            Ok(response) => {
                attempt.headers(response.headers());
                // A trailers-only response carries its status in the headers.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .map(|v| tonic::Code::from_bytes(v.as_bytes()));
                if let (Some(code), Some(guard)) = (code, &guard) {
                    guard.0.record(outlier::is_failure(code));
                }
                let mut response = response.map(|body| {
                    Body::new(CountedBody {
                        inner: body,
                        guard,
                        recorded: code.is_some(),
                        attempt,
                    })
                });
                response.extensions_mut().insert(ServedBy(addr));
                Ok(response)
            }
            Err(error) => {
                let (error, going_away, sent) = classify(addr, error);
                // Not sent (a transparent retry follows): UNAVAILABLE, as gRPC records it.
                attempt.finish(crate::metrics::code_of_error(error.as_ref()));
                if let Some(guard) = &guard {
                    if going_away {
                        // No new streams on this connection: stop picking it until it reconnects.
                        guard.0.lost("server sent GOAWAY".to_owned());
                    }
                    if sent {
                        guard.0.record(true);
                    }
                }
                Err(error)
            }
        })
    }
}

/// A failed send as the caller's error: [`NotSent`] (safe to re-dispatch: the server
/// application never saw it) when hyper gave the request back, h2 refused to open the stream
/// after a GOAWAY, the stream was above the GOAWAY's last-stream-id, or the server answered
/// REFUSED_STREAM; otherwise UNAVAILABLE with the whole cause chain (the call may have
/// reached the server). Also: whether the server is going away, and whether the call
/// counts as the endpoint's failure.
fn classify(
    addr: SocketAddr,
    mut error: hyper::client::conn::TrySendError<http::Request<Body>>,
) -> (BoxError, bool, bool) {
    let reason = error_chain(error.error());
    if let Some(request) = error.take_message() {
        let not_sent = NotSent::new(format!("endpoint {addr}: {reason}"), Some(request));
        return (Box::new(not_sent), false, false);
    }
    let h2 = std::error::Error::source(error.error()).and_then(|e| e.downcast_ref::<h2::Error>());
    if let Some(h2) = h2 {
        let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM) && h2.is_remote();
        let go_away = h2.is_go_away() && h2.is_remote();
        if refused || go_away {
            let not_sent = NotSent::new(format!("endpoint {addr}: {reason}"), None);
            return (Box::new(not_sent), go_away, false);
        }
    }
    let status = Status::unavailable(format!("endpoint {addr}: {reason}"));
    (Box::new(status), false, true)
}

/// An error and its sources, `: `-joined ("operation was canceled: connection closed").
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.ends_with(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    reason
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call counted as in flight until it is dropped.
    struct CountedBody {
        #[pin]
        inner: hyper::body::Incoming,
        guard: Option<InFlight>,
        recorded: bool,
        attempt: CallRecorder,
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        this.attempt.frame(frame.as_ref());
        if !*this.recorded
            && let Some(guard) = this.guard.as_ref()
        {
            let failed = match &frame {
                Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                    trailers
                        .get("grpc-status")
                        .is_some_and(|v| outlier::is_failure(tonic::Code::from_bytes(v.as_bytes())))
                }),
                Some(Err(_)) => Some(true),
                None => None,
            };
            if let Some(failed) = failed {
                *this.recorded = true;
                guard.0.record(failed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
