//! Typed subject alternative names and Envoy's `match_typed_subject_alt_names`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::string_matcher::StringMatcher;

/// A subject alternative name as presented in a certificate.
///
/// ```
/// use mtls_core::{SanType, SubjectAltName};
/// let san = SubjectAltName::Uri("spiffe://example.org/a".into());
/// assert_eq!(san.san_type(), SanType::Uri);
/// assert_eq!(san.to_string(), "URI:spiffe://example.org/a");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum SubjectAltName {
    /// `dNSName`.
    Dns(String),
    /// `uniformResourceIdentifier`; SPIFFE IDs live here.
    Uri(String),
    /// `rfc822Name`.
    Email(String),
    /// `iPAddress`.
    IpAddress(IpAddr),
}

impl SubjectAltName {
    /// The SAN's type.
    ///
    /// ```
    /// # use mtls_core::{SanType, SubjectAltName};
    /// assert_eq!(SubjectAltName::Dns("a".into()).san_type(), SanType::Dns);
    /// ```
    pub fn san_type(&self) -> SanType {
        match self {
            SubjectAltName::Dns(_) => SanType::Dns,
            SubjectAltName::Uri(_) => SanType::Uri,
            SubjectAltName::Email(_) => SanType::Email,
            SubjectAltName::IpAddress(_) => SanType::IpAddress,
        }
    }

    /// The value as Envoy renders it for matching: IPv6 in RFC 5952 form, except that an
    /// IPv4-compatible address keeps its dotted quad, as `inet_ntop` writes it.
    ///
    /// ```
    /// # use mtls_core::SubjectAltName;
    /// let ip = SubjectAltName::IpAddress("::1".parse().unwrap());
    /// assert_eq!(ip.value(), "::1");
    /// let compat = SubjectAltName::IpAddress("::7f00:1".parse().unwrap());
    /// assert_eq!(compat.value(), "::127.0.0.1");
    /// let mapped = SubjectAltName::IpAddress("::ffff:7f00:1".parse().unwrap());
    /// assert_eq!(mapped.value(), "::ffff:127.0.0.1");
    /// ```
    pub fn value(&self) -> String {
        match self {
            SubjectAltName::Dns(v) | SubjectAltName::Uri(v) | SubjectAltName::Email(v) => v.clone(),
            SubjectAltName::IpAddress(ip) => ip_text(*ip),
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
        write!(f, "{}:{}", self.san_type(), self.value())
    }
}

/// The SAN types of Envoy's `SubjectAltNameMatcher.san_type`.
///
/// `OTHER_NAME` is refused when a policy is loaded (it is not supported here), so a
/// policy that relies on it fails loudly instead of silently matching nothing.
///
/// ```
/// use mtls_core::SanType;
/// assert_eq!("IP_ADDRESS".parse::<SanType>()?, SanType::IpAddress);
/// assert!("OTHER_NAME".parse::<SanType>().is_err());
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
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
    fn as_str(self) -> &'static str {
        match self {
            SanType::Dns => "DNS",
            SanType::Uri => "URI",
            SanType::Email => "EMAIL",
            SanType::IpAddress => "IP_ADDRESS",
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
            "DNS" => Ok(SanType::Dns),
            "URI" => Ok(SanType::Uri),
            "EMAIL" => Ok(SanType::Email),
            "IP_ADDRESS" => Ok(SanType::IpAddress),
            other => Err(Error::InvalidSanMatcher {
                reason: format!(
                    "san_type {other:?} is not supported; expected one of DNS, URI, EMAIL, IP_ADDRESS"
                ),
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

/// One entry of Envoy's `match_typed_subject_alt_names`: a SAN type and a string matcher.
///
/// A peer passes a **list** of matchers if any matcher matches any SAN of its type
/// ([`SanMatcher::matches_any`]). `DNS` with an `exact` matcher follows Envoy's DNS rules:
/// case-insensitive, and a wildcard SAN `*.example.com` in the certificate matches
/// exactly one extra label (`api.example.com`, not `a.b.example.com`).
///
/// Deserializes from Envoy's YAML/JSON shape:
///
/// ```
/// use mtls_core::{SanMatcher, SubjectAltName};
/// let policy: Vec<SanMatcher> = serde_json::from_str(r#"[
///   {"san_type": "URI", "matcher": {"prefix": "spiffe://example.org/ns/prod/"}},
///   {"san_type": "DNS", "matcher": {"exact": "api.internal"}}
/// ]"#)?;
/// let sans = [SubjectAltName::Uri("spiffe://example.org/ns/prod/sa/web".into())];
/// assert!(SanMatcher::matches_any(&policy, &sans));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Or from the command-line form `TYPE:MATCHER:VALUE` (MATCHER is `exact`, `prefix`,
/// `suffix`, `contains`, `regex`, optionally followed by `/i` for ignore-case):
///
/// ```
/// use mtls_core::SanMatcher;
/// let m: SanMatcher = "URI:prefix/i:spiffe://Example.org/".parse()?;
/// assert_eq!(m.to_string(), r#"URI prefix "spiffe://Example.org/" (ignore case)"#);
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanMatcher {
    #[serde(alias = "sanType")]
    san_type: SanType,
    matcher: StringMatcher,
}

impl SanMatcher {
    /// A matcher for SANs of `san_type`.
    ///
    /// ```
    /// use mtls_core::{SanMatcher, SanType, StringMatcher};
    /// let m = SanMatcher::new(SanType::Dns, StringMatcher::exact("api.internal"));
    /// ```
    pub fn new(san_type: SanType, matcher: StringMatcher) -> Self {
        Self { san_type, matcher }
    }

    /// The SAN type this matcher looks at.
    pub fn san_type(&self) -> SanType {
        self.san_type
    }

    /// The string matcher.
    pub fn matcher(&self) -> &StringMatcher {
        &self.matcher
    }

    /// Whether this matcher accepts one SAN.
    ///
    /// ```
    /// use mtls_core::{SanMatcher, SanType, StringMatcher, SubjectAltName};
    /// let m = SanMatcher::new(SanType::Dns, StringMatcher::exact("api.example.com"));
    /// assert!(m.matches(&SubjectAltName::Dns("*.example.com".into())));
    /// assert!(!m.matches(&SubjectAltName::Uri("api.example.com".into())));
    /// ```
    pub fn matches(&self, san: &SubjectAltName) -> bool {
        if san.san_type() != self.san_type {
            return false;
        }
        match san {
            // Envoy: a DNS SAN with an exact matcher uses DNS name matching semantics.
            SubjectAltName::Dns(name) => match self.matcher.exact_value() {
                Some(expected) => dns_name_match(expected, name),
                None => self.matcher.matches(name),
            },
            SubjectAltName::Uri(v) | SubjectAltName::Email(v) => self.matcher.matches(v),
            SubjectAltName::IpAddress(ip) => self.matcher.matches(&ip_text(*ip)),
        }
    }

    /// Envoy's rule for a list: any matcher matching any SAN accepts. An empty list
    /// accepts nobody (callers treat "no matchers" as "no SAN policy" before calling).
    ///
    /// ```
    /// use mtls_core::{SanMatcher, SubjectAltName};
    /// assert!(!SanMatcher::matches_any(&[], &[SubjectAltName::Dns("a".into())]));
    /// ```
    pub fn matches_any(matchers: &[SanMatcher], sans: &[SubjectAltName]) -> bool {
        matchers.iter().any(|m| sans.iter().any(|s| m.matches(s)))
    }
}

/// Envoy's `Utility::dnsNameMatch(dns_name, pattern)`: `pattern` is the certificate SAN.
///
/// Deliberately stricter than Envoy 1.40 in one point: a wildcard must be the whole
/// left-most label (`*.example.com`). Envoy also accepts partial-label wildcards
/// (`api*.example.com`, `a*i.example.com` match `api.example.com`); RFC 9525 §6.3 forbids
/// them, and rustls-webpki, Go's crypto/x509 and the CA/Browser Forum refuse them, so a
/// certificate relying on one is refused here (a `SanMismatch`, never a silent accept).
fn dns_name_match(dns_name: &str, pattern: &str) -> bool {
    let name = dns_name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if name == pattern {
        return true;
    }
    if let Some(rest) = pattern.strip_prefix('*')
        && rest.starts_with('.')
        && name.len() > rest.len()
    {
        let split = name.len() - rest.len();
        return name.is_char_boundary(split)
            && !name[..split].contains('.')
            && &name[split..] == rest;
    }
    false
}

impl fmt::Display for SanMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.san_type, self.matcher)
    }
}

impl FromStr for SanMatcher {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.splitn(3, ':');
        let (Some(t), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidSanMatcher {
                reason: format!(
                    "{s:?} is not TYPE:MATCHER:VALUE (e.g. URI:prefix:spiffe://example.org/)"
                ),
            });
        };
        let san_type: SanType = t.parse()?;
        let (kind, ignore_case) = match kind.strip_suffix("/i") {
            Some(k) => (k, true),
            None => (kind, false),
        };
        let matcher = match kind {
            "exact" => StringMatcher::exact(value),
            "prefix" => StringMatcher::prefix(value)?,
            "suffix" => StringMatcher::suffix(value)?,
            "contains" => StringMatcher::contains(value)?,
            "regex" | "safe_regex" if ignore_case => {
                return Err(crate::string_matcher::regex_ignore_case());
            }
            "regex" | "safe_regex" => StringMatcher::regex(value)?,
            other => {
                return Err(Error::InvalidSanMatcher {
                    reason: format!(
                        "matcher {other:?} in {s:?} is not one of exact, prefix, suffix, contains, regex"
                    ),
                });
            }
        };
        Ok(SanMatcher::new(san_type, matcher.ignore_case(ignore_case)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_wildcards_follow_envoy() {
        assert!(dns_name_match("api.example.com", "*.example.com"));
        assert!(dns_name_match("API.example.com", "*.EXAMPLE.com"));
        assert!(!dns_name_match("a.b.example.com", "*.example.com"));
        assert!(!dns_name_match("example.com", "*.example.com"));
        assert!(!dns_name_match(".example.com", "*.example.com"));
    }

    #[test]
    fn partial_label_wildcards_are_refused_unlike_envoy() {
        // Envoy 1.40 accepts each of these for api.example.com (measured in
        // tests/envoy_san_yaml.rs); RFC 9525 §6.3 does not, and neither do we.
        for pattern in [
            "api*.example.com",
            "a*.example.com",
            "*i.example.com",
            "a*i.example.com",
        ] {
            assert!(!dns_name_match("api.example.com", pattern), "{pattern}");
        }
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
        let m: SanMatcher = "IP_ADDRESS:exact:::127.0.0.1".parse().unwrap();
        assert!(m.matches(&SubjectAltName::IpAddress("::7f00:1".parse().unwrap())));
    }

    #[test]
    fn type_must_agree() {
        let m: SanMatcher = "DNS:exact:a".parse().unwrap();
        assert!(m.matches(&SubjectAltName::Dns("a".into())));
        assert!(!m.matches(&SubjectAltName::Email("a".into())));
    }

    #[test]
    fn ip_matches_canonical_text() {
        let m: SanMatcher = "IP_ADDRESS:exact:127.0.0.1".parse().unwrap();
        assert!(m.matches(&SubjectAltName::IpAddress("127.0.0.1".parse().unwrap())));
        let m: SanMatcher = "IP_ADDRESS:prefix:fd00:".parse().unwrap();
        assert!(m.matches(&SubjectAltName::IpAddress("fd00::1".parse().unwrap())));
    }

    #[test]
    fn cli_form_errors_are_specific() {
        let e = "URI:prefix".parse::<SanMatcher>().unwrap_err();
        assert!(e.to_string().contains("TYPE:MATCHER:VALUE"), "{e}");
        let e = "URL:exact:x".parse::<SanMatcher>().unwrap_err();
        assert!(e.to_string().contains("\"URL\" is not supported"), "{e}");
        let e = "URI:regex/i:x".parse::<SanMatcher>().unwrap_err();
        assert!(e.to_string().contains("ignore_case has no effect"), "{e}");
        let e = "URI:glob:x".parse::<SanMatcher>().unwrap_err();
        assert!(e.to_string().contains("\"glob\""), "{e}");
    }

    #[test]
    fn unsupported_san_type_in_yaml_form_is_refused() {
        let e = serde_json::from_str::<SanMatcher>(
            r#"{"san_type":"OTHER_NAME","matcher":{"exact":"x"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("OTHER_NAME"), "{e}");
    }
}
