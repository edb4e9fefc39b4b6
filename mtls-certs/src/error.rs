//! The one error type of this crate.

use std::path::PathBuf;

/// Result alias used throughout `mtls-certs`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while making, reading or checking certificates.
///
/// Variants carry what was expected and what was presented, so a message such as
/// "certificate used as CA is not a CA: expected basicConstraints CA:TRUE, presented CA:FALSE"
/// tells an operator what to fix. The enum is `#[non_exhaustive]`: match with a wildcard arm.
///
/// ```
/// use mtls_certs::{Error, KeyAlgorithm};
///
/// let err = KeyAlgorithm::rsa(1024).unwrap_err();
/// assert!(matches!(err, Error::RsaKeyTooSmall { presented: 1024, .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PEM input had no block of the expected label, or was truncated/garbage.
    #[error("invalid PEM: expected {expected}, presented {presented}")]
    InvalidPem {
        /// The PEM label(s) that were expected, e.g. `CERTIFICATE`.
        expected: &'static str,
        /// What was found instead.
        presented: String,
    },
    /// DER bytes did not parse as the expected structure.
    #[error("invalid {what}: {reason}")]
    InvalidDer {
        /// The structure that was expected (certificate, CSR, key).
        what: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// A private key could not be read.
    #[error(
        "invalid private key: expected PKCS#8, SEC1 or PKCS#1 P-256/P-384/Ed25519/RSA key, presented {presented}"
    )]
    InvalidKey {
        /// What was wrong with the presented key.
        presented: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "private key does not match certificate: expected public key {expected}, presented {presented}"
    )]
    KeyMismatch {
        /// SHA-256 of the certificate's public key (hex prefix).
        expected: String,
        /// SHA-256 of the private key's public key (hex prefix).
        presented: String,
    },
    /// A certificate used as a CA is not a CA.
    #[error(
        "certificate {subject:?} used as CA is not a CA: expected {expected}, presented {presented}"
    )]
    NotACa {
        /// Subject of the offending certificate.
        subject: String,
        /// What a CA must have.
        expected: &'static str,
        /// What the certificate has.
        presented: String,
    },
    /// The CA's validity period is over (or not yet begun): it refuses to issue.
    #[error(
        "CA {subject:?} cannot issue: expected a CA valid at {now}, presented one valid {not_before} .. {not_after}"
    )]
    CaNotValid {
        /// Subject of the CA.
        subject: String,
        /// CA not_before.
        not_before: time::OffsetDateTime,
        /// CA not_after.
        not_after: time::OffsetDateTime,
        /// The time of the attempt.
        now: time::OffsetDateTime,
    },
    /// The CA's path length does not allow another CA under it.
    #[error(
        "CA {subject:?} cannot sign an intermediate: expected pathlen >= 1, presented {presented}"
    )]
    PathLenExceeded {
        /// Subject of the CA.
        subject: String,
        /// The CA's pathlen.
        presented: String,
    },
    /// RSA keys shorter than 2048 bits are refused.
    #[error("RSA key too small: expected 2048, 3072 or 4096 bits, presented {presented}")]
    RsaKeyTooSmall {
        /// Presented size in bits.
        presented: usize,
    },
    /// Unknown or unsupported key algorithm or size.
    #[error("unsupported key algorithm: expected {expected}, presented {presented:?}")]
    UnsupportedKeyAlgorithm {
        /// The supported choices.
        expected: &'static str,
        /// What was asked for.
        presented: String,
    },
    /// A SPIFFE ID did not parse.
    #[error("invalid SPIFFE ID {presented:?}: {reason}")]
    InvalidSpiffeId {
        /// The ID as presented.
        presented: String,
        /// Why it is invalid (from the `spiffe` crate).
        reason: String,
    },
    /// A subject alternative name is invalid or not allowed here.
    #[error("invalid subject alternative name: expected {expected}, presented {presented:?}")]
    InvalidSan {
        /// What was expected.
        expected: String,
        /// The offending SAN.
        presented: String,
    },
    /// A CSR requested something the policy refuses (e.g. CA:TRUE).
    #[error("CSR refused by policy: expected {expected}, presented {presented}")]
    CsrRefused {
        /// What the policy allows.
        expected: String,
        /// What the CSR asked for.
        presented: String,
    },
    /// The CSR's self-signature does not verify.
    #[error("CSR signature does not verify: expected a signature by the CSR's own key ({reason})")]
    CsrBadSignature {
        /// The verifier's reason.
        reason: String,
    },
    /// The requested validity is empty or inverted.
    #[error(
        "invalid validity: expected not_before < not_after, presented {not_before} .. {not_after}"
    )]
    InvalidValidity {
        /// Requested start.
        not_before: time::OffsetDateTime,
        /// Requested end.
        not_after: time::OffsetDateTime,
    },
    /// A duration string (cfssl style, e.g. `8760h`) did not parse.
    #[error("invalid duration {presented:?}: expected e.g. 24h, 90d, 876000h, 30m")]
    InvalidDuration {
        /// The string as presented.
        presented: String,
    },
    /// Chain verification (rustls-webpki) failed.
    #[error(
        "chain verification failed for {subject}: expected a chain to one of {anchors} trust anchor(s), presented {reason}"
    )]
    ChainVerification {
        /// The leaf: its subject, else its first URI or DNS SAN (an SVID has no subject).
        subject: String,
        /// Number of trust anchors tried.
        anchors: usize,
        /// webpki's reason.
        reason: String,
    },
    /// cfssl JSON input did not parse or has an invalid value.
    #[error("invalid cfssl {what}: {reason}")]
    CfsslJson {
        /// Which input (CSR JSON, signing config).
        what: &'static str,
        /// The reason.
        reason: String,
    },
    /// cfssl usage name not known.
    #[error("unknown cfssl usage {presented:?}: expected one of {expected}")]
    UnknownUsage {
        /// The usage as presented.
        presented: String,
        /// The known names.
        expected: &'static str,
    },
    /// The signing config has no such profile.
    #[error("unknown cfssl signing profile {presented:?}: expected one of {expected:?}")]
    UnknownProfile {
        /// The profile asked for.
        presented: String,
        /// The profiles present.
        expected: Vec<String>,
    },
    /// A file that must not be overwritten already exists.
    #[error(
        "refusing to overwrite existing file {path} (expected no file; pass --force to replace it)"
    )]
    FileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rcgen refused to build the certificate or CSR.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}

/// The foundation's errors (SPIFFE IDs, SAN types) as ours, same fields and text.
impl From<mtls_identity::Error> for Error {
    fn from(error: mtls_identity::Error) -> Self {
        match error {
            mtls_identity::Error::InvalidSpiffeId { presented, reason } => {
                Error::InvalidSpiffeId { presented, reason }
            }
            other => Error::InvalidSan {
                expected: "a SAN type of DNS, URI, EMAIL or IP_ADDRESS".into(),
                presented: other.to_string(),
            },
        }
    }
}
