//! [`TokenValidator`] for the project's own validator, [`mtls_jwt::Validator`].

use std::{future::Future, pin::Pin};

use tonic::Code;
use tracing::debug;

use super::{JwtError, TokenValidator};

/// `mtls_jwt::Validator` plugs straight into [`JwtLayer`](super::JwtLayer): failures keep
/// the names Envoy's `jwt_authn` gives them, and the gRPC code Envoy's 401/403 map to.
///
/// The caller sees Envoy's message followed by what it presented, never what we expected,
/// e.g. `Audiences in Jwt are not allowed: presented ["other"]`; the log (and callers of a
/// layer with [`JwtLayer::detailed_denials`](super::JwtLayer::detailed_denials)) also get
/// what was expected: `…, expected one of ["bookstore"]`. Failures whose detail is ours
/// alone (a custom claim check, the JWKS URL that failed) tell the caller Envoy's bare
/// message. Configuration problems on our side (an unreadable JWKS file) answer INTERNAL
/// with Envoy's bare message only, whatever the setting; the detail goes to the log.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator, jwks_json};
/// use mtls_tonic::jwt::{JwtError, JwtLayer, JwtRules, TokenValidator};
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
        error if error.is_token_failure() => JwtError::Refused {
            code,
            message: caller_message(&error),
            detail: error.to_string(),
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

/// Envoy's failure name and what the caller presented, without what we expected (allowed
/// audiences, issuers, algorithms, `typ`, limits, clock skew, claim checks, JWKS sources).
fn caller_message(error: &mtls_jwt::Error) -> String {
    use mtls_jwt::Error as E;
    let envoy = error.envoy_message();
    match error {
        E::IssuerNotAllowed {
            presented: Some(iss),
            ..
        } => format!("{envoy}: presented {iss:?}"),
        E::IssuerNotAllowed {
            presented: None, ..
        } => format!("{envoy}: the token has no iss"),
        E::AudienceNotAllowed { presented, .. } => format!("{envoy}: presented {presented:?}"),
        E::AudienceMissing { .. } => format!("{envoy}: the token has no aud"),
        E::AlgorithmNotAllowed { presented, .. } => {
            format!("{envoy}: alg {presented} is not allowed")
        }
        E::TypNotAllowed {
            presented: Some(typ),
            ..
        } => format!("{envoy}: typ {typ:?} is not accepted"),
        E::TypNotAllowed {
            presented: None, ..
        } => format!("{envoy}: the token has no typ"),
        E::LifetimeTooLong { lifetime, .. } => {
            format!("{envoy}: lifetime {lifetime} s exceeds the maximum")
        }
        E::Expired { exp, now, .. } => format!("{envoy}: exp {exp} is before now {now}"),
        E::NotYetValid { nbf, now, .. } => format!("{envoy}: nbf {nbf} is after now {now}"),
        E::IssuedInFuture { iat, now, .. } => format!("{envoy}: iat {iat} is after now {now}"),
        E::ClaimCheckFailed { .. } | E::JwksFetchFailed { .. } => envoy.to_owned(),
        // The rest name only what the token holds (kid, alg, segments, claims' types).
        other => other.to_string(),
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
        assert_eq!(
            expired.caller_message(),
            "Jwt is expired: exp 10 is before now 100"
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
        assert_eq!(
            aud.caller_message(),
            r#"Audiences in Jwt are not allowed: presented ["other"]"#
        );

        // What we expect never reaches the caller; what it presented does.
        for (error, caller) in [
            (
                mtls_jwt::Error::IssuerNotAllowed {
                    presented: Some("https://elsewhere".into()),
                    expected: vec!["https://issuer".into()],
                },
                r#"Jwt issuer is not configured: presented "https://elsewhere""#,
            ),
            (
                mtls_jwt::Error::AudienceMissing {
                    expected: vec!["bookstore".into()],
                },
                "Audiences in Jwt are not allowed: the token has no aud",
            ),
            (
                mtls_jwt::Error::AlgorithmNotAllowed {
                    presented: "HS256".into(),
                    allowed: vec!["ES256".into()],
                },
                "Jwks doesn't have key to match kid or alg from Jwt: alg HS256 is not allowed",
            ),
            (
                mtls_jwt::Error::ClaimCheckFailed {
                    check: "tenant".into(),
                    reason: "tenant must be acme".into(),
                },
                "Jwt claims are not allowed",
            ),
            (
                mtls_jwt::Error::JwksFetchFailed {
                    source_name: "https://jwks.internal/keys".into(),
                    reason: "503".into(),
                },
                "Jwks remote fetch is failed",
            ),
        ] {
            let full = error.to_string();
            let mapped = to_jwt_error(error);
            assert_eq!(mapped.caller_message(), caller);
            assert_eq!(mapped.to_string(), full, "the log keeps everything");
        }

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
