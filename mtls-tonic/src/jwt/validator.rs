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

    /// The token's `sub`, for binding to the peer's SPIFFE ID.
    fn subject<'c>(&self, claims: &'c Self::Claims) -> Option<&'c str>;
}

/// The token of an `authorization: Bearer <token>` header (scheme case-insensitive); the
/// parsing is [`mtls_jwt::bearer_token`]'s.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "bearer abc.def.ghi".parse()?);
/// assert_eq!(mtls_tonic::bearer_token(&headers), Some("abc.def.ghi"));
/// headers.insert("authorization", "Basic dXNlcg==".parse()?);
/// assert_eq!(mtls_tonic::bearer_token(&headers), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    mtls_jwt::bearer_token(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}
