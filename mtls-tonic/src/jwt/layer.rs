//! The layer for [`JwtService`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{JwtRules, JwtService};

/// Applies [`JwtService`] with a shared validator and rules, e.g. in
/// `tonic::transport::Server::builder().layer(JwtLayer::new(validator, rules))`.
///
/// ```
/// use mtls_tonic::{JwtError, JwtLayer, JwtRules, TokenValidator};
/// # use std::{future::Future, pin::Pin};
/// struct AcceptAll;
/// impl TokenValidator for AcceptAll {
///     type Claims = String;
///     fn validate<'a>(&'a self, token: &'a str)
///         -> Pin<Box<dyn Future<Output = Result<String, JwtError>> + Send + 'a>> {
///         Box::pin(async move { Ok(token.to_owned()) })
///     }
///     fn subject<'c>(&self, claims: &'c String) -> Option<&'c str> { Some(claims) }
/// }
/// let rules = JwtRules::require_all().skip("grpc.health.v1.Health/*")?;
/// let layer = JwtLayer::new(AcceptAll, rules);
/// # Ok::<(), mtls_tonic::Error>(())
/// ```
#[derive(Debug)]
pub struct JwtLayer<V> {
    validator: Arc<V>,
    rules: Arc<JwtRules>,
}

impl<V> Clone for JwtLayer<V> {
    fn clone(&self) -> Self {
        Self {
            validator: self.validator.clone(),
            rules: self.rules.clone(),
        }
    }
}

impl<V> JwtLayer<V> {
    /// A layer validating with `validator` where `rules` require a token.
    pub fn new(validator: impl Into<Arc<V>>, rules: JwtRules) -> Self {
        Self {
            validator: validator.into(),
            rules: Arc::new(rules),
        }
    }
}

impl<S, V> Layer<S> for JwtLayer<V> {
    type Service = JwtService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtService::new(inner, self.validator.clone(), self.rules.clone())
    }
}
