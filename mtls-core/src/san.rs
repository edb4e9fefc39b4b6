//! Envoy's `match_typed_subject_alt_names` over the family's [`SubjectAltName`] and
//! [`SanType`] (from mtls-identity).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use mtls_identity::{SanType, SubjectAltName};

use crate::error::{Error, Result};
use crate::string_matcher::StringMatcher;

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
            SubjectAltName::IpAddress(_) => self.matcher.matches(&san.value()),
            // a SAN type added later matches only through its own SanType
            _ => false,
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
    fn ipv4_compatible_ipv6_matches_as_envoy_renders_it() {
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
