//! Per-method SPIFFE/SAN authorization of the verified peer (tower middleware): the
//! [`AuthzLayer`] over a [`MethodPolicy`], its [`AuthzService`], [`ResponseFuture`] and
//! [`AuthzError`].
//!
//! ```
//! use mtls_core::Authorize;
//! use mtls_tonic::authz::{AuthzLayer, MethodPolicy};
//! let policy = MethodPolicy::deny_by_default()
//!     .allow("grpc.health.v1.Health/*", Authorize::any())?
//!     .allow("bookstore.Bookstore/*", Authorize::exact("spiffe://example.org/web".parse()?))?;
//! let _layer = AuthzLayer::new(policy); // tonic::transport::Server::builder().layer(_layer)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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

use crate::{PeerIdentityExt, denial::Denials, metrics::AuthzCounters};

/// Checks each request's peer (from [`MtlsIncoming`](crate::server::MtlsIncoming)) against a
/// [`MethodPolicy`] for the request's gRPC method. Denied calls get a trailers-only
/// PERMISSION_DENIED (UNAUTHENTICATED when there is no authenticated peer) naming peer and
/// method but not the policy ([`AuthzError::to_status`]); the log has the whole detail
/// (rate-limited); the inner service never sees them.
#[derive(Clone, Debug)]
pub struct AuthzService<S> {
    inner: S,
    policy: Arc<MethodPolicy>,
    denials: Arc<Denials>,
    counters: Arc<AuthzCounters>,
}

impl<S> AuthzService<S> {
    /// Wraps `inner` with `policy` (terse denials; [`AuthzLayer::detailed_denials`] for
    /// the detailed ones).
    pub fn new(inner: S, policy: impl Into<Arc<MethodPolicy>>) -> Self {
        Self::with_denials(
            inner,
            policy.into(),
            Arc::new(Denials::new(false)),
            Arc::default(),
        )
    }

    pub(crate) fn with_denials(
        inner: S,
        policy: Arc<MethodPolicy>,
        denials: Arc<Denials>,
        counters: Arc<AuthzCounters>,
    ) -> Self {
        Self {
            inner,
            policy,
            denials,
            counters,
        }
    }
}

crate::inner_service_accessors!(AuthzService<S>);

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
        let verdict = self
            .policy
            .check(request.uri().path(), request.peer_identity());
        crate::metrics::authz(
            &self.counters,
            &self.policy,
            request.uri().path(),
            verdict.is_ok(),
        );
        match verdict {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(denied) => {
                if let Some(unlogged) = self.denials.log_line() {
                    warn!(reason = %denied, unlogged_since_last_line = unlogged, "call denied");
                }
                let status = if self.denials.detailed() {
                    denied.to_detailed_status()
                } else {
                    denied.to_status()
                };
                ResponseFuture::denied(status.into_http())
            }
        }
    }
}
