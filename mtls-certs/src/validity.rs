//! Validity periods: lifetimes, backdating, explicit bounds, and cfssl-style durations.

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

/// Parses a cfssl/Go-style duration: a sequence of `<number><unit>` with units `ns`, `us`,
/// `ms`, `s`, `m`, `h`, plus `d` (days) and `y` (365 days) as conveniences; fractions allowed
/// (`1.5h`).
///
/// ```
/// use std::time::Duration;
/// use mtls_certs::parse_duration;
///
/// assert_eq!(parse_duration("24h")?, Duration::from_secs(86_400));
/// assert_eq!(parse_duration("90d")?, Duration::from_secs(90 * 86_400));
/// assert_eq!(parse_duration("876000h")?, Duration::from_secs(876_000 * 3600));
/// assert_eq!(parse_duration("1h30m")?, Duration::from_secs(5400));
/// assert!(parse_duration("soon").is_err());
/// # Ok::<(), mtls_certs::Error>(())
/// ```
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || Error::InvalidDuration {
        presented: s.to_owned(),
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "y" => 365.0 * 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * secs_per_unit;
    }
    if !total.is_finite() || total <= 0.0 || total > 1e13 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        for bad in ["", "h", "10", "10x", "-5h", "0h"] {
            assert!(
                matches!(parse_duration(bad), Err(Error::InvalidDuration { .. })),
                "{bad}"
            );
        }
    }

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
