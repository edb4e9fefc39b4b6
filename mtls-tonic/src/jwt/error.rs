//! Why [`JwtService`](super::JwtService) rejected a call.

use tonic::{Code, Status};

/// A rejected bearer token, named as Envoy's `jwt_authn` names its failures.
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
    /// A failure a validator names itself (e.g. mtls-jwt's Envoy-named failures such as
    /// "Jwt issuer is not configured"), with the gRPC code it maps to: UNAUTHENTICATED, or
    /// PERMISSION_DENIED for tokens that are valid but not allowed here.
    #[error("{message}")]
    Rejected {
        /// The status code to answer with.
        code: Code,
        /// The message, sent to the caller as is.
        message: String,
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
            Self::Rejected { code, .. } => *code,
        }
    }

    /// The status sent to the caller.
    pub fn to_status(&self) -> Status {
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
}
