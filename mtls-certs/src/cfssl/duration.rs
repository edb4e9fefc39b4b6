//! Durations as cfssl writes them.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration as cfssl configs (and Go) write it, `"expiry": "8760h"`: a sequence of
/// `<number><unit>` with units `ns`, `us`, `ms`, `s`, `m`, `h`, plus `d` (days) and `y`
/// (365 days) as conveniences; fractions allowed (`1.5h`). The `mtls` command line takes
/// its durations (`--ttl`, `--timeout`) this way too.
///
/// ```
/// use std::time::Duration;
/// use mtls_certs::cfssl::parse_duration;
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
}
