//! The response future of [`JwtService`](super::JwtService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use crate::inner_or_ready::InnerOrReady;

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
        Decided { #[pin] future: InnerOrReady<F, B> },
        Validating { future: Boxed<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Decided {
                future: InnerOrReady::inner(future),
            },
        }
    }

    pub(crate) fn rejected(response: http::Response<B>) -> Self {
        Self {
            kind: Kind::Decided {
                future: InnerOrReady::ready(response),
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
            Kind::Decided {
                future: InnerOrReady::Inner { .. },
            } => "inner",
            Kind::Decided {
                future: InnerOrReady::Denied { .. },
            } => "rejected",
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
            KindProj::Decided { future } => future.poll(cx),
            KindProj::Validating { future } => future.as_mut().poll(cx),
        }
    }
}
