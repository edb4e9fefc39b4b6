//! When to renew a certificate.

use time::OffsetDateTime;

use crate::inspect::CertificateSummary;

/// Renew once a fraction of the lifetime has passed. Default 2/3 (step-ca, cert-manager);
/// SPIRE uses 1/2.
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, CertificateSummary, LeafParams, RenewalPolicy};
/// use time::{Duration, OffsetDateTime};
///
/// let ca = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let now = OffsetDateTime::now_utc();
/// let leaf = ca.issue(&LeafParams::server(["a.internal"]).valid_between(now - Duration::hours(9), now + Duration::hours(3)))?;
/// let summary = CertificateSummary::from_pem(&leaf.cert_pem())?;
/// assert!(RenewalPolicy::default().check(&summary, now).due);       // 3/4 elapsed > 2/3
/// assert!(RenewalPolicy::spire().check(&summary, now).due);         // > 1/2
/// assert!(!RenewalPolicy::fraction(0.8).check(&summary, now).due);  // < 4/5
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RenewalPolicy {
    /// Fraction of the lifetime after which renewal is due, in `(0, 1]`.
    pub fraction: f64,
}

impl RenewalPolicy {
    /// Renew after `fraction` of the lifetime (clamped into `(0, 1]`).
    pub fn fraction(fraction: f64) -> Self {
        let fraction = if fraction.is_finite() {
            fraction.clamp(f64::EPSILON, 1.0)
        } else {
            2.0 / 3.0
        };
        Self { fraction }
    }

    /// SPIRE's policy: half the lifetime.
    pub fn spire() -> Self {
        Self::fraction(0.5)
    }

    /// Whether and when a certificate with this validity is due for renewal at `now`.
    pub fn check_validity(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> RenewalStatus {
        let lifetime = not_after - not_before;
        let renew_at = not_before + lifetime * self.fraction;
        RenewalStatus {
            due: now >= renew_at,
            expired: now >= not_after,
            renew_at,
            not_after,
            remaining: not_after - now,
        }
    }

    /// [`check_validity`](Self::check_validity) for an inspected certificate.
    pub fn check(&self, cert: &CertificateSummary, now: OffsetDateTime) -> RenewalStatus {
        self.check_validity(cert.not_before, cert.not_after, now)
    }
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            fraction: 2.0 / 3.0,
        }
    }
}

/// The answer of a [`RenewalPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RenewalStatus {
    /// Renewal is due now.
    pub due: bool,
    /// The certificate has already expired.
    pub expired: bool,
    /// When renewal becomes due.
    #[cfg_attr(feature = "serde", serde(with = "time::serde::rfc3339"))]
    pub renew_at: OffsetDateTime,
    /// When the certificate expires.
    #[cfg_attr(feature = "serde", serde(with = "time::serde::rfc3339"))]
    pub not_after: OffsetDateTime,
    /// Time left until expiry (negative once expired).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub remaining: time::Duration,
}
