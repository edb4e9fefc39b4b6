//! JWS algorithms (RFC 7518) and the aws-lc-rs primitives behind each.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self, VerificationAlgorithm};

/// A JWS signature algorithm.
///
/// ```
/// use mtls_jwt::Algorithm;
///
/// let alg: Algorithm = "ES256".parse()?;
/// assert_eq!(alg, Algorithm::ES256);
/// assert_eq!(alg.to_string(), "ES256");
/// assert!("none".parse::<Algorithm>().is_err());
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
#[allow(clippy::upper_case_acronyms)] // the JOSE names, as registered
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256 (only with an explicitly configured secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512 (not implemented by `jsonwebtoken`; we verify with aws-lc-rs).
    ES512,
    /// Ed25519.
    EdDSA,
}

/// Every asymmetric algorithm: the default allow-list (EdDSA last: [`JWT_SVID`] is the rest).
pub(crate) const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
];

/// The JWT-SVID profile: RS/ES/PS only, that is every asymmetric algorithm but EdDSA.
pub(crate) const JWT_SVID: &[Algorithm] = ASYMMETRIC.split_at(ASYMMETRIC.len() - 1).0;
const _: () = assert!(matches!(ASYMMETRIC[ASYMMETRIC.len() - 1], Algorithm::EdDSA));

impl Algorithm {
    /// The JOSE name (`"ES256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::EdDSA => "EdDSA",
        }
    }

    /// True for the HMAC algorithms.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    /// The aws-lc-rs verification algorithm (`None` for HMAC).
    pub(crate) fn verification(self) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match self {
            Self::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            Self::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
            Self::EdDSA => &signature::ED25519,
            Self::HS256 | Self::HS384 | Self::HS512 => return None,
        })
    }

    /// The aws-lc-rs HMAC algorithm (`None` unless HMAC).
    pub(crate) fn hmac(self) -> Option<aws_lc_rs::hmac::Algorithm> {
        Some(match self {
            Self::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
            Self::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
            Self::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
            _ => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = crate::Error;

    /// Parses a JOSE name, case-sensitively as RFC 7515 says; `none` is refused.
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "ES512" => Self::ES512,
            "EdDSA" => Self::EdDSA,
            _ => {
                return Err(crate::Error::AlgorithmNotSupported {
                    presented: s.to_owned(),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in ASYMMETRIC {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), *alg);
        }
        for bad in ["none", "rs256", "ES256K", ""] {
            assert!(matches!(
                bad.parse::<Algorithm>(),
                Err(crate::Error::AlgorithmNotSupported { .. })
            ));
        }
    }
}
