//! The service behind the channel's buffer: never lets a call sit in front of a balancer
//! with no ready endpoint. When the balancer is not ready and the channel is not READY, the
//! head call is handed back unsent ([`NotSent`]), and its [`ResponseFuture`] waits or fails
//! by its own options (fail-fast or wait-for-ready, its deadline).
//!
//! [`ResponseFuture`]: super::ResponseFuture

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower_service::Service;

use super::{ChannelState, call::NotSent, ctx::Ctx};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// Wraps the balancer.
pub(crate) struct ReadyGate<S> {
    inner: S,
    ctx: Arc<Ctx>,
    bounce: bool,
}

impl<S> ReadyGate<S> {
    pub(crate) fn new(inner: S, ctx: Arc<Ctx>) -> Self {
        Self {
            inner,
            ctx,
            bounce: false,
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
                self.bounce = false;
                Poll::Ready(result)
            }
            // Endpoints are ready but busy (e.g. at their stream limit): wait.
            Poll::Pending if self.ctx.state() == ChannelState::Ready => Poll::Pending,
            Poll::Pending => {
                self.bounce = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        if std::mem::take(&mut self.bounce) {
            let not_sent = NotSent::new("no ready endpoint".to_owned(), Some(request));
            return Box::pin(std::future::ready(Err(Box::new(not_sent) as BoxError)));
        }
        // Already boxed by the type-erased balancer: no second allocation per call.
        self.inner.call(request)
    }
}
