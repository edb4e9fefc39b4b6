//! The response future of [`JwtService`](super::JwtService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<http::Response<B>, E>> + Send>>;

/// Validation (which may fetch a JWKS) followed by the inner call, or an immediate rejection.
pub struct ResponseFuture<B, E> {
    inner: Boxed<B, E>,
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }

    pub(crate) fn rejected(response: http::Response<B>) -> Self
    where
        B: Send + 'static,
        E: Send + 'static,
    {
        Self {
            inner: Box::pin(std::future::ready(Ok(response))),
        }
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<http::Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
