//! The layer for [`AuthzService`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{AuthzService, MethodPolicy};

/// Applies [`AuthzService`] with a shared [`MethodPolicy`], e.g. in
/// `tonic::transport::Server::builder().layer(AuthzLayer::new(policy))`.
///
/// ```
/// use mtls_core::Authorize;
/// use mtls_tonic::{AuthzLayer, MethodPolicy};
/// let policy = MethodPolicy::deny_by_default()
///     .allow("/grpc.health.v1.Health/Check", Authorize::any())?
///     .allow("bookstore.Bookstore/*", Authorize::exact("spiffe://example.org/web".parse()?))?;
/// let layer = AuthzLayer::new(policy);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    policy: Arc<MethodPolicy>,
}

impl AuthzLayer {
    /// A layer enforcing `policy`.
    pub fn new(policy: impl Into<Arc<MethodPolicy>>) -> Self {
        Self {
            policy: policy.into(),
        }
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzService::new(inner, self.policy.clone())
    }
}
