//! Fail-fast readiness: when no endpoint has been ready for `bound`, calls fail with
//! UNAVAILABLE at once instead of queueing forever (gRPC's TRANSIENT_FAILURE behaviour).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tonic::{Status, body::Body};
use tower_service::Service;
use tracing::debug;

use super::ctx::Ctx;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// Wraps the balancer. `bound = None` waits for readiness without limit (wait-for-ready).
pub(crate) struct ReadyGate<S> {
    inner: S,
    ctx: Arc<Ctx>,
    bound: Option<Duration>,
    not_ready_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    failing: bool,
}

impl<S> ReadyGate<S> {
    pub(crate) fn new(inner: S, ctx: Arc<Ctx>, bound: Option<Duration>) -> Self {
        Self {
            inner,
            ctx,
            bound,
            not_ready_since: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            failing: false,
        }
    }
}

impl<S> Service<http::Request<Body>> for ReadyGate<S>
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = BoxError,
            Future = BoxFuture,
        >,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.not_ready_since = None;
                self.failing = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some(bound) = self.bound else {
                    return Poll::Pending;
                };
                if self.failing {
                    return Poll::Ready(Ok(()));
                }
                let now = Instant::now();
                let since = *self.not_ready_since.get_or_insert(now);
                let deadline = since + bound;
                if now >= deadline {
                    self.failing = true;
                    return Poll::Ready(Ok(()));
                }
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.failing = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        if self.failing {
            let waited = self
                .not_ready_since
                .map(|t| t.elapsed())
                .unwrap_or_default();
            let message = format!(
                "no ready endpoint for {} (waited {waited:.1?}): {}",
                self.ctx.target,
                self.ctx.summary()
            );
            debug!(target = %self.ctx.target, %message, "failing call fast");
            return Box::pin(std::future::ready(Err(
                Box::new(Status::unavailable(message)) as BoxError,
            )));
        }
        // Already boxed by the type-erased balancer: no second allocation per call.
        self.inner.call(request)
    }
}
