//! One call through the channel: fail-fast or wait-for-ready, the call's deadline, and
//! transparent retry of calls that never reached a server (gRFC A6).
//!
//! The fast path (channel READY, request body complete at once — every unary call) costs a
//! copy of the request head and one body allocation; everything else (waiting, retrying)
//! happens in a boxed future that only calls off the fast path pay for.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use tokio::time::{Instant, Sleep};
use tonic::{Status, body::Body};
use tower::buffer::Buffer;
use tower_service::Service;
use tracing::debug;

use super::{
    ChannelState, RetryPolicy,
    channel::Tasks,
    ctx::Ctx,
    endpoint::{ServedBy, SubchannelFuture},
    gate::BoxFuture,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies up to this size are kept for a transparent retry (grpc-go keeps 256 KiB).
const REPLAY_LIMIT: usize = 256 * 1024;
/// Re-dispatches of one call that never reached a server, before it fails UNAVAILABLE.
const MAX_TRANSPARENT_RETRIES: u32 = 8;

/// Per-call wait-for-ready, as a request extension (gRPC's `WaitForReady` call option).
///
/// Without it (and without [`BalancedChannelBuilder::wait_for_ready`]), a call fails
/// UNAVAILABLE at once while the channel is in TRANSIENT_FAILURE (every endpoint failed its
/// latest attempt, or DNS names none). With it, the call waits for a ready endpoint until its
/// own deadline. `WaitForReady(false)` on a call opts out of a channel-wide default.
///
/// ```
/// use mtls_tonic::balance::WaitForReady;
/// let mut request = tonic::Request::new(());
/// request.set_timeout(std::time::Duration::from_secs(5));
/// request.extensions_mut().insert(WaitForReady(true));
/// // or: let request = WaitForReady::on(request);
/// assert_eq!(request.extensions().get::<WaitForReady>(), Some(&WaitForReady(true)));
/// ```
///
/// [`BalancedChannelBuilder::wait_for_ready`]: crate::balance::BalancedChannelBuilder::wait_for_ready
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitForReady(pub bool);

impl WaitForReady {
    /// `request` with wait-for-ready on.
    pub fn on<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
        request.extensions_mut().insert(Self(true));
        request
    }
}

/// A call that did not reach any server application: safe to re-dispatch.
pub(crate) struct NotSent {
    reason: String,
    /// The request, when it came back unsent (a `Mutex` only to make the error `Sync`).
    request: Mutex<Option<http::Request<Body>>>,
}

impl NotSent {
    pub(crate) fn new(reason: String, request: Option<http::Request<Body>>) -> Self {
        Self {
            reason,
            request: Mutex::new(request),
        }
    }

    fn take_request(&self) -> Option<http::Request<Body>> {
        super::ctx::lock(&self.request).take()
    }
}

impl std::fmt::Debug for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotSent")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotSent {}

/// What a call needs to be sent again: its head and its whole body.
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

impl Replay {
    fn request(&self) -> http::Request<Body> {
        let mut request = http::Request::new(Body::new(ReplayBody {
            data: self.data.clone(),
            trailers: self.trailers.clone(),
            rest: None,
            error: None,
        }));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Takes what the body has ready at once (a unary call's whole message). Returns the
/// request to send first, and a replay copy when the body was complete and small enough.
fn prepare(request: http::Request<Body>) -> (http::Request<Body>, Option<Replay>) {
    let (parts, mut body) = request.into_parts();
    let mut cx = Context::from_waker(Waker::noop());
    let mut chunks: Vec<Bytes> = Vec::new();
    let (mut size, mut trailers, mut error, mut complete) = (0usize, None, None, false);
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    chunks.push(data);
                    if size > REPLAY_LIMIT {
                        break;
                    }
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    complete = true;
                    break;
                }
            },
            Poll::Ready(Some(Err(e))) => {
                error = Some(e);
                break;
            }
            Poll::Ready(None) => {
                complete = true;
                break;
            }
            // A streaming body waiting for the caller: send what we have, then the rest.
            Poll::Pending => break,
        }
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(size);
            for chunk in &chunks {
                all.extend_from_slice(chunk);
            }
            all.freeze()
        }
    };
    let replay = (complete && error.is_none()).then(|| Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        data: data.clone(),
        trailers: trailers.clone(),
    });
    let body = ReplayBody {
        data,
        trailers,
        rest: (!complete && error.is_none()).then_some(body),
        error: error.map(|e| Box::new(Status::from_error(e.into())) as BoxError),
    };
    (http::Request::from_parts(parts, Body::new(body)), replay)
}

pin_project_lite::pin_project! {
    /// A request body: the buffered data, then trailers, then (streaming) the rest.
    struct ReplayBody {
        data: Bytes,
        trailers: Option<http::HeaderMap>,
        #[pin]
        rest: Option<Body>,
        error: Option<BoxError>,
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if !this.data.is_empty() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(std::mem::take(this.data)))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        match this.rest.as_mut().as_pin_mut() {
            Some(rest) => rest.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
            && self.error.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }
}

/// Whether this call waits for a ready endpoint (its extension, else its method's service
/// config, else the channel default), and its retry policy.
fn call_options(request: &http::Request<Body>, ctx: &Ctx) -> (bool, Option<RetryPolicy>) {
    let method = ctx
        .retries
        .as_ref()
        .and_then(|r| r.lookup(request.uri().path()));
    let wfr = request
        .extensions()
        .get::<WaitForReady>()
        .map(|w| w.0)
        .or_else(|| method.and_then(|m| m.wait_for_ready))
        .unwrap_or(ctx.calls.wait_for_ready);
    (wfr, method.and_then(|m| m.retry_policy.clone()))
}

type BufferFuture =
    <Buffer<http::Request<Body>, BoxFuture> as Service<http::Request<Body>>>::Future;

enum Phase {
    /// Sent at once to the endpoint the call picked; a `NotSent` moves it to `Slow`.
    Direct {
        inner: SubchannelFuture,
        replay: Option<Replay>,
        wfr: bool,
    },
    /// Dispatched at once through the buffer's balancer; a `NotSent` moves it to `Slow`.
    Fast {
        inner: BufferFuture,
        replay: Option<Replay>,
        wfr: bool,
    },
    /// Waiting for a ready endpoint and/or re-dispatching.
    Slow(BoxFuture),
    /// Failed before dispatch.
    Failed(Option<Status>),
}

/// The response future of [`BalancedChannel`](super::BalancedChannel).
///
/// Fails DEADLINE_EXCEEDED at the call's `grpc-timeout`, naming each endpoint's state when
/// the call was still waiting for one; re-dispatches a call that never reached a server.
pub struct ResponseFuture {
    phase: Phase,
    tasks: Arc<Tasks>,
    started: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The channel's concurrency-limit permit, released with the response.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// gRFC A66's per-call metrics (nothing without the feature `metrics`).
    recorder: crate::metrics::CallRecorder,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl ResponseFuture {
    /// Starts a call: on an endpoint it picks itself when one is ready, else through
    /// `buffer` when the channel's `poll_ready` reserved a slot in it, else in the slow path.
    pub(crate) fn start(
        tasks: &Arc<Tasks>,
        buffer: Option<&mut Buffer<http::Request<Body>, BoxFuture>>,
        request: http::Request<Body>,
    ) -> Self {
        let started = Instant::now();
        let recorder =
            crate::metrics::CallRecorder::client_call(&tasks.ctx.labels, request.uri().path());
        let timeout = grpc_timeout(request.headers());
        let deadline = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let ctx = &tasks.ctx;
        let (wfr, policy) = call_options(&request, ctx);
        let phase = match ctx.state() {
            ChannelState::TransientFailure if !wfr => {
                Phase::Failed(Some(no_ready_endpoint(ctx, Duration::ZERO)))
            }
            state => {
                let (request, replay) = prepare(request);
                // READY and no retry policy: sent at once, on an endpoint the call picks or
                // through the buffer slot `poll_ready` reserved.
                let now = state == ChannelState::Ready && policy.is_none();
                match (now.then(|| ctx.pick()).flatten(), buffer.filter(|_| now)) {
                    (Some(ready), _) => Phase::Direct {
                        inner: ready.shared.dispatch_on(ready.sender, request),
                        replay,
                        wfr,
                    },
                    (None, Some(buffer)) => Phase::Fast {
                        inner: buffer.call(request),
                        replay,
                        wfr,
                    },
                    (None, None) => Phase::Slow(Box::pin(slow(
                        tasks.clone(),
                        Some(request),
                        replay,
                        Options {
                            wfr,
                            policy,
                            started,
                            deadline: timeout.map(|t| started + t),
                        },
                        0,
                    ))),
                }
            }
        };
        Self {
            phase,
            tasks: tasks.clone(),
            started,
            deadline,
            permit: None,
            recorder,
        }
    }

    /// Holds `permit` (the channel's concurrency limit) until the response.
    pub(crate) fn holding(mut self, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        self.permit = permit;
        self
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.as_mut().poll_call(cx));
        let recorder = &mut self.recorder;
        Poll::Ready(match result {
            Ok(response) => {
                recorder.headers(response.headers());
                #[cfg(feature = "metrics")]
                let response = {
                    let recorder =
                        std::mem::replace(recorder, crate::metrics::CallRecorder::unused());
                    response
                        .map(|body| Body::new(crate::metrics::CallMetricsBody::new(body, recorder)))
                };
                Ok(response)
            }
            Err(error) => {
                recorder.finish(crate::metrics::code_of_error(error.as_ref()));
                Err(error)
            }
        })
    }
}

impl ResponseFuture {
    /// The call, before the per-call metrics see its outcome.
    fn poll_call(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<http::Response<Body>, BoxError>> {
        let this = &mut *self;
        loop {
            let result = match &mut this.phase {
                Phase::Failed(status) => {
                    let status = status
                        .take()
                        .unwrap_or_else(|| Status::unavailable("call already failed"));
                    return Poll::Ready(Err(Box::new(status)));
                }
                Phase::Slow(inner) => match inner.as_mut().poll(cx) {
                    Poll::Ready(result) => return Poll::Ready(result),
                    Poll::Pending => break,
                },
                Phase::Direct { inner, .. } => match Pin::new(inner).poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => break,
                },
                Phase::Fast { inner, .. } => match Pin::new(inner).poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => break,
                },
            };
            let error = match result {
                Ok(response) => return Poll::Ready(Ok(response)),
                Err(error) => error,
            };
            let not_sent = match error.downcast::<NotSent>() {
                Ok(not_sent) => not_sent,
                Err(error) => return Poll::Ready(Err(error)),
            };
            let (Phase::Direct { replay, wfr, .. } | Phase::Fast { replay, wfr, .. }) =
                std::mem::replace(&mut this.phase, Phase::Failed(None))
            else {
                unreachable!("only the direct and fast phases get here")
            };
            debug!(target = %this.tasks.ctx.target, reason = %not_sent, "call not sent: re-dispatching");
            let deadline = this.deadline.as_ref().map(|d| d.deadline());
            this.phase = Phase::Slow(Box::pin(slow(
                this.tasks.clone(),
                not_sent.take_request(),
                replay,
                Options {
                    wfr,
                    policy: None,
                    started: this.started,
                    deadline,
                },
                1,
            )));
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let ctx = &this.tasks.ctx;
            let waited = this.started.elapsed();
            let message = if ctx.state() == ChannelState::Ready {
                format!(
                    "deadline exceeded after {:.1}s before a response from {}",
                    waited.as_secs_f64(),
                    ctx.target
                )
            } else {
                format!(
                    "deadline exceeded after {:.1}s waiting for a ready endpoint for {}: {}",
                    waited.as_secs_f64(),
                    ctx.target,
                    ctx.summary()
                )
            };
            return Poll::Ready(Err(Box::new(Status::deadline_exceeded(message))));
        }
        Poll::Pending
    }
}

/// The UNAVAILABLE a call gets when no endpoint is ready for it.
fn no_ready_endpoint(ctx: &Ctx, waited: Duration) -> Status {
    let message = format!(
        "no ready endpoint for {} (waited {:.1}s): {}",
        ctx.target,
        waited.as_secs_f64(),
        ctx.summary()
    );
    debug!(target = %ctx.target, %message, "failing call");
    Status::unavailable(message)
}

/// Waits for a ready endpoint as the call's options say: fails at once in TRANSIENT_FAILURE
/// (unless wait-for-ready), and after the ready timeout while connecting.
async fn wait_ready(ctx: &Ctx, wfr: bool, started: Instant) -> Result<(), Status> {
    let mut rx = ctx.watch_state();
    let bound = match (wfr, ctx.calls.ready_timeout) {
        (false, Some(timeout)) => Some(started + timeout),
        _ => None,
    };
    loop {
        let state = *rx.borrow_and_update();
        match state {
            ChannelState::Ready => return Ok(()),
            ChannelState::TransientFailure if !wfr => {
                return Err(no_ready_endpoint(ctx, started.elapsed()));
            }
            _ => {}
        }
        let changed = match bound {
            Some(at) => tokio::select! {
                changed = rx.changed() => changed,
                () = tokio::time::sleep_until(at) => return Err(no_ready_endpoint(ctx, started.elapsed())),
            },
            None => rx.changed().await,
        };
        if changed.is_err() {
            return Err(Status::unavailable(format!(
                "channel to {} is shut down",
                ctx.target
            )));
        }
    }
}

/// How one call waits and retries.
struct Options {
    wfr: bool,
    policy: Option<RetryPolicy>,
    started: Instant,
    deadline: Option<Instant>,
}

/// The slow path: wait for readiness, dispatch, re-dispatch what never reached a server,
/// and retry by the call's policy.
async fn slow(
    tasks: Arc<Tasks>,
    mut request: Option<http::Request<Body>>,
    replay: Option<Replay>,
    options: Options,
    mut transparent: u32,
) -> Result<http::Response<Body>, BoxError> {
    let ctx = &tasks.ctx;
    let mut retries = crate::metrics::CallRetries::new(&ctx.target, transparent);
    let mut attempts = 1u32;
    let mut avoid: Vec<std::net::SocketAddr> = Vec::new();
    loop {
        wait_ready(ctx, options.wfr, options.started).await?;
        let Some(mut attempt) = request
            .take()
            .or_else(|| replay.as_ref().map(Replay::request))
        else {
            return Err(Box::new(Status::unavailable(format!(
                "call to {} was not sent and cannot be replayed (streaming body)",
                ctx.target
            ))));
        };
        if attempts > 1 {
            let headers = attempt.headers_mut();
            headers.insert("grpc-previous-rpc-attempts", (attempts - 1).into());
            if let Some(deadline) = options.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
                if let Ok(value) = http::HeaderValue::try_from(format!("{millis}m")) {
                    headers.insert("grpc-timeout", value);
                }
            }
        }
        let result = match (!avoid.is_empty())
            .then(|| ctx.pick_avoiding(&avoid))
            .flatten()
        {
            Some(endpoint) => match endpoint.try_call(attempt) {
                Ok(future) => future.await,
                Err(attempt) => via_buffer(&tasks, attempt).await,
            },
            None => via_buffer(&tasks, attempt).await,
        };
        let (code, served_by, pushback) = match &result {
            Ok(response) => (
                response
                    .headers()
                    .get("grpc-status")
                    .map(|v| tonic::Code::from_bytes(v.as_bytes())),
                response.extensions().get::<ServedBy>().map(|s| s.0),
                pushback(response.headers()),
            ),
            Err(error) => {
                if let Some(not_sent) = error.downcast_ref::<NotSent>() {
                    transparent += 1;
                    retries.transparent = transparent;
                    if transparent > MAX_TRANSPARENT_RETRIES {
                        return Err(Box::new(Status::unavailable(format!(
                            "call to {} not sent after {transparent} attempts: {not_sent}",
                            ctx.target
                        ))));
                    }
                    debug!(target = %ctx.target, reason = %not_sent, transparent, "call not sent: re-dispatching");
                    request = not_sent.take_request();
                    continue;
                }
                (error.downcast_ref::<Status>().map(Status::code), None, None)
            }
        };
        let Some(policy) = &options.policy else {
            return result;
        };
        let throttle = ctx.retries.as_ref().and_then(|r| r.throttle.as_ref());
        let failed = code.is_some_and(|c| c != tonic::Code::Ok);
        if !failed {
            if let Some(throttle) = throttle {
                throttle.success();
            }
            return result;
        }
        let code = code.unwrap_or(tonic::Code::Unknown);
        if !policy.retries(code) {
            return result;
        }
        if let Some(throttle) = throttle {
            throttle.failure();
        }
        let throttled = throttle.is_some_and(|t| !t.allows_retry());
        let delay = match pushback {
            Some(Some(delay)) => delay,
            Some(None) => return result,
            None => policy.delay(attempts),
        };
        let late = options
            .deadline
            .is_some_and(|deadline| Instant::now() + delay >= deadline);
        if attempts >= policy.max_attempts() || throttled || replay.is_none() || late {
            debug!(target = %ctx.target, ?code, attempts, throttled, "not retrying");
            return result;
        }
        debug!(target = %ctx.target, ?code, attempts, ?delay, "retrying by policy");
        drop(result);
        tokio::time::sleep(delay).await;
        attempts += 1;
        retries.policy = attempts - 1;
        if let Some(addr) = served_by {
            avoid.push(addr);
        }
    }
}

/// One dispatch through the channel's buffer and balancer.
async fn via_buffer(
    tasks: &Tasks,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let mut buffer = tasks.buffer.clone();
    std::future::poll_fn(|cx| buffer.poll_ready(cx)).await?;
    buffer.call(request).await
}

/// `grpc-retry-pushback-ms`: `Some(Some(delay))` to wait, `Some(None)` not to retry (a
/// negative or malformed value), `None` when absent.
fn pushback(headers: &http::HeaderMap) -> Option<Option<Duration>> {
    let value = headers.get("grpc-retry-pushback-ms")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis),
    )
}

/// Parses a `grpc-timeout` header (`<digits><unit>`, gRPC over HTTP/2 spec).
pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn parses_grpc_timeout() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&headers), None);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_millis(250)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3S"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_secs(3)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3x"));
        assert_eq!(grpc_timeout(&headers), None);
    }

    #[tokio::test]
    async fn complete_body_is_kept_for_replay() {
        let request = http::Request::builder()
            .uri("/pkg.Svc/Method")
            .header("te", "trailers")
            .body(Body::new(http_body_util::Full::new(Bytes::from_static(
                b"hello",
            ))))
            .unwrap();
        let (first, replay) = prepare(request);
        let replay = replay.expect("a complete body is replayable");
        let again = replay.request();
        assert_eq!(again.uri(), "/pkg.Svc/Method");
        assert_eq!(again.headers()["te"], "trailers");
        for body in [first.into_body(), again.into_body()] {
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"hello");
        }
    }

    #[tokio::test]
    async fn streaming_body_is_sent_whole_but_not_replayable() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Status>>(4);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let request = http::Request::new(Body::new(body));
        let (first, replay) = prepare(request);
        assert!(replay.is_none());
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"b"))))
            .await
            .unwrap();
        drop(tx);
        let bytes = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ab");
    }
}
