//! Counters and gauges of mtls-core, through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`, off by default).
//!
//! **Why the `metrics` facade** (and not the OpenTelemetry metrics API): a library links
//! only the facade — a few macros and an atomic pointer to whatever recorder the
//! *application* installs, with no exporter, registry, runtime or global state of ours.
//! The application picks the exporter (`metrics-exporter-prometheus`, an OpenTelemetry
//! bridge, statsd, ...), and tests read values back through `metrics-util`'s
//! `DebuggingRecorder` installed for one scope. Without a recorder every call is a load and
//! a branch; without the feature, every function here is an empty `#[inline]` body that the
//! compiler removes. The names follow gRPC's OpenTelemetry metrics (gRFC A118 for TLS
//! handshakes) where one exists, so an OpenTelemetry exporter shows the names gRPC uses.
//!
//! | metric (labels) | kind | Envoy | linkerd2-proxy |
//! |---|---|---|---|
//! | `grpc.server.tls.handshakes` / `grpc.client.tls.handshakes` (`grpc.tls.handshake.result`) | counter | `ssl.handshake`, `ssl.fail_verify_san`, `ssl.fail_verify_no_cert`, `ssl.fail_verify_error`, `ssl.connection_error` | `inbound_tls_detect`-style errors, `tcp_open_total` |
//! | `mtls.certificate.expiration_timestamp_seconds` (`mtls.certificate.kind`, `mtls.certificate.name`, `mtls.trust_domain`) | gauge | `ssl.certificate.<id>.expiration_unix_time_seconds`, `server.days_until_first_cert_expiring` | `identity_cert_expiration_timestamp_seconds` |
//! | `mtls.rotations` (`mtls.rotation.kind`) | counter | `sds.<secret>.update_success` | `identity_cert_refresh_count` |
//!
//! Handshakes are counted where they finish — by whoever drives them (mtls-tonic's server
//! and channel do; with plain tokio-rustls, call [`handshake`] after `accept`/`connect`),
//! because some outcomes never reach a certificate verifier (no client certificate, a
//! timeout, a protocol mismatch). Expiry gauges and rotations are recorded by the identity
//! and trust sources themselves ([`IdentityHandle`](crate::IdentityHandle),
//! [`TrustHandle`](crate::TrustHandle), the file sources, the Workload API source).
//!
//! ```
//! use mtls_core::metrics::{HandshakeResult, HandshakeSide};
//! let refused = std::io::Error::new(
//!     std::io::ErrorKind::InvalidData,
//!     rustls::Error::from(mtls_core::Error::SanMismatch { presented: "DNS:x".into(), expected: "DNS:y".into() }),
//! );
//! let result = HandshakeResult::of(&Err::<(), _>(refused));
//! assert_eq!(result.as_str(), "san_mismatch");
//! mtls_core::metrics::handshake(HandshakeSide::Server, result); // no-op without a recorder
//! ```

use std::fmt;
use std::io;

use crate::error::Error;

/// Counter `grpc.server.tls.handshakes`: TLS handshakes accepted by a server, by result.
pub const SERVER_TLS_HANDSHAKES: &str = "grpc.server.tls.handshakes";
/// Counter `grpc.client.tls.handshakes`: TLS handshakes made by a client, by result.
pub const CLIENT_TLS_HANDSHAKES: &str = "grpc.client.tls.handshakes";
/// Label of the handshake counters: a [`HandshakeResult::as_str`] value.
pub const HANDSHAKE_RESULT: &str = "grpc.tls.handshake.result";
/// Gauge: when a certificate we present or trust expires, in seconds since the Unix epoch.
pub const CERT_EXPIRATION: &str = "mtls.certificate.expiration_timestamp_seconds";
/// Label of [`CERT_EXPIRATION`]: `identity` or `trust_anchor`.
pub const CERT_KIND: &str = "mtls.certificate.kind";
/// Label of [`CERT_EXPIRATION`]: the SPIFFE ID (or subject) of an identity, the subject of
/// a trust anchor.
pub const CERT_NAME: &str = "mtls.certificate.name";
/// Label of [`CERT_EXPIRATION`] for a trust anchor: its trust domain (empty for a CA bundle).
pub const TRUST_DOMAIN: &str = "mtls.trust_domain";
/// Counter `mtls.rotations`: a new identity or trust bundle put in place.
pub const ROTATIONS: &str = "mtls.rotations";
/// Label of [`ROTATIONS`]: `identity` or `trust_bundle`.
pub const ROTATION_KIND: &str = "mtls.rotation.kind";

/// Which side of the handshake we were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeSide {
    /// We accepted the connection (counted in `grpc.server.tls.handshakes`).
    Server,
    /// We dialed (counted in `grpc.client.tls.handshakes`).
    Client,
}

/// How a TLS handshake ended: the `grpc.tls.handshake.result` label.
///
/// Failures are classified from mtls-core's verification [`Error`] carried inside the
/// rustls error (the policy's kind shows: SAN matchers, SPIFFE authorizer, dialed name),
/// else from rustls' own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeResult {
    /// Completed: the peer was verified and accepted (Envoy `ssl.handshake`).
    Success,
    /// The client sent no certificate (Envoy `ssl.fail_verify_no_cert`).
    NoCertificate,
    /// No SAN matcher accepted the peer (Envoy `ssl.fail_verify_san`).
    SanMismatch,
    /// The SPIFFE authorizer refused the peer's ID (Envoy `ssl.fail_verify_san`).
    AuthorizerDenied,
    /// The server certificate is not valid for the dialed name (no policy set).
    NameMismatch,
    /// The chain does not lead to a trusted root, or the trust domain has no bundle.
    UnknownCa,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is revoked by a CRL.
    Revoked,
    /// The peer's certificate breaks an X509-SVID rule (URI SAN count, ID, key usage, cA).
    SvidInvalid,
    /// The peer refused us with an alert (it rejected our certificate, typically).
    PeerRejected,
    /// No version, key-exchange group or cipher suite in common.
    Incompatible,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else: a malformed chain, a reset, a protocol error (Envoy
    /// `ssl.fail_verify_error` / `ssl.connection_error`).
    Other,
}

impl HandshakeResult {
    /// Every result, in the order of the table above.
    pub const ALL: [HandshakeResult; 14] = [
        HandshakeResult::Success,
        HandshakeResult::NoCertificate,
        HandshakeResult::SanMismatch,
        HandshakeResult::AuthorizerDenied,
        HandshakeResult::NameMismatch,
        HandshakeResult::UnknownCa,
        HandshakeResult::Expired,
        HandshakeResult::NotYetValid,
        HandshakeResult::Revoked,
        HandshakeResult::SvidInvalid,
        HandshakeResult::PeerRejected,
        HandshakeResult::Incompatible,
        HandshakeResult::Timeout,
        HandshakeResult::Other,
    ];

    /// The result of a tokio-rustls `accept`/`connect`.
    pub fn of<T>(result: &io::Result<T>) -> Self {
        match result {
            Ok(_) => HandshakeResult::Success,
            Err(error) => Self::of_error(error),
        }
    }

    /// The result a handshake error stands for.
    pub fn of_error(error: &io::Error) -> Self {
        if let Some(ours) = Error::from_io(error) {
            return Self::of_rejection(ours);
        }
        if error.kind() == io::ErrorKind::TimedOut {
            return HandshakeResult::Timeout;
        }
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeResult::NoCertificate,
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
                HandshakeResult::NoCertificate
            }
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::ProtocolVersion
                | rustls::AlertDescription::HandshakeFailure
                | rustls::AlertDescription::InsufficientSecurity
                | rustls::AlertDescription::NoApplicationProtocol,
            ))
            | Some(rustls::Error::PeerIncompatible(_)) => HandshakeResult::Incompatible,
            Some(rustls::Error::AlertReceived(_)) => HandshakeResult::PeerRejected,
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => HandshakeResult::Expired,
                rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. } => {
                    HandshakeResult::NotYetValid
                }
                rustls::CertificateError::UnknownIssuer => HandshakeResult::UnknownCa,
                rustls::CertificateError::Revoked => HandshakeResult::Revoked,
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    HandshakeResult::NameMismatch
                }
                _ => HandshakeResult::Other,
            },
            _ => HandshakeResult::Other,
        }
    }

    /// The result a verification [`Error`] stands for.
    pub fn of_rejection(error: &Error) -> Self {
        match error {
            Error::SanMismatch { .. } => HandshakeResult::SanMismatch,
            Error::Unauthorized { .. } => HandshakeResult::AuthorizerDenied,
            Error::NameMismatch { .. } => HandshakeResult::NameMismatch,
            Error::UnknownIssuer { .. } | Error::UnknownTrustDomain { .. } => {
                HandshakeResult::UnknownCa
            }
            Error::Expired { .. } => HandshakeResult::Expired,
            Error::NotYetValid { .. } => HandshakeResult::NotYetValid,
            Error::Revoked { .. } => HandshakeResult::Revoked,
            Error::SvidUriSanCount { .. }
            | Error::SvidInvalidId { .. }
            | Error::SvidKeyUsage { .. }
            | Error::CaCertificateAsLeaf { .. } => HandshakeResult::SvidInvalid,
            _ => HandshakeResult::Other,
        }
    }

    /// The label value: `success`, `no_certificate`, `san_mismatch`, `authorizer_denied`,
    /// `name_mismatch`, `unknown_ca`, `expired`, `not_yet_valid`, `revoked`,
    /// `svid_invalid`, `peer_rejected`, `incompatible`, `timeout`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Success => "success",
            HandshakeResult::NoCertificate => "no_certificate",
            HandshakeResult::SanMismatch => "san_mismatch",
            HandshakeResult::AuthorizerDenied => "authorizer_denied",
            HandshakeResult::NameMismatch => "name_mismatch",
            HandshakeResult::UnknownCa => "unknown_ca",
            HandshakeResult::Expired => "expired",
            HandshakeResult::NotYetValid => "not_yet_valid",
            HandshakeResult::Revoked => "revoked",
            HandshakeResult::SvidInvalid => "svid_invalid",
            HandshakeResult::PeerRejected => "peer_rejected",
            HandshakeResult::Incompatible => "incompatible",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::Other => "other",
        }
    }
}

impl fmt::Display for HandshakeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts one finished handshake in `grpc.{server,client}.tls.handshakes`.
#[inline]
pub fn handshake(side: HandshakeSide, result: HandshakeResult) {
    #[cfg(feature = "metrics")]
    {
        let name = match side {
            HandshakeSide::Server => SERVER_TLS_HANDSHAKES,
            HandshakeSide::Client => CLIENT_TLS_HANDSHAKES,
        };
        ::metrics::counter!(name, HANDSHAKE_RESULT => result.as_str()).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (side, result);
}

/// Describes every metric of this crate to the installed recorder (units and help text, the
/// `# HELP` lines of a Prometheus scrape). Call once after installing the recorder; a no-op
/// without the feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_gauge};
        describe_counter!(
            SERVER_TLS_HANDSHAKES,
            "TLS handshakes accepted, by grpc.tls.handshake.result"
        );
        describe_counter!(
            CLIENT_TLS_HANDSHAKES,
            "TLS handshakes made as a client, by grpc.tls.handshake.result"
        );
        describe_gauge!(
            CERT_EXPIRATION,
            Unit::Seconds,
            "Expiry (Unix time) of our identity certificate and of each trust anchor"
        );
        describe_counter!(ROTATIONS, "New identities and trust bundles put in place");
    }
}

/// What a [`Cell`](crate::source::Cell) records when a value is put in place.
pub(crate) trait Installed {
    /// `rotated`: replaces an earlier value (false for the first one).
    fn installed(&self, rotated: bool);
}

#[cfg(feature = "metrics")]
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

impl Installed for crate::identity::Identity {
    #[inline]
    fn installed(&self, rotated: bool) {
        #[cfg(feature = "metrics")]
        {
            let name = self
                .spiffe_id()
                .map_or_else(|| self.subject().to_owned(), |id| id.to_string());
            ::metrics::gauge!(CERT_EXPIRATION, CERT_KIND => "identity", CERT_NAME => name)
                .set(unix_seconds(self.not_after()));
            if rotated {
                ::metrics::counter!(ROTATIONS, ROTATION_KIND => "identity").increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = rotated;
    }
}

impl Installed for crate::trust::TrustBundle {
    #[inline]
    fn installed(&self, rotated: bool) {
        #[cfg(feature = "metrics")]
        {
            let domains: Vec<Option<&crate::TrustDomain>> = if self.is_spiffe() {
                self.trust_domains().map(Some).collect()
            } else {
                vec![None]
            };
            for td in domains {
                let domain = td.map(ToString::to_string).unwrap_or_default();
                for der in self.roots(td) {
                    // Anchors were parsed once already; one that x509-parser cannot read
                    // has no expiry to show.
                    let Ok(info) = crate::cert::LeafInfo::parse(der) else {
                        continue;
                    };
                    ::metrics::gauge!(CERT_EXPIRATION, CERT_KIND => "trust_anchor",
                        CERT_NAME => info.subject.clone(), TRUST_DOMAIN => domain.clone())
                    .set(unix_seconds(info.not_after));
                }
            }
            if rotated {
                ::metrics::counter!(ROTATIONS, ROTATION_KIND => "trust_bundle").increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = rotated;
    }
}
