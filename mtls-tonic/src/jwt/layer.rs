//! The layer for [`JwtService`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{JwtRules, JwtService};
use crate::denial::Denials;

/// Applies [`JwtService`] with a shared validator and rules, e.g. in
/// `tonic::transport::Server::builder().layer(JwtLayer::new(validator, rules))`.
///
/// ```
/// use mtls_tonic::jwt::{JwtError, JwtLayer, JwtRules, TokenValidator};
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
///
/// A validator shared with other code is passed as an `Arc` (an `Arc` of a
/// [`TokenValidator`](super::TokenValidator) is one):
///
/// ```
/// use std::sync::Arc;
/// use mtls_jwt::{Algorithm, JwksSource, SigningKey, Validator, jwks_json};
/// use mtls_tonic::jwt::{JwtLayer, JwtRules};
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let validator = Arc::new(
///     Validator::builder()
///         .jwks(JwksSource::inline(jwks_json([key.jwk(Some(key.kid()))])))
///         .issuer("https://issuer.example")
///         .audience("bookstore")
///         .build()?,
/// );
/// let layer = JwtLayer::new(validator.clone(), JwtRules::require_all());
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A refused caller learns Envoy's failure name and what it presented
/// (`Audiences in Jwt are not allowed: presented ["other"]`), never the audiences or
/// issuers we expect; the server logs the whole detail at `warn` (a few lines per second
/// at most, the rest counted on the next line). [`JwtLayer::detailed_denials`] sends the
/// detail to callers too, for development.
#[derive(Debug)]
pub struct JwtLayer<V> {
    validator: Arc<V>,
    rules: Arc<JwtRules>,
    denials: Arc<Denials>,
}

impl<V> Clone for JwtLayer<V> {
    fn clone(&self) -> Self {
        Self {
            validator: self.validator.clone(),
            rules: self.rules.clone(),
            denials: self.denials.clone(),
        }
    }
}

impl<V> JwtLayer<V> {
    /// A layer validating with `validator` where `rules` require a token.
    pub fn new(validator: V, rules: JwtRules) -> Self {
        Self {
            validator: Arc::new(validator),
            rules: Arc::new(rules),
            denials: Arc::new(Denials::new(false)),
        }
    }

    /// `true`: refused callers are told what was expected too (`…, expected one of
    /// ["bookstore"]`), as the log is. For development: in production it tells whoever
    /// was refused which audiences and issuers would be accepted. Default `false`.
    ///
    /// ```
    /// # fn f<V>(validator: V) {
    /// let layer = mtls_tonic::jwt::JwtLayer::new(validator, mtls_tonic::jwt::JwtRules::require_all())
    ///     .detailed_denials(true);
    /// # }
    /// ```
    pub fn detailed_denials(mut self, detailed: bool) -> Self {
        self.denials = Arc::new(Denials::new(detailed));
        self
    }
}

impl<S, V> Layer<S> for JwtLayer<V> {
    type Service = JwtService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtService::with_denials(
            inner,
            self.validator.clone(),
            self.rules.clone(),
            self.denials.clone(),
        )
    }
}
