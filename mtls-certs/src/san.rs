//! Typed subject alternative names, and cfssl's host classification.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};

/// A subject alternative name, typed.
///
/// [`SubjectAltName::classify`] sorts a free-form host string the way cfssl sorts its
/// `hosts`: an IP address, else an e-mail address, else a URI (it has a scheme), else a DNS name.
///
/// ```
/// use mtls_certs::SubjectAltName;
///
/// assert_eq!(SubjectAltName::classify("10.0.0.1"), Some(SubjectAltName::Ip("10.0.0.1".parse().unwrap())));
/// assert_eq!(SubjectAltName::classify("ops@example.com"), Some(SubjectAltName::Email("ops@example.com".into())));
/// assert_eq!(SubjectAltName::classify("spiffe://example.org/api"), Some(SubjectAltName::Uri("spiffe://example.org/api".into())));
/// assert_eq!(SubjectAltName::classify("app-internal-api"), Some(SubjectAltName::Dns("app-internal-api".into())));
/// assert_eq!(SubjectAltName::classify(""), None); // cfssl ignores empty hosts
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "type", content = "value", rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum SubjectAltName {
    /// `dNSName`.
    Dns(String),
    /// `iPAddress`.
    Ip(IpAddr),
    /// `rfc822Name` (e-mail).
    Email(String),
    /// `uniformResourceIdentifier` (SPIFFE IDs live here).
    Uri(String),
}

impl SubjectAltName {
    /// Classifies a host string as cfssl does; empty (or blank) strings give `None`.
    pub fn classify(host: &str) -> Option<Self> {
        let host = host.trim();
        if host.is_empty() {
            return None;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Self::Ip(ip));
        }
        if is_email(host) {
            return Some(Self::Email(host.to_owned()));
        }
        if is_uri(host) {
            return Some(Self::Uri(host.to_owned()));
        }
        Some(Self::Dns(host.to_owned()))
    }

    /// The value as text (an IP in its usual notation).
    pub fn value(&self) -> String {
        match self {
            Self::Dns(s) | Self::Email(s) | Self::Uri(s) => s.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType> {
        let ia5 = |s: &str| {
            rcgen::string::Ia5String::try_from(s).map_err(|_| Error::InvalidSan {
                expected: "an ASCII (IA5String) name".into(),
                presented: s.to_owned(),
            })
        };
        Ok(match self {
            Self::Dns(s) => {
                if !is_dns_name(s) {
                    return Err(Error::InvalidSan {
                        expected:
                            "a DNS name of letters, digits, '-', '.' (optionally a leading '*.')"
                                .into(),
                        presented: s.clone(),
                    });
                }
                rcgen::SanType::DnsName(ia5(s)?)
            }
            Self::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            Self::Email(s) => rcgen::SanType::Rfc822Name(ia5(s)?),
            Self::Uri(s) => rcgen::SanType::URI(ia5(s)?),
        })
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(s) => write!(f, "DNS:{s}"),
            Self::Ip(ip) => write!(f, "IP:{ip}"),
            Self::Email(s) => write!(f, "email:{s}"),
            Self::Uri(s) => write!(f, "URI:{s}"),
        }
    }
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !s.contains("://")
        }
        None => false,
    }
}

fn is_uri(s: &str) -> bool {
    // cfssl uses url.Parse and keeps the name when it has a scheme and a host.
    match s.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !rest.is_empty()
        }
        None => false,
    }
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_order_matches_cfssl() {
        assert!(matches!(
            SubjectAltName::classify("::1"),
            Some(SubjectAltName::Ip(_))
        ));
        assert!(matches!(
            SubjectAltName::classify("a@b"),
            Some(SubjectAltName::Email(_))
        ));
        assert!(matches!(
            SubjectAltName::classify("https://x"),
            Some(SubjectAltName::Uri(_))
        ));
        assert!(matches!(
            SubjectAltName::classify("*.svc.local"),
            Some(SubjectAltName::Dns(_))
        ));
        assert_eq!(SubjectAltName::classify("  "), None);
    }

    #[test]
    fn bad_dns_name_refused() {
        let err = SubjectAltName::Dns("bad name".into())
            .to_rcgen()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSan { .. }));
    }
}
