//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `mtls-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading identities and trust, building configs,
/// or verifying a peer.
///
/// Verification variants name what the peer **presented** and what the policy
/// **expected**, so the message alone tells an operator why a handshake failed.
///
/// During a handshake these errors reach rustls as
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`; get the detailed
/// reason back with [`Error::from_rustls`] or [`Error::from_io`]:
///
/// ```
/// use mtls_core::Error;
/// let io_err = std::io::Error::other("connection reset");
/// assert!(Error::from_io(&io_err).is_none());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- loading material -------------------------------------------------------------
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// PEM input was not what was expected.
    #[error("invalid PEM in {what}: {reason}")]
    Pem {
        /// What was being read (e.g. "certificate chain").
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A private key could not be loaded by the crypto provider.
    #[error("unsupported or invalid private key: {reason}")]
    InvalidKey {
        /// Why it failed.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match certificate {subject}: {reason}")]
    KeyMismatch {
        /// Subject of the leaf certificate.
        subject: String,
        /// Why they do not match.
        reason: String,
    },
    /// A certificate could not be parsed.
    #[error("malformed certificate: {reason}")]
    MalformedCertificate {
        /// Why it failed.
        reason: String,
    },
    /// A trust anchor could not be used.
    #[error("invalid trust anchor: {reason}")]
    InvalidTrustAnchor {
        /// Why it failed.
        reason: String,
    },
    /// A certificate revocation list could not be parsed.
    #[error("invalid CRL: {reason}")]
    InvalidCrl {
        /// Why it failed.
        reason: String,
    },
    /// A SPIFFE bundle (JSON or PEM) could not be used: the reason names what was expected
    /// and what was seen.
    #[error("SPIFFE bundle of trust domain {trust_domain}: {reason}")]
    InvalidBundle {
        /// The trust domain the bundle was read for.
        trust_domain: String,
        /// Why it failed.
        reason: String,
    },
    /// A JWT authority (a public JWK) cannot go into a SPIFFE bundle.
    #[error("JWT authority with kid \"{kid}\": {reason}")]
    InvalidJwtAuthority {
        /// The key ID given.
        kid: String,
        /// Why it failed.
        reason: String,
    },
    /// A bundle endpoint could not be fetched (the last good bundle stays in use).
    #[error("bundle endpoint {url}: {reason}")]
    BundleFetch {
        /// The endpoint's URL.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A bundle with a lower `spiffe_sequence` than the current one was refused: the
    /// current bundle stays.
    #[error(
        "SPIFFE bundle of trust domain {trust_domain}: sequence {presented} is older than the current {current}; keeping the current bundle"
    )]
    StaleBundle {
        /// The trust domain.
        trust_domain: String,
        /// The sequence of the refused bundle.
        presented: u64,
        /// The sequence of the bundle in use.
        current: u64,
    },
    /// A SPIFFE ID or trust domain given in configuration is invalid.
    #[error("invalid SPIFFE ID or trust domain {presented:?}: {reason}")]
    InvalidSpiffeId {
        /// The string that was given.
        presented: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A SAN matcher given in configuration is invalid.
    #[error("invalid SAN matcher: {reason}")]
    InvalidSanMatcher {
        /// Why it is invalid.
        reason: String,
    },
    /// The configuration cannot be built.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Why.
        reason: String,
    },
    /// A [`TlsPolicy`](crate::TlsPolicy) cannot work (e.g. TLS 1.2 with only hybrid
    /// groups, no cipher suite left, a group the crypto provider lacks).
    #[error("invalid TLS policy: {field}: {reason}")]
    InvalidTlsPolicy {
        /// The policy field at fault (`min_version`, `groups`, `cipher_suites`, ...).
        field: &'static str,
        /// Why, and what was given.
        reason: String,
    },
    /// The SPIFFE Workload API gave no usable X509-SVID (feature `workload-api`).
    #[error("SPIFFE Workload API at {endpoint}: {reason}")]
    WorkloadApi {
        /// The endpoint (`unix:///path/to/agent.sock`), or the variable it should come from.
        endpoint: String,
        /// What went wrong (e.g. no SVID within the start-up timeout, the socket is absent).
        reason: String,
    },

    /// Our own certificate (read from `path`) has expired. File sources refuse it at start
    /// and keep the last good identity when one appears later.
    #[error(
        "our certificate {subject} in {path} expired at {not_after}; expected a certificate valid now"
    )]
    IdentityExpired {
        /// The certificate file.
        path: PathBuf,
        /// Subject (or SPIFFE ID) of the leaf.
        subject: String,
        /// End of validity, RFC 3339.
        not_after: String,
    },
    /// Our own certificate (read from `path`) is not valid yet.
    #[error(
        "our certificate {subject} in {path} is not valid before {not_before}; expected a certificate valid now"
    )]
    IdentityNotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Subject (or SPIFFE ID) of the leaf.
        subject: String,
        /// Start of validity, RFC 3339.
        not_before: String,
    },
    /// Our own certificate (read from `path`) does not chain to the trust it is checked
    /// against (e.g. a leaf of another CA dropped into a watched file).
    #[error("our certificate {presented} in {path} does not chain to {expected}")]
    IdentityUntrusted {
        /// The certificate file.
        path: PathBuf,
        /// Subject (or SPIFFE ID) of the leaf and its issuer: `spiffe://... (issuer CN=...)`.
        presented: String,
        /// The roots it was checked against, and why it failed.
        expected: String,
    },

    // ---- verifying a peer -------------------------------------------------------------
    /// The peer presented a CA certificate as its end-entity certificate.
    #[error(
        "peer presented a CA certificate ({subject}) as its leaf; expected an end-entity certificate (cA=false)"
    )]
    CaCertificateAsLeaf {
        /// Subject of the presented certificate.
        subject: String,
    },
    /// An X509-SVID must carry exactly one URI SAN.
    #[error("peer presented {count} URI SANs {presented:?}; an X509-SVID must have exactly one")]
    SvidUriSanCount {
        /// How many URI SANs were presented.
        count: usize,
        /// The URI SANs.
        presented: Vec<String>,
    },
    /// The URI SAN is not a valid SPIFFE ID (or has the root path).
    #[error(
        "peer presented URI SAN {presented:?}, which is not a valid X509-SVID SPIFFE ID: {reason}"
    )]
    SvidInvalidId {
        /// The URI SAN.
        presented: String,
        /// Why it is not acceptable.
        reason: String,
    },
    /// The SVID's key usage breaks the X509-SVID rules.
    #[error(
        "peer X509-SVID {presented} has key usage {key_usage}; expected digitalSignature and no keyCertSign/cRLSign"
    )]
    SvidKeyUsage {
        /// SPIFFE ID of the peer.
        presented: String,
        /// The key usage flags that were presented.
        key_usage: String,
    },
    /// The peer's trust domain has no bundle.
    #[error(
        "peer {presented} belongs to trust domain {trust_domain}, which has no bundle; expected one of [{known}]"
    )]
    UnknownTrustDomain {
        /// SPIFFE ID of the peer.
        presented: String,
        /// Its trust domain.
        trust_domain: String,
        /// The trust domains we have bundles for, comma-separated.
        known: String,
    },
    /// The certificate has expired.
    #[error("peer certificate {subject} expired at {not_after} (now {now})")]
    Expired {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// End of validity, RFC 3339.
        not_after: String,
        /// Verification time, RFC 3339.
        now: String,
    },
    /// The certificate is not valid yet.
    #[error("peer certificate {subject} is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// Start of validity, RFC 3339.
        not_before: String,
        /// Verification time, RFC 3339.
        now: String,
    },
    /// The chain does not lead to a trusted root.
    #[error("peer certificate {subject} (issuer {issuer}) does not chain to {trusted}")]
    UnknownIssuer {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// Issuer named in the leaf.
        issuer: String,
        /// Which roots were tried (e.g. "the bundle of trust domain example.org").
        trusted: String,
    },
    /// A CA certificate of the verified path has a keyUsage extension without keyCertSign,
    /// so it may not sign certificates (RFC 5280 §6.1.4(n), X509-SVID §3.2/§4.3).
    #[error(
        "peer certificate {subject} chains through CA {ca}, whose key usage {key_usage} lacks keyCertSign; expected keyCertSign on every CA of the path"
    )]
    CaKeyUsage {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// Subject of the CA certificate.
        ca: String,
        /// The key usage flags it has.
        key_usage: String,
    },
    /// The certificate was revoked by a CRL.
    #[error("peer certificate {subject} (serial {serial}) is revoked by a CRL")]
    Revoked {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// Its serial, hex.
        serial: String,
    },
    /// Any other chain validation failure reported by webpki.
    #[error("peer certificate {subject} failed chain validation: {reason}")]
    Chain {
        /// Subject (or SPIFFE ID) of the peer.
        subject: String,
        /// The webpki error.
        reason: String,
    },
    /// The SPIFFE authorizer refused the peer.
    #[error("peer presented {presented}; expected {expected}")]
    Unauthorized {
        /// The peer's SPIFFE ID.
        presented: String,
        /// What the authorizer accepts.
        expected: String,
    },
    /// No SAN matcher accepted any of the peer's SANs.
    #[error("peer presented SANs [{presented}]; expected a SAN matching one of [{expected}]")]
    SanMismatch {
        /// The peer's SANs, `TYPE:value`, comma-separated.
        presented: String,
        /// The matchers, comma-separated.
        expected: String,
    },
    /// The server certificate is not valid for the name that was dialed (no policy given).
    #[error("server certificate with SANs [{presented}] is not valid for {expected}")]
    NameMismatch {
        /// The SANs presented, comma-separated.
        presented: String,
        /// The server name that was dialed.
        expected: String,
    },
}

impl Error {
    /// Finds our detailed error inside a rustls error produced by one of our verifiers.
    ///
    /// ```
    /// use mtls_core::Error;
    /// let rejected = Error::Unauthorized {
    ///     presented: "spiffe://example.org/intruder".into(),
    ///     expected: "member of example.org".into(),
    /// };
    /// let tls: rustls::Error = rejected.into();
    /// assert!(matches!(Error::from_rustls(&tls), Some(Error::Unauthorized { .. })));
    /// ```
    pub fn from_rustls(err: &rustls::Error) -> Option<&Error> {
        match err {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<Error>()
            }
            rustls::Error::Other(other) => other.0.downcast_ref::<Error>(),
            _ => None,
        }
    }

    /// Finds our detailed error inside an I/O error returned by a tokio-rustls handshake.
    ///
    /// ```
    /// use mtls_core::Error;
    /// let tls: rustls::Error = Error::Revoked { subject: "x".into(), serial: "01".into() }.into();
    /// let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
    /// assert!(matches!(Error::from_io(&io), Some(Error::Revoked { .. })));
    /// ```
    pub fn from_io(err: &io::Error) -> Option<&Error> {
        let inner = err.get_ref()?;
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Error::from_rustls(tls);
        }
        inner.downcast_ref::<Error>()
    }

    /// Whether this error is a rejection of a peer (as opposed to a local loading or
    /// configuration problem).
    ///
    /// ```
    /// use mtls_core::Error;
    /// assert!(Error::Revoked { subject: "x".into(), serial: "01".into() }.is_peer_rejection());
    /// assert!(!Error::InvalidConfig { reason: "x".into() }.is_peer_rejection());
    /// ```
    pub fn is_peer_rejection(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. }
                | Error::Pem { .. }
                | Error::InvalidKey { .. }
                | Error::KeyMismatch { .. }
                | Error::InvalidTrustAnchor { .. }
                | Error::InvalidCrl { .. }
                | Error::InvalidBundle { .. }
                | Error::InvalidJwtAuthority { .. }
                | Error::StaleBundle { .. }
                | Error::BundleFetch { .. }
                | Error::InvalidSpiffeId { .. }
                | Error::InvalidSanMatcher { .. }
                | Error::InvalidConfig { .. }
                | Error::InvalidTlsPolicy { .. }
                | Error::WorkloadApi { .. }
                | Error::IdentityExpired { .. }
                | Error::IdentityNotYetValid { .. }
                | Error::IdentityUntrusted { .. }
        )
    }
}

/// The foundation's errors (SPIFFE IDs, SAN types) as ours, same fields and text.
impl From<mtls_identity::Error> for Error {
    fn from(error: mtls_identity::Error) -> Self {
        match error {
            mtls_identity::Error::InvalidSpiffeId { presented, reason } => {
                Error::InvalidSpiffeId { presented, reason }
            }
            mtls_identity::Error::InvalidSanType { .. } => Error::InvalidSanMatcher {
                reason: error.to_string(),
            },
            other => Error::InvalidConfig {
                reason: other.to_string(),
            },
        }
    }
}

impl From<Error> for rustls::Error {
    /// Wraps a peer rejection so that rustls sends a `certificate_unknown` alert while the
    /// detailed reason stays reachable through [`Error::from_rustls`].
    fn from(err: Error) -> Self {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(err),
        )))
    }
}
