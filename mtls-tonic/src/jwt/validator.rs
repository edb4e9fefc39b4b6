//! What validates a bearer token.

use std::{future::Future, pin::Pin};

use super::JwtError;

/// Validates a bearer token and returns its claims (mtls-jwt's validator, or your own).
///
/// `validate` may be asynchronous (a JWKS fetch). Claims are stored in the request's
/// extensions for the handler (`request.extensions().get::<V::Claims>()`).
pub trait TokenValidator: Send + Sync + 'static {
    /// The validated claims.
    type Claims: Clone + Send + Sync + 'static;

    /// Validates `token` (without the `Bearer ` prefix).
    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Claims, JwtError>> + Send + 'a>>;

    /// The verdict on `token` when it is at hand without waiting or verifying a signature
    /// (a verified-token cache hit), or `None`, in which case [`validate`](Self::validate)
    /// is called. A `Some` lets [`JwtService`](super::JwtService) admit or reject the call
    /// synchronously, without a future of its own. The default is `None`; for
    /// `mtls_jwt::Validator` it is `Validator::validate_cached`.
    ///
    /// ```
    /// use mtls_tonic::jwt::{JwtError, TokenValidator};
    /// # use std::{future::Future, pin::Pin};
    /// struct Fixed;
    /// impl TokenValidator for Fixed {
    ///     type Claims = String;
    ///     fn validate<'a>(&'a self, token: &'a str)
    ///         -> Pin<Box<dyn Future<Output = Result<String, JwtError>> + Send + 'a>> {
    ///         Box::pin(std::future::ready(self.validate_cached(token).unwrap()))
    ///     }
    ///     fn validate_cached(&self, token: &str) -> Option<Result<String, JwtError>> {
    ///         Some(if token == "good" { Ok("spiffe://example.org/c".into()) } else { Err(JwtError::Missing) })
    ///     }
    ///     fn subject<'c>(&self, claims: &'c String) -> Option<&'c str> { Some(claims) }
    /// }
    /// assert!(Fixed.validate_cached("good").unwrap().is_ok());
    /// ```
    fn validate_cached(&self, token: &str) -> Option<Result<Self::Claims, JwtError>> {
        let _ = token;
        None
    }

    /// The token's `sub`, for binding to the peer's SPIFFE ID.
    fn subject<'c>(&self, claims: &'c Self::Claims) -> Option<&'c str>;

    /// Where the token is in a request. The default is the first `Bearer` value of the
    /// `authorization` headers (every one is looked at); `mtls_jwt::Validator` looks where
    /// it was configured to (`ValidatorBuilder::token_location`), so the layer and
    /// `Validator::validate_headers` always agree.
    fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Result<&'h str, JwtError> {
        mtls_jwt::TokenLocation::Authorization
            .find(headers)
            .map_err(|_| JwtError::Missing)
    }
}

/// A shared validator is one too: `JwtLayer::new(Arc::new(validator), rules)`.
impl<V: TokenValidator> TokenValidator for std::sync::Arc<V> {
    type Claims = V::Claims;

    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Claims, JwtError>> + Send + 'a>> {
        (**self).validate(token)
    }

    fn validate_cached(&self, token: &str) -> Option<Result<Self::Claims, JwtError>> {
        (**self).validate_cached(token)
    }

    fn subject<'c>(&self, claims: &'c Self::Claims) -> Option<&'c str> {
        (**self).subject(claims)
    }

    fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Result<&'h str, JwtError> {
        (**self).find_token(headers)
    }
}

/// The token of the first `authorization: Bearer <token>` header (scheme
/// case-insensitive; every `authorization` header is looked at); the extraction is
/// `mtls_jwt::TokenLocation::Authorization`'s and the parsing [`mtls_jwt::bearer_token`]'s.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "bearer abc.def.ghi".parse()?);
/// assert_eq!(mtls_tonic::jwt::bearer_token(&headers), Some("abc.def.ghi"));
/// headers.insert("authorization", "Basic dXNlcg==".parse()?);
/// assert_eq!(mtls_tonic::jwt::bearer_token(&headers), None);
/// headers.append("authorization", "Bearer abc.def.ghi".parse()?);
/// assert_eq!(mtls_tonic::jwt::bearer_token(&headers), Some("abc.def.ghi"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    mtls_jwt::TokenLocation::Authorization.find(headers).ok()
}
