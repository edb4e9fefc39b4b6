//! The response future of [`JwtService`](super::JwtService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<http::Response<B>, E>> + Send>>;

pin_project_lite::pin_project! {
    /// The inner service's future (no token needed, or a token decided without waiting: a
    /// verified-token cache hit), an immediate rejection, or — only when validation has to
    /// wait or verify a signature — validation followed by the inner call.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Inner { #[pin] future: F },
        Rejected { response: Option<http::Response<B>> },
        Validating { future: Boxed<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(response: http::Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn validating(
        future: impl Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Validating {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Rejected { .. } => "rejected",
            Kind::Validating { .. } => "validating",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            KindProj::Validating { future } => future.as_mut().poll(cx),
        }
    }
}
