//! The crate's one error type, with Envoy's `jwt_authn` names for token failures.

use std::path::PathBuf;

/// A `Result` with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong: rejected tokens (named as Envoy's `jwt_authn` names them) and
/// configuration, JWKS and key-file problems.
///
/// `Display` gives Envoy's message followed by the detail (`"Jwt is expired: exp 1700000000 is
/// before now 1700000100 (clock skew 60 s)"`); [`Error::envoy_message`] gives the bare
/// message Envoy would send the caller. Map to a response with [`Error::http_status`]
/// (401, or 403 for audiences and claim checks) and [`Error::grpc_code`].
///
/// ```
/// use mtls_jwt::{Error, GrpcCode};
///
/// let e = Error::Expired { exp: 10, now: 100, leeway: 60 };
/// assert_eq!(e.envoy_message(), "Jwt is expired");
/// assert_eq!(e.http_status(), 401);
/// assert_eq!(e.grpc_code(), GrpcCode::Unauthenticated);
/// assert!(e.to_string().starts_with("Jwt is expired: exp 10"));
///
/// let aud = Error::AudienceNotAllowed { presented: vec!["b".into()], expected: vec!["a".into()] };
/// assert_eq!((aud.http_status(), aud.grpc_code()), (403, GrpcCode::PermissionDenied));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- token failures ------------------------------------------------------------------
    /// No token was presented.
    #[error("Jwt is missing")]
    Missing,
    /// The token is longer than the configured limit.
    #[error("Jwt verification fails: the token is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// The token's length in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The token does not have exactly three dot-separated segments.
    #[error(
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections: found {found} segments"
    )]
    WrongSegmentCount {
        /// How many segments the token has.
        found: usize,
    },
    /// The header is not base64url-encoded JSON with a string `alg`.
    #[error("Jwt header is an invalid JSON: {reason}")]
    MalformedHeader {
        /// What is wrong.
        reason: String,
    },
    /// The payload is not base64url-encoded JSON object.
    #[error("Jwt payload is an invalid JSON: {reason}")]
    MalformedPayload {
        /// What is wrong.
        reason: String,
    },
    /// The signature segment is not base64url.
    #[error("Jwt signature is an invalid Base64url input")]
    MalformedSignature,
    /// `alg` names no algorithm we implement (`none`, `ES512`, anything unknown).
    #[error("Jwt header [alg] is not supported: {presented:?}")]
    AlgorithmNotSupported {
        /// The header's `alg`.
        presented: String,
    },
    /// `alg` is a real algorithm but not in the validator's allow-list (e.g. `HS256` when only
    /// asymmetric algorithms are allowed: the algorithm-confusion attack).
    #[error(
        "Jwks doesn't have key to match kid or alg from Jwt: alg {presented} is not allowed, expected one of {allowed:?}"
    )]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        presented: String,
        /// The allowed algorithms.
        allowed: Vec<String>,
    },
    /// The header carries a `crit` extension we do not understand (RFC 7515 §4.1.11).
    #[error("Jwt verification fails: unsupported critical header parameters {names:?}")]
    UnsupportedCritical {
        /// The `crit` names.
        names: Vec<String>,
    },
    /// The header's `typ` is not accepted.
    #[error(
        "Jwt verification fails: {}, expected {expected}",
        presented.as_deref().map_or_else(
            || "the token has no typ".to_owned(),
            |typ| format!("typ {typ:?} is not accepted")
        )
    )]
    TypNotAllowed {
        /// The header's `typ` (`None` when absent).
        presented: Option<String>,
        /// What is accepted.
        expected: String,
    },
    /// The token's `kid` is not in the JWKS (after a refetch, when the source is remote).
    #[error("Jwks doesn't have key to match kid or alg from Jwt: kid {kid:?} is not in the JWKS")]
    UnknownKid {
        /// The header's `kid`.
        kid: String,
    },
    /// The JWK named by `kid` says it is for another algorithm (its `alg`, or its key type/curve).
    #[error(
        "Jwks doesn't have key to match kid or alg from Jwt: the key {kid:?} is for {key_alg}, the token says {token_alg}"
    )]
    KeyAlgorithmMismatch {
        /// The header's `kid`.
        kid: String,
        /// The JWK's `alg` (or its key type when it has no `alg`).
        key_alg: String,
        /// The header's `alg`.
        token_alg: String,
    },
    /// The JWK named by `kid` is not for signatures (`use` other than `sig`, or `key_ops`
    /// without `verify`).
    #[error(
        "Jwks doesn't have key to match kid or alg from Jwt: the key {kid:?} is not for signatures ({key_use})"
    )]
    KeyNotForSignature {
        /// The header's `kid`.
        kid: String,
        /// The JWK's `use` / `key_ops`.
        key_use: String,
    },
    /// The token has no `kid` and no key in the JWKS fits its `alg`.
    #[error("Jwks doesn't have key to match kid or alg from Jwt: no key for alg {alg}")]
    NoKeyForAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// The JWK named by `kid` is an RSA key shorter than 2048 bits (RFC 7518 §3.3) or longer
    /// than 8192 (more than aws-lc-rs verifies with, and costly to try): it was refused when
    /// the JWKS loaded, so no token it signed is accepted.
    #[error(
        "Jwks doesn't have key to match kid or alg from Jwt: the key {kid:?} is an RSA key of {bits} bits, expected 2048 to 8192"
    )]
    WeakKey {
        /// The header's `kid`.
        kid: String,
        /// The modulus size.
        bits: usize,
    },
    /// The signature does not verify with the key.
    #[error("Jwt verification fails: bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the clock skew).
    #[error("Jwt is expired: exp {exp} is before now {now} (clock skew {leeway} s)")]
    Expired {
        /// The token's `exp` (seconds since the epoch).
        exp: i64,
        /// The validator's clock.
        now: i64,
        /// The clock skew allowed, in seconds.
        leeway: u64,
    },
    /// `nbf` is in the future (beyond the clock skew).
    #[error("Jwt not yet valid: nbf {nbf} is after now {now} (clock skew {leeway} s)")]
    NotYetValid {
        /// The token's `nbf` (seconds since the epoch).
        nbf: i64,
        /// The validator's clock.
        now: i64,
        /// The clock skew allowed, in seconds.
        leeway: u64,
    },
    /// A claim the validator requires is absent (`exp` by default; `aud`/`sub` for JWT-SVIDs).
    #[error("Jwt verification fails: the {claim} claim is required")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim has the wrong type or value (`exp` not a number, `sub` not a SPIFFE ID, ...).
    #[error("Jwt verification fails: invalid {claim} claim: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: String,
        /// What is wrong.
        reason: String,
    },
    /// `exp - iat` (or `exp - now` without `iat`) exceeds the configured maximum lifetime.
    #[error("Jwt verification fails: lifetime {lifetime} s exceeds the maximum {max} s")]
    LifetimeTooLong {
        /// The token's lifetime in seconds.
        lifetime: i64,
        /// The configured maximum.
        max: u64,
    },
    /// With a maximum lifetime configured, `iat` lies in the future (beyond the clock skew),
    /// which would let the token live longer than `exp - iat` says.
    #[error("Jwt verification fails: iat {iat} is after now {now} (clock skew {leeway} s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The verification time.
        now: i64,
        /// The clock skew allowed, seconds.
        leeway: u64,
    },
    /// `iss` is not one of the configured issuers.
    #[error(
        "Jwt issuer is not configured: {}, expected one of {expected:?}",
        presented.as_deref().map_or_else(
            || "the token has no iss".to_owned(),
            |iss| format!("presented {iss:?}")
        )
    )]
    IssuerNotAllowed {
        /// The token's `iss` (`None` when absent).
        presented: Option<String>,
        /// The configured issuers.
        expected: Vec<String>,
    },
    /// None of the token's audiences is one of ours.
    #[error(
        "Audiences in Jwt are not allowed: presented {presented:?}, expected one of {expected:?}"
    )]
    AudienceNotAllowed {
        /// The token's `aud` values.
        presented: Vec<String>,
        /// The configured audiences.
        expected: Vec<String>,
    },
    /// Audiences are configured and the token has no `aud`.
    #[error("Audiences in Jwt are not allowed: the token has no aud, expected one of {expected:?}")]
    AudienceMissing {
        /// The configured audiences.
        expected: Vec<String>,
    },
    /// A custom claim check refused the token.
    #[error("Jwt claims are not allowed: check {check:?} failed: {reason}")]
    ClaimCheckFailed {
        /// The check's name, as given to the builder.
        check: String,
        /// The check's reason.
        reason: String,
    },
    /// No keys: the JWKS could not be fetched (and no earlier fetch succeeded).
    #[error("Jwks remote fetch is failed: {source_name}: {reason}")]
    JwksFetchFailed {
        /// The URL or file.
        source_name: String,
        /// What went wrong.
        reason: String,
    },

    // ---- JWKS, configuration and keys ----------------------------------------------------
    /// A JWKS document could not be parsed.
    #[error("Jwks is an invalid JSON: {reason}")]
    InvalidJwks {
        /// What is wrong.
        reason: String,
    },
    /// A JWKS has no usable verification key (every key was skipped, or `keys` is empty).
    #[error("Jwks doesn't have any valid public key: {reason}")]
    EmptyJwks {
        /// Why (e.g. how many keys were skipped).
        reason: String,
    },
    /// The validator or a source is misconfigured.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A key (PEM file, JWK) could not be read or used.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// Minting (signing) a token failed.
    #[error("cannot sign the token: {reason}")]
    Signing {
        /// What went wrong.
        reason: String,
    },
    /// The validated claims do not deserialize into the requested type.
    #[error("Jwt verification fails: claims do not match the expected type: {reason}")]
    ClaimsType {
        /// The serde error.
        reason: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The gRPC status code a failure maps to (numeric values as in `grpc-status`).
///
/// ```
/// assert_eq!(mtls_jwt::GrpcCode::PermissionDenied as i32, 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 13: a problem on our side (configuration, JWKS files).
    Internal = 13,
    /// 7: a valid token that may not be used here (audience, claim checks).
    PermissionDenied = 7,
    /// 16: missing or invalid token.
    Unauthenticated = 16,
}

impl Error {
    /// The message Envoy's `jwt_authn` sends for this failure, without our detail.
    pub fn envoy_message(&self) -> &'static str {
        match self {
            Self::Missing => "Jwt is missing",
            Self::WrongSegmentCount { .. } => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Self::MalformedHeader { .. } => "Jwt header is an invalid JSON",
            Self::MalformedPayload { .. } => "Jwt payload is an invalid JSON",
            Self::MalformedSignature => "Jwt signature is an invalid Base64url input",
            Self::AlgorithmNotSupported { .. } => "Jwt header [alg] is not supported",
            Self::AlgorithmNotAllowed { .. }
            | Self::UnknownKid { .. }
            | Self::KeyAlgorithmMismatch { .. }
            | Self::KeyNotForSignature { .. }
            | Self::WeakKey { .. }
            | Self::NoKeyForAlgorithm { .. } => {
                "Jwks doesn't have key to match kid or alg from Jwt"
            }
            Self::Expired { .. } => "Jwt is expired",
            Self::NotYetValid { .. } => "Jwt not yet valid",
            Self::IssuerNotAllowed { .. } => "Jwt issuer is not configured",
            Self::AudienceNotAllowed { .. } | Self::AudienceMissing { .. } => {
                "Audiences in Jwt are not allowed"
            }
            Self::ClaimCheckFailed { .. } => "Jwt claims are not allowed",
            Self::JwksFetchFailed { .. } => "Jwks remote fetch is failed",
            Self::InvalidJwks { .. } => "Jwks is an invalid JSON",
            Self::EmptyJwks { .. } => "Jwks doesn't have any valid public key",
            Self::TooLarge { .. }
            | Self::UnsupportedCritical { .. }
            | Self::TypNotAllowed { .. }
            | Self::BadSignature
            | Self::MissingClaim { .. }
            | Self::InvalidClaim { .. }
            | Self::LifetimeTooLong { .. }
            | Self::IssuedInFuture { .. }
            | Self::ClaimsType { .. } => "Jwt verification fails",
            Self::Config { .. }
            | Self::InvalidKey { .. }
            | Self::Signing { .. }
            | Self::Io { .. } => "Jwt verification fails",
        }
    }

    /// True for failures of a presented token (as opposed to configuration/key problems).
    pub fn is_token_failure(&self) -> bool {
        !matches!(
            self,
            Self::InvalidJwks { .. }
                | Self::EmptyJwks { .. }
                | Self::Config { .. }
                | Self::InvalidKey { .. }
                | Self::Signing { .. }
                | Self::Io { .. }
        )
    }

    /// True for failures that happen to a token that is valid but not allowed here
    /// (Envoy answers 403): audience not allowed, a custom claim check refused it.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::AudienceNotAllowed { .. }
                | Self::AudienceMissing { .. }
                | Self::ClaimCheckFailed { .. }
        )
    }

    /// HTTP status as Envoy answers: 403 for [`Error::is_forbidden`], 500 for configuration
    /// problems, 401 for every other failure.
    pub fn http_status(&self) -> u16 {
        if self.is_forbidden() {
            403
        } else if self.is_token_failure() {
            401
        } else {
            500
        }
    }

    /// gRPC code: PERMISSION_DENIED for [`Error::is_forbidden`], INTERNAL for configuration
    /// problems, UNAUTHENTICATED for every other failure.
    pub fn grpc_code(&self) -> GrpcCode {
        match self.http_status() {
            403 => GrpcCode::PermissionDenied,
            401 => GrpcCode::Unauthenticated,
            _ => GrpcCode::Internal,
        }
    }

    /// A key-lookup miss: a JWKS refetch may help.
    pub(crate) fn is_key_miss(&self) -> bool {
        matches!(
            self,
            Self::UnknownKid { .. } | Self::NoKeyForAlgorithm { .. } | Self::JwksFetchFailed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_mapping() {
        assert_eq!(Error::Missing.to_string(), "Jwt is missing");
        assert_eq!(Error::Missing.http_status(), 401);
        let e = Error::AudienceMissing {
            expected: vec!["a".into()],
        };
        assert_eq!(e.http_status(), 403);
        assert_eq!(e.grpc_code(), GrpcCode::PermissionDenied);
        let e = Error::Config { reason: "x".into() };
        assert_eq!(e.grpc_code(), GrpcCode::Internal);
        assert_eq!(GrpcCode::Unauthenticated as i32, 16);
    }
}
