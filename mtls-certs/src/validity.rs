//! Validity periods: lifetimes, backdating and explicit bounds.

use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Default backdating of `not_before` (as cfssl: 5 minutes) to absorb clock skew.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Default leaf lifetime: 24 hours.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default root CA lifetime: 10 years (3650 days).
pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Default intermediate CA lifetime: 5 years (1825 days).
pub const DEFAULT_INTERMEDIATE_TTL: Duration = Duration::from_secs(1825 * 24 * 3600);

/// When a certificate is valid.
///
/// By default the period starts `backdate` before now and lasts `ttl` from now. Either end
/// can be set explicitly (tests use this to make expired or not-yet-valid certificates).
///
/// ```
/// use std::time::Duration;
/// use mtls_certs::Validity;
/// use time::OffsetDateTime;
///
/// let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
/// let (nb, na) = Validity::for_ttl(Duration::from_secs(3600)).resolve(now)?;
/// assert_eq!(na - now, time::Duration::hours(1));
/// assert_eq!(now - nb, time::Duration::minutes(5));
///
/// let expired = Validity::between(now - time::Duration::hours(2), now - time::Duration::hours(1));
/// assert!(expired.resolve(now)?.1 < now);
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Validity {
    /// Lifetime counted from now (ignored when `not_after` is set).
    pub ttl: Duration,
    /// How far before now `not_before` is placed (ignored when `not_before` is set).
    pub backdate: Duration,
    /// Explicit start.
    pub not_before: Option<OffsetDateTime>,
    /// Explicit end.
    pub not_after: Option<OffsetDateTime>,
}

impl Validity {
    /// `ttl` from now, backdated by [`DEFAULT_BACKDATE`].
    pub fn for_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            backdate: DEFAULT_BACKDATE,
            not_before: None,
            not_after: None,
        }
    }

    /// Exactly `not_before .. not_after`.
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Self {
            ttl: DEFAULT_LEAF_TTL,
            backdate: DEFAULT_BACKDATE,
            not_before: Some(not_before),
            not_after: Some(not_after),
        }
    }

    /// The same, backdated by `backdate` instead of the default.
    pub fn backdated_by(mut self, backdate: Duration) -> Self {
        self.backdate = backdate;
        self
    }

    /// The concrete `(not_before, not_after)` for an issuance at `now` (seconds precision).
    ///
    /// Fails with [`Error::InvalidValidity`] if the period is empty.
    pub fn resolve(&self, now: OffsetDateTime) -> Result<(OffsetDateTime, OffsetDateTime)> {
        let now = truncate(now);
        let out_of_range = |d: Duration| Error::InvalidDuration {
            presented: format!("{d:?} (the resulting date is outside years 1..9999)"),
        };
        let not_before = match self.not_before {
            Some(t) => truncate(t),
            None => now
                .checked_sub(to_time(self.backdate))
                .ok_or_else(|| out_of_range(self.backdate))?,
        };
        let not_after = match self.not_after {
            Some(t) => truncate(t),
            None => now
                .checked_add(to_time(self.ttl))
                .ok_or_else(|| out_of_range(self.ttl))?,
        };
        if not_before >= not_after {
            return Err(Error::InvalidValidity {
                not_before,
                not_after,
            });
        }
        Ok((not_before, not_after))
    }
}

impl Default for Validity {
    /// The default leaf validity: 24 hours, backdated 5 minutes.
    fn default() -> Self {
        Self::for_ttl(DEFAULT_LEAF_TTL)
    }
}

pub(crate) fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

pub(crate) fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_ttl_is_an_error_not_a_panic() {
        let v = Validity::for_ttl(Duration::from_secs(10_000_000_000_000));
        assert!(matches!(
            v.resolve(OffsetDateTime::now_utc()),
            Err(Error::InvalidDuration { .. })
        ));
    }

    #[test]
    fn inverted_validity_refused() {
        let now = OffsetDateTime::now_utc();
        let v = Validity::between(now, now - time::Duration::hours(1));
        assert!(matches!(v.resolve(now), Err(Error::InvalidValidity { .. })));
    }
}
