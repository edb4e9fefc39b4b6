//! Bearer-JWT validation per gRPC method (tower middleware), optionally bound to the peer's
//! SPIFFE ID.

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

use crate::PeerIdentityExt;

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
}

impl<S: Clone, V> Clone for JwtService<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            validator: self.validator.clone(),
            rules: self.rules.clone(),
        }
    }
}

impl<S, V> JwtService<S, V> {
    /// Wraps `inner`.
    pub fn new(inner: S, validator: Arc<V>, rules: Arc<JwtRules>) -> Self {
        Self {
            inner,
            validator,
            rules,
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
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        if !self.rules.requires_token(&method) {
            return ResponseFuture::new(self.inner.call(request));
        }
        let token = match self.validator.find_token(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(error) => return ResponseFuture::rejected(reject(&method, error)),
        };
        let peer = request
            .peer_identity()
            .and_then(|p| p.spiffe_id())
            .map(ToString::to_string);
        let bind = self.rules.binds_subject();
        let validator = self.validator.clone();
        // The clone that was polled ready serves this call; keep a fresh clone for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(async move {
            let claims = match validator.validate(&token).await {
                Ok(claims) => claims,
                Err(error) => return Ok(reject(&method, error)),
            };
            if bind {
                let subject = validator.subject(&claims);
                if peer.is_none() || subject != peer.as_deref() {
                    let error = JwtError::SubjectMismatch {
                        presented: subject.unwrap_or("<none>").to_owned(),
                        expected: peer.unwrap_or_else(|| "<no peer SPIFFE ID>".to_owned()),
                    };
                    return Ok(reject(&method, error));
                }
            }
            request.extensions_mut().insert(claims);
            inner.call(request).await
        })
    }
}

fn reject<B: Default>(method: &str, error: JwtError) -> http::Response<B> {
    warn!(%method, %error, "JWT rejected");
    error.to_status().into_http()
}
