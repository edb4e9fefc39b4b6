//! Bearer-JWT validation per gRPC method (tower middleware), optionally bound to the peer's
//! SPIFFE ID: the [`JwtLayer`] over a [`TokenValidator`] and [`JwtRules`], its
//! [`JwtService`], [`ResponseFuture`] and [`JwtError`].
//!
//! ```
//! use mtls_tonic::jwt::JwtRules;
//! // Every method needs a token except the health checks; its subject must be the peer's
//! // SPIFFE ID. `JwtLayer::new(validator, rules)` puts it in front of a service.
//! let rules = JwtRules::require_all()
//!     .skip("grpc.health.v1.Health/*")?
//!     .bind_subject_to_peer();
//! assert!(!rules.requires_token("/grpc.health.v1.Health/Check"));
//! assert!(rules.requires_token("/bookstore.Bookstore/ListBooks"));
//! # Ok::<(), mtls_tonic::Error>(())
//! ```

mod error;
mod future;
mod layer;
mod mtls_jwt;
mod rules;
mod validator;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

pub use error::JwtError;
pub use future::ResponseFuture;
pub use layer::JwtLayer;
pub use rules::JwtRules;
use tower_service::Service;
use tracing::warn;
pub use validator::{TokenValidator, bearer_token};

use crate::{PeerIdentityExt, denial::Denials};

/// Validates the bearer token of each call whose method [`JwtRules`] covers, found where
/// the validator looks ([`TokenValidator::find_token`]: `authorization: Bearer` by default,
/// an `mtls_jwt::Validator`'s configured `token_location` otherwise). Missing or invalid tokens get UNAUTHENTICATED, a disallowed audience or a subject
/// that is not the peer's SPIFFE ID (with [`JwtRules::bind_subject_to_peer`]) gets
/// PERMISSION_DENIED — the codes Envoy's `jwt_authn` answers (401 / 403). Validated claims
/// go into the request's extensions for the handler.
#[derive(Debug)]
pub struct JwtService<S, V> {
    inner: S,
    validator: Arc<V>,
    rules: Arc<JwtRules>,
    denials: Arc<Denials>,
}

impl<S: Clone, V> Clone for JwtService<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            validator: self.validator.clone(),
            rules: self.rules.clone(),
            denials: self.denials.clone(),
        }
    }
}

impl<S, V> JwtService<S, V> {
    /// Wraps `inner` (terse denials; [`JwtLayer::detailed_denials`] for the detailed ones).
    pub fn new(inner: S, validator: Arc<V>, rules: Arc<JwtRules>) -> Self {
        Self::with_denials(inner, validator, rules, Arc::new(Denials::new(false)))
    }

    pub(crate) fn with_denials(
        inner: S,
        validator: Arc<V>,
        rules: Arc<JwtRules>,
        denials: Arc<Denials>,
    ) -> Self {
        Self {
            inner,
            validator,
            rules,
            denials,
        }
    }
}

crate::inner_service_accessors!(JwtService<S, V>);

impl<S, V, ReqBody, ResBody> Service<http::Request<ReqBody>> for JwtService<S, V>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    V: TokenValidator,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if !self.rules.requires_token(request.uri().path()) {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let token = match self.validator.find_token(request.headers()) {
            Ok(token) => token,
            Err(error) => {
                return ResponseFuture::rejected(reject(
                    &self.denials,
                    request.uri().path(),
                    error,
                ));
            }
        };
        let bind = self.rules.binds_subject();
        // A verified-token cache hit is decided here: no copy of the token, no future of
        // our own, the ready inner service called directly.
        if let Some(verdict) = self.validator.validate_cached(token) {
            return match admit(&*self.validator, bind, &request, verdict) {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    ResponseFuture::inner(self.inner.call(request))
                }
                Err(error) => {
                    ResponseFuture::rejected(reject(&self.denials, request.uri().path(), error))
                }
            };
        }
        let token = token.to_owned();
        let validator = self.validator.clone();
        let denials = self.denials.clone();
        // The clone that was polled ready serves this call; keep a fresh clone for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::validating(async move {
            let verdict = validator.validate(&token).await;
            match admit(&*validator, bind, &request, verdict) {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(error) => Ok(reject(&denials, request.uri().path(), error)),
            }
        })
    }
}

/// The claims of a valid token whose `sub` is the peer's SPIFFE ID when `bind` asks for it
/// (compared with the ID as it is, not formatted), or why the call is refused.
fn admit<V: TokenValidator, B>(
    validator: &V,
    bind: bool,
    request: &http::Request<B>,
    verdict: Result<V::Claims, JwtError>,
) -> Result<V::Claims, JwtError> {
    let claims = verdict?;
    if bind {
        let subject = validator.subject(&claims);
        let peer = request.peer_identity().and_then(|p| p.spiffe_id());
        match (peer, subject) {
            (Some(peer), Some(subject)) if *peer == *subject => {}
            _ => {
                return Err(JwtError::SubjectMismatch {
                    presented: subject.unwrap_or("<none>").to_owned(),
                    expected: peer
                        .map_or_else(|| "<no peer SPIFFE ID>".to_owned(), ToString::to_string),
                });
            }
        }
    }
    Ok(claims)
}

/// The log line (rate-limited, everything) and the caller's answer (terse unless
/// detailed denials are on).
fn reject<B: Default>(denials: &Denials, method: &str, error: JwtError) -> http::Response<B> {
    if let Some(unlogged) = denials.log_line() {
        warn!(%method, %error, unlogged_since_last_line = unlogged, "JWT rejected");
    }
    let status = if denials.detailed() {
        error.to_detailed_status()
    } else {
        error.to_status()
    };
    status.into_http()
}
