//! [`TokenValidator`] for the project's own validator, [`mtls_jwt::Validator`].

use std::{future::Future, pin::Pin};

use tonic::Code;
use tracing::debug;

use super::{JwtError, TokenValidator};

/// `mtls_jwt::Validator` plugs straight into [`JwtLayer`](super::JwtLayer): failures keep
/// the names Envoy's `jwt_authn` gives them, and the gRPC code Envoy's 401/403 map to.
///
/// The caller sees Envoy's message followed by our detail (what was expected, what was
/// seen), e.g. `Audiences in Jwt are not allowed: presented ["other"], expected
/// ["bookstore"]`. Configuration problems on our side (an unreadable JWKS file) answer
/// INTERNAL with Envoy's bare message only; the detail goes to the log.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator, jwks_json};
/// use mtls_tonic::{JwtError, JwtLayer, JwtRules, TokenValidator};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let validator = Validator::builder()
///     .jwks(JwksSource::inline(jwks_json([key.jwk(Some(key.kid()))])))
///     .issuer("https://issuer.example")
///     .audience("bookstore")
///     .build()?;
///
/// let token = key.mint(
///     &TokenSpec::new(Duration::from_secs(300))
///         .issuer("https://issuer.example")
///         .audience("bookstore")
///         .subject("spiffe://example.org/ns/default/sa/client"),
/// )?;
/// let claims = TokenValidator::validate(&validator, &token).await?;
/// assert_eq!(
///     TokenValidator::subject(&validator, &claims),
///     Some("spiffe://example.org/ns/default/sa/client")
/// );
///
/// let error = TokenValidator::validate(&validator, "not-a-jwt").await.unwrap_err();
/// assert_eq!(error.code(), tonic::Code::Unauthenticated);
///
/// let layer = JwtLayer::new(validator, JwtRules::require_all());
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl TokenValidator for mtls_jwt::Validator {
    type Claims = mtls_jwt::Claims;

    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Claims, JwtError>> + Send + 'a>> {
        Box::pin(async move {
            mtls_jwt::Validator::validate(self, token)
                .await
                .map_err(to_jwt_error)
        })
    }

    fn validate_cached(&self, token: &str) -> Option<Result<Self::Claims, JwtError>> {
        mtls_jwt::Validator::validate_cached(self, token)
            .map(|verdict| verdict.map_err(to_jwt_error))
    }

    fn subject<'c>(&self, claims: &'c Self::Claims) -> Option<&'c str> {
        claims.subject()
    }

    fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Result<&'h str, JwtError> {
        mtls_jwt::Validator::find_token(self, headers).map_err(to_jwt_error)
    }
}

/// Maps an `mtls_jwt` failure to the layer's error, keeping Envoy's wording and code.
pub(super) fn to_jwt_error(error: mtls_jwt::Error) -> JwtError {
    let code = match error.grpc_code() {
        mtls_jwt::GrpcCode::PermissionDenied => Code::PermissionDenied,
        mtls_jwt::GrpcCode::Unauthenticated => Code::Unauthenticated,
        _ => Code::Internal,
    };
    match error {
        mtls_jwt::Error::Missing => JwtError::Missing,
        error if error.is_token_failure() => JwtError::Rejected {
            code,
            message: error.to_string(),
        },
        error => {
            debug!(%error, "JWT validation could not run");
            JwtError::Rejected {
                code,
                message: error.envoy_message().to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_envoy_names_and_codes() {
        assert_eq!(to_jwt_error(mtls_jwt::Error::Missing), JwtError::Missing);

        let expired = to_jwt_error(mtls_jwt::Error::Expired {
            exp: 10,
            now: 100,
            leeway: 60,
        });
        assert_eq!(expired.code(), Code::Unauthenticated);
        assert!(
            expired.to_string().starts_with("Jwt is expired: exp 10"),
            "{expired}"
        );

        let aud = to_jwt_error(mtls_jwt::Error::AudienceNotAllowed {
            presented: vec!["other".into()],
            expected: vec!["bookstore".into()],
        });
        assert_eq!(aud.code(), Code::PermissionDenied);
        let text = aud.to_string();
        assert!(
            text.starts_with("Audiences in Jwt are not allowed"),
            "{text}"
        );
        assert!(
            text.contains("other") && text.contains("bookstore"),
            "{text}"
        );

        let config = to_jwt_error(mtls_jwt::Error::Config {
            reason: "secret path /etc/x".into(),
        });
        assert_eq!(config.code(), Code::Internal);
        assert_eq!(
            config.to_string(),
            "Jwt verification fails",
            "no internal detail leaks"
        );
    }
}
