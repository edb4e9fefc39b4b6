//! Typed subject alternative names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A subject alternative name, typed: what a certificate carries and what an issuer puts in.
///
/// One text form ([`Display`](fmt::Display)): `DNS:api.internal`, `URI:spiffe://…`,
/// `email:ops@example.com`, `IP:10.0.0.1` (the `subjectAltName` syntax of OpenSSL's
/// configuration). [`value`](Self::value) is the bare value as Envoy matches it.
///
/// [`SubjectAltName::classify`] sorts a free-form host string the way cfssl sorts its
/// `hosts`: an IP address, else an e-mail address, else a URI (it has a scheme), else a DNS
/// name.
///
/// ```
/// use mtls_identity::SubjectAltName;
///
/// assert_eq!(SubjectAltName::classify("10.0.0.1"), Some(SubjectAltName::IpAddress("10.0.0.1".parse().unwrap())));
/// assert_eq!(SubjectAltName::classify("ops@example.com"), Some(SubjectAltName::Email("ops@example.com".into())));
/// assert_eq!(SubjectAltName::classify("spiffe://example.org/api"), Some(SubjectAltName::Uri("spiffe://example.org/api".into())));
/// assert_eq!(SubjectAltName::classify("app-internal-api"), Some(SubjectAltName::Dns("app-internal-api".into())));
/// assert_eq!(SubjectAltName::classify(""), None); // cfssl ignores empty hosts
/// assert_eq!(SubjectAltName::Uri("spiffe://example.org/a".into()).to_string(), "URI:spiffe://example.org/a");
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
    /// `uniformResourceIdentifier`; SPIFFE IDs live here.
    Uri(String),
    /// `rfc822Name` (e-mail).
    Email(String),
    /// `iPAddress`.
    #[cfg_attr(feature = "serde", serde(rename = "ip"))]
    IpAddress(IpAddr),
}

impl SubjectAltName {
    /// Classifies a host string as cfssl does; empty (or blank) strings give `None`.
    ///
    /// ```
    /// # use mtls_identity::SubjectAltName;
    /// assert!(matches!(SubjectAltName::classify("::1"), Some(SubjectAltName::IpAddress(_))));
    /// assert!(matches!(SubjectAltName::classify("*.svc.local"), Some(SubjectAltName::Dns(_))));
    /// ```
    pub fn classify(host: &str) -> Option<Self> {
        let host = host.trim();
        if host.is_empty() {
            return None;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Self::IpAddress(ip));
        }
        if is_email(host) {
            return Some(Self::Email(host.to_owned()));
        }
        if is_uri(host) {
            return Some(Self::Uri(host.to_owned()));
        }
        Some(Self::Dns(host.to_owned()))
    }

    /// The SAN's type.
    ///
    /// ```
    /// # use mtls_identity::{SanType, SubjectAltName};
    /// assert_eq!(SubjectAltName::Dns("a".into()).san_type(), SanType::Dns);
    /// ```
    pub fn san_type(&self) -> SanType {
        match self {
            Self::Dns(_) => SanType::Dns,
            Self::Uri(_) => SanType::Uri,
            Self::Email(_) => SanType::Email,
            Self::IpAddress(_) => SanType::IpAddress,
        }
    }

    /// The value as Envoy renders it for matching: IPv6 in RFC 5952 form, except that an
    /// IPv4-compatible address keeps its dotted quad, as `inet_ntop` writes it.
    ///
    /// ```
    /// # use mtls_identity::SubjectAltName;
    /// let ip = SubjectAltName::IpAddress("::1".parse().unwrap());
    /// assert_eq!(ip.value(), "::1");
    /// let compat = SubjectAltName::IpAddress("::7f00:1".parse().unwrap());
    /// assert_eq!(compat.value(), "::127.0.0.1");
    /// let mapped = SubjectAltName::IpAddress("::ffff:7f00:1".parse().unwrap());
    /// assert_eq!(mapped.value(), "::ffff:127.0.0.1");
    /// ```
    pub fn value(&self) -> String {
        match self {
            Self::Dns(v) | Self::Uri(v) | Self::Email(v) => v.clone(),
            Self::IpAddress(ip) => ip_text(*ip),
        }
    }
}

/// An IP address as Envoy renders an `iPAddress` SAN for matching (`inet_ntop`): RFC 5952,
/// except that an IPv4-compatible IPv6 address (`::a.b.c.d`, the first 96 bits zero and
/// not `::` or `::1`-like) keeps the dotted quad — `::7f00:1` is `::127.0.0.1`, where
/// Rust's `Display` writes `::7f00:1`.
fn ip_text(ip: IpAddr) -> String {
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        if s[..6].iter().all(|&x| x == 0) && s[6] != 0 {
            let [.., a, b, c, d] = v6.octets();
            return format!("::{a}.{b}.{c}.{d}");
        }
    }
    ip.to_string()
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self {
            Self::Dns(_) => "DNS",
            Self::Uri(_) => "URI",
            Self::Email(_) => "email",
            Self::IpAddress(_) => "IP",
        };
        write!(f, "{prefix}:{}", self.value())
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

/// The SAN types of Envoy's `SubjectAltNameMatcher.san_type`.
///
/// `OTHER_NAME` is refused when parsed (it is not supported), so a policy that relies on
/// it fails loudly instead of silently matching nothing.
///
/// ```
/// use mtls_identity::SanType;
/// assert_eq!("IP_ADDRESS".parse::<SanType>()?, SanType::IpAddress);
/// assert_eq!(SanType::Email.to_string(), "EMAIL");
/// assert!("OTHER_NAME".parse::<SanType>().is_err());
/// # Ok::<(), mtls_identity::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "&'static str"))]
#[non_exhaustive]
pub enum SanType {
    /// `DNS`.
    Dns,
    /// `URI`.
    Uri,
    /// `EMAIL`.
    Email,
    /// `IP_ADDRESS`.
    IpAddress,
}

impl SanType {
    /// Envoy's name (`DNS`, `URI`, `EMAIL`, `IP_ADDRESS`).
    ///
    /// ```
    /// assert_eq!(mtls_identity::SanType::IpAddress.as_str(), "IP_ADDRESS");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "DNS",
            Self::Uri => "URI",
            Self::Email => "EMAIL",
            Self::IpAddress => "IP_ADDRESS",
        }
    }
}

impl fmt::Display for SanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SanType> for &'static str {
    fn from(t: SanType) -> Self {
        t.as_str()
    }
}

impl FromStr for SanType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "DNS" => Ok(Self::Dns),
            "URI" => Ok(Self::Uri),
            "EMAIL" => Ok(Self::Email),
            "IP_ADDRESS" => Ok(Self::IpAddress),
            other => Err(Error::InvalidSanType {
                presented: other.to_owned(),
            }),
        }
    }
}

impl TryFrom<String> for SanType {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_order_matches_cfssl() {
        assert!(matches!(
            SubjectAltName::classify("a@b"),
            Some(SubjectAltName::Email(_))
        ));
        assert!(matches!(
            SubjectAltName::classify("https://x"),
            Some(SubjectAltName::Uri(_))
        ));
        assert_eq!(SubjectAltName::classify("  "), None);
    }

    #[test]
    fn ipv4_compatible_ipv6_renders_as_envoy_does() {
        let text = |s: &str| ip_text(s.parse().unwrap());
        assert_eq!(text("::7f00:1"), "::127.0.0.1");
        assert_eq!(text("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(text("::ffff:7f00:1"), "::ffff:127.0.0.1");
        assert_eq!(text("::1"), "::1");
        assert_eq!(text("::"), "::");
        assert_eq!(text("::2"), "::2");
        assert_eq!(text("fd00::7f00:1"), "fd00::7f00:1");
        assert_eq!(text("10.0.0.7"), "10.0.0.7");
    }

    #[test]
    fn one_text_form() {
        let ip = SubjectAltName::IpAddress("::1".parse().unwrap());
        assert_eq!(ip.to_string(), "IP:::1");
        assert_eq!(
            SubjectAltName::Email("ops@example.com".into()).to_string(),
            "email:ops@example.com"
        );
        assert_eq!(SubjectAltName::Dns("a.b".into()).to_string(), "DNS:a.b");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_type_and_value() {
        let json = serde_json::to_string(&[
            SubjectAltName::IpAddress("10.0.0.1".parse().unwrap()),
            SubjectAltName::Dns("a".into()),
        ])
        .unwrap();
        assert_eq!(
            json,
            r#"[{"type":"ip","value":"10.0.0.1"},{"type":"dns","value":"a"}]"#
        );
        let t: SanType = serde_json::from_str(r#""IP_ADDRESS""#).unwrap();
        assert_eq!(t, SanType::IpAddress);
        let e = serde_json::from_str::<SanType>(r#""OTHER_NAME""#).unwrap_err();
        assert!(e.to_string().contains("OTHER_NAME"), "{e}");
    }
}
