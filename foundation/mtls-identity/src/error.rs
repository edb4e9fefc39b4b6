//! The crate's one error type.

/// What went wrong, naming what was presented and what was expected.
///
/// ```
/// let err = "URL".parse::<mtls_identity::SanType>().unwrap_err();
/// assert!(matches!(err, mtls_identity::Error::InvalidSanType { .. }));
/// assert_eq!(
///     err.to_string(),
///     "san_type \"URL\" is not supported; expected one of DNS, URI, EMAIL, IP_ADDRESS"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SAN type name that is not one of Envoy's supported ones.
    #[error("san_type {presented:?} is not supported; expected one of DNS, URI, EMAIL, IP_ADDRESS")]
    InvalidSanType {
        /// The name as given (quoted in the message: it is text from configuration).
        presented: String,
    },
    /// A SPIFFE ID or trust domain is invalid.
    #[error("invalid SPIFFE ID or trust domain {presented:?}: {reason}")]
    InvalidSpiffeId {
        /// The string that was given (quoted in the message: it is text from input).
        presented: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A certificate x509-parser cannot read (feature `x509`).
    #[error("malformed {what}: {reason}")]
    MalformedCertificate {
        /// "certificate", or "certificate extension" (then the reason starts with the
        /// certificate's subject).
        what: &'static str,
        /// What the parser saw.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
