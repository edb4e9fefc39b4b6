//! The state both middleware response futures share: the inner service's future, or a
//! response decided without calling it (authz's denial, the JWT layer's rejection).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// The inner service's future, or a response ready now (returned once).
    #[project = InnerOrReadyProj]
    #[derive(Debug)]
    pub(crate) enum InnerOrReady<F, B> {
        Inner { #[pin] future: F },
        Denied { response: Option<http::Response<B>> },
    }
}

impl<F, B> InnerOrReady<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self::Inner { future }
    }

    pub(crate) fn ready(response: http::Response<B>) -> Self {
        Self::Denied {
            response: Some(response),
        }
    }
}

impl<F, B, E> Future for InnerOrReady<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InnerOrReadyProj::Inner { future } => future.poll(cx),
            InnerOrReadyProj::Denied { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}
