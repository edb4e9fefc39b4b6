//! The response future of [`AuthzService`](super::AuthzService).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::inner_or_ready::InnerOrReady;

pin_project_lite::pin_project! {
    /// Either the inner service's future or an immediate denial.
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: InnerOrReady<F, B>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: InnerOrReady::inner(future),
        }
    }

    pub(crate) fn denied(response: http::Response<B>) -> Self {
        Self {
            kind: InnerOrReady::ready(response),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().kind.poll(cx)
    }
}
