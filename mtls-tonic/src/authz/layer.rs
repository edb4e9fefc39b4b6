//! The layer for [`AuthzService`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{AuthzService, MethodPolicy};
use crate::{denial::Denials, metrics::AuthzCounters};

/// Applies [`AuthzService`] with a shared [`MethodPolicy`], e.g. in
/// `tonic::transport::Server::builder().layer(AuthzLayer::new(policy))`.
///
/// A denied caller learns the code and who was refused for which method
/// (`peer spiffe://example.org/sa/intruder may not call /pkg.Svc/Method`), not the
/// allow-list; the server logs the whole detail at `warn` (a few lines per second at
/// most, the rest counted on the next line). [`AuthzLayer::detailed_denials`] sends the
/// detail to callers too, for development.
///
/// ```
/// use mtls_core::Authorize;
/// use mtls_tonic::authz::{AuthzLayer, MethodPolicy};
/// let policy = MethodPolicy::deny_by_default()
///     .allow("/grpc.health.v1.Health/Check", Authorize::any())?
///     .allow("bookstore.Bookstore/*", Authorize::exact("spiffe://example.org/web".parse()?))?;
/// let layer = AuthzLayer::new(policy);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    policy: Arc<MethodPolicy>,
    denials: Arc<Denials>,
    counters: Arc<AuthzCounters>,
}

impl AuthzLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: impl Into<Arc<MethodPolicy>>) -> Self {
        Self {
            policy: policy.into(),
            denials: Arc::new(Denials::new(false)),
            counters: Arc::default(),
        }
    }

    /// `true`: denied callers are told what the policy expected too
    /// (`… may not call /pkg.Svc/Method: expected spiffe://example.org/sa/web`), as the log
    /// is. For development: in production it tells whoever was refused which identities
    /// would be let in. Default `false`.
    ///
    /// ```
    /// # let policy = mtls_tonic::authz::MethodPolicy::deny_by_default();
    /// let layer = mtls_tonic::authz::AuthzLayer::new(policy).detailed_denials(true);
    /// ```
    pub fn detailed_denials(mut self, detailed: bool) -> Self {
        self.denials = Arc::new(Denials::new(detailed));
        self
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzService::with_denials(
            inner,
            self.policy.clone(),
            self.denials.clone(),
            self.counters.clone(),
        )
    }
}
