//! Why [`JwtService`](super::JwtService) rejected a call.

use tonic::{Code, Status};

/// A rejected bearer token, named as Envoy's `jwt_authn` names its failures.
///
/// The `Display` text is the whole story, for the server's log. The caller gets
/// [`JwtError::to_status`]: Envoy's failure name and what the caller itself presented,
/// never the audiences, issuers or other settings we expected;
/// [`JwtError::to_detailed_status`] adds them, for development
/// ([`JwtLayer::detailed_denials`](crate::jwt::JwtLayer::detailed_denials)).
///
/// ```
/// use mtls_tonic::jwt::JwtError;
/// let refused = JwtError::AudienceNotAllowed {
///     presented: r#"["other"]"#.into(),
///     expected: r#"["bookstore"]"#.into(),
/// };
/// assert_eq!(
///     refused.to_status().message(),
///     r#"Audiences in Jwt are not allowed: presented ["other"]"#
/// );
/// assert!(refused.to_detailed_status().message().ends_with(r#"expected ["bookstore"]"#));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No `authorization: Bearer` header.
    #[error("Jwt is missing")]
    Missing,
    /// The token is expired.
    #[error("Jwt is expired")]
    Expired,
    /// The token could not be verified (bad signature, unknown key, malformed, not yet valid,
    /// wrong issuer, ...).
    #[error("Jwt verification fails: {reason}")]
    Invalid {
        /// What failed.
        reason: String,
    },
    /// The token's audience is not one we accept.
    #[error("Audiences in Jwt are not allowed: presented {presented}, expected {expected}")]
    AudienceNotAllowed {
        /// The token's `aud`.
        presented: String,
        /// The accepted audiences.
        expected: String,
    },
    /// With subject binding on: the token's `sub` is not the peer's SPIFFE ID.
    #[error("Jwt subject {presented} is not the peer's SPIFFE ID {expected}")]
    SubjectMismatch {
        /// The token's `sub`.
        presented: String,
        /// The peer's SPIFFE ID from the mTLS handshake.
        expected: String,
    },
    /// A failure a validator names itself, with the gRPC code it maps to: UNAUTHENTICATED,
    /// PERMISSION_DENIED for tokens that are valid but not allowed here, or INTERNAL.
    #[error("{message}")]
    Rejected {
        /// The status code to answer with.
        code: Code,
        /// The message, sent to the caller as is (and logged as is).
        message: String,
    },
    /// A failure a validator names in two forms (mtls-jwt's Envoy-named failures such as
    /// "Jwt issuer is not configured"): a terse one for the caller, the whole detail for
    /// the log and for detailed denials.
    #[error("{detail}")]
    Refused {
        /// The status code to answer with.
        code: Code,
        /// What the caller is told: Envoy's failure name and what the caller presented
        /// (`Jwt issuer is not configured: presented "https://elsewhere"`).
        message: String,
        /// Everything, what was expected included (`… expected one of ["https://issuer"]`).
        detail: String,
    },
}

impl JwtError {
    /// UNAUTHENTICATED for a missing/invalid token (Envoy 401), PERMISSION_DENIED for a
    /// valid token that may not be used here (Envoy 403).
    pub fn code(&self) -> Code {
        match self {
            Self::Missing | Self::Expired | Self::Invalid { .. } => Code::Unauthenticated,
            Self::AudienceNotAllowed { .. } | Self::SubjectMismatch { .. } => {
                Code::PermissionDenied
            }
            Self::Rejected { code, .. } | Self::Refused { code, .. } => *code,
        }
    }

    /// What the caller is told: Envoy's failure name and what the caller presented, not
    /// what we expected.
    pub fn caller_message(&self) -> String {
        match self {
            // The peer's SPIFFE ID is the caller's own, not policy.
            Self::Missing | Self::Expired | Self::SubjectMismatch { .. } => self.to_string(),
            Self::Invalid { .. } => "Jwt verification fails".to_owned(),
            Self::AudienceNotAllowed { presented, .. } => {
                format!("Audiences in Jwt are not allowed: presented {presented}")
            }
            Self::Rejected { message, .. } | Self::Refused { message, .. } => message.clone(),
        }
    }

    /// The status sent to the caller: [`JwtError::code`] and [`JwtError::caller_message`].
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.caller_message())
    }

    /// The status with the whole detail, what was expected included: for development only.
    pub fn to_detailed_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_envoy() {
        assert_eq!(JwtError::Missing.code(), Code::Unauthenticated);
        assert_eq!(JwtError::Expired.code(), Code::Unauthenticated);
        let aud = JwtError::AudienceNotAllowed {
            presented: "a".into(),
            expected: "b".into(),
        };
        assert_eq!(aud.code(), Code::PermissionDenied);
        assert!(
            aud.to_string()
                .starts_with("Audiences in Jwt are not allowed")
        );
    }

    #[test]
    fn callers_are_not_told_what_was_expected() {
        // The "expected" of a subject mismatch is the caller's own SPIFFE ID: it is told.
        let subject = JwtError::SubjectMismatch {
            presented: "spiffe://example.org/a".into(),
            expected: "spiffe://example.org/peer".into(),
        };
        assert_eq!(
            subject.to_status().message(),
            "Jwt subject spiffe://example.org/a is not the peer's SPIFFE ID spiffe://example.org/peer"
        );
        let invalid = JwtError::Invalid {
            reason: "issuer must be https://secret".into(),
        };
        assert_eq!(invalid.to_status().message(), "Jwt verification fails");
        assert!(invalid.to_string().contains("secret"));
        let refused = JwtError::Refused {
            code: Code::Unauthenticated,
            message: "short".into(),
            detail: "long".into(),
        };
        assert_eq!(refused.to_status().message(), "short");
        assert_eq!(refused.to_detailed_status().message(), "long");
        assert_eq!(refused.to_string(), "long");
    }
}
