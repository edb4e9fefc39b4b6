//! Per-method SPIFFE/SAN authorization of the verified peer (tower middleware).

mod error;
mod future;
mod layer;
mod policy;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

pub use error::AuthzError;
pub use future::ResponseFuture;
pub use layer::AuthzLayer;
pub use policy::MethodPolicy;
use tower_service::Service;
use tracing::warn;

use crate::PeerIdentityExt;

/// Checks each request's peer (from [`MtlsIncoming`](crate::MtlsIncoming)) against a
/// [`MethodPolicy`] for the request's gRPC method. Denied calls get a trailers-only
/// PERMISSION_DENIED (UNAUTHENTICATED when there is no authenticated peer) naming peer and
/// method; the inner service never sees them.
#[derive(Clone, Debug)]
pub struct AuthzService<S> {
    inner: S,
    policy: Arc<MethodPolicy>,
}

impl<S> AuthzService<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: impl Into<Arc<MethodPolicy>>) -> Self {
        Self {
            inner,
            policy: policy.into(),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthzService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self
            .policy
            .check(request.uri().path(), request.peer_identity())
        {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(denied) => {
                warn!(%denied, "call denied");
                ResponseFuture::denied(denied.to_status().into_http())
            }
        }
    }
}
