//! Envoy's `type.matcher.v3.StringMatcher`: exact, prefix, suffix, contains, safe_regex,
//! with `ignore_case`.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A string matcher with Envoy's `StringMatcher` semantics.
///
/// - `exact`, `prefix`, `suffix`, `contains` compare bytes; with `ignore_case` they compare
///   ASCII-case-insensitively (as Envoy does).
/// - `safe_regex` must match the **whole** string (Envoy uses RE2 `FullMatch`). Envoy
///   refuses `ignore_case: true` beside it at load ("ignore_case has no effect for
///   safe_regex"), and so do the YAML/JSON and `TYPE:regex/i:VALUE` loaders here; write
///   `(?i)` in the regex instead.
/// - `prefix`, `suffix` and `contains` must not be empty (Envoy's proto validation).
///
/// It (de)serializes from Envoy's YAML/JSON shape:
///
/// ```
/// use mtls_core::StringMatcher;
/// let m: StringMatcher =
///     serde_json::from_str(r#"{"prefix": "spiffe://Example.org/", "ignore_case": true}"#)?;
/// assert!(m.matches("spiffe://example.org/ns/a"));
/// let r: StringMatcher = serde_json::from_str(r#"{"safe_regex": {"regex": "spiffe://[a-z.]+/ns/a"}}"#)?;
/// assert!(r.matches("spiffe://example.org/ns/a"));
/// assert!(!r.matches("spiffe://example.org/ns/a/b")); // full match only
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawStringMatcher", into = "RawStringMatcher")]
pub struct StringMatcher {
    pattern: Pattern,
    ignore_case: bool,
}

#[derive(Clone, Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// The source as written, and the anchored compiled form.
    Regex(String, Regex),
}

impl StringMatcher {
    /// Matches a string equal to `value`.
    ///
    /// ```
    /// assert!(mtls_core::StringMatcher::exact("a").matches("a"));
    /// ```
    pub fn exact(value: impl Into<String>) -> Self {
        Self::new(Pattern::Exact(value.into()))
    }

    /// Matches a string starting with `value` (must not be empty).
    ///
    /// ```
    /// assert!(mtls_core::StringMatcher::prefix("spiffe://")?.matches("spiffe://td/x"));
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn prefix(value: impl Into<String>) -> Result<Self> {
        Ok(Self::new(Pattern::Prefix(non_empty(
            "prefix",
            value.into(),
        )?)))
    }

    /// Matches a string ending with `value` (must not be empty).
    ///
    /// ```
    /// assert!(mtls_core::StringMatcher::suffix(".svc")?.matches("api.ns.svc"));
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn suffix(value: impl Into<String>) -> Result<Self> {
        Ok(Self::new(Pattern::Suffix(non_empty(
            "suffix",
            value.into(),
        )?)))
    }

    /// Matches a string containing `value` (must not be empty).
    ///
    /// ```
    /// assert!(mtls_core::StringMatcher::contains("/ns/")?.matches("spiffe://td/ns/a"));
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn contains(value: impl Into<String>) -> Result<Self> {
        Ok(Self::new(Pattern::Contains(non_empty(
            "contains",
            value.into(),
        )?)))
    }

    /// Matches a string the regular expression matches **entirely** (Envoy `safe_regex`).
    ///
    /// ```
    /// let m = mtls_core::StringMatcher::regex(r"spiffe://example\.org/ns/[^/]+/sa/web")?;
    /// assert!(m.matches("spiffe://example.org/ns/prod/sa/web"));
    /// assert!(!m.matches("spiffe://example.org/ns/prod/sa/web2"));
    /// assert!(mtls_core::StringMatcher::regex("(").is_err());
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn regex(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let anchored =
            Regex::new(&format!("^(?:{source})$")).map_err(|e| Error::InvalidSanMatcher {
                reason: format!("safe_regex {source:?} does not compile: {e}"),
            })?;
        Ok(Self::new(Pattern::Regex(source, anchored)))
    }

    /// Compares ASCII-case-insensitively. No effect on a regex (as in Envoy, which refuses
    /// the combination when it loads a config; the loaders here refuse it too): put `(?i)`
    /// in the regex to ignore case.
    ///
    /// ```
    /// let m = mtls_core::StringMatcher::exact("API.local").ignore_case(true);
    /// assert!(m.matches("api.LOCAL"));
    /// let r = mtls_core::StringMatcher::regex("(?i)api\\.local")?;
    /// assert!(r.matches("API.local"));
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn ignore_case(mut self, ignore_case: bool) -> Self {
        self.ignore_case = ignore_case && !matches!(self.pattern, Pattern::Regex(..));
        self
    }

    fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            ignore_case: false,
        }
    }

    /// Whether `value` matches.
    ///
    /// ```
    /// assert!(!mtls_core::StringMatcher::exact("a").matches("A"));
    /// ```
    pub fn matches(&self, value: &str) -> bool {
        let ic = self.ignore_case;
        match &self.pattern {
            Pattern::Exact(p) => {
                if ic {
                    value.eq_ignore_ascii_case(p)
                } else {
                    value == p
                }
            }
            Pattern::Prefix(p) => {
                value.len() >= p.len()
                    && value.is_char_boundary(p.len())
                    && eq(&value[..p.len()], p, ic)
            }
            Pattern::Suffix(p) => {
                let start = value.len().wrapping_sub(p.len());
                value.len() >= p.len()
                    && value.is_char_boundary(start)
                    && eq(&value[start..], p, ic)
            }
            Pattern::Contains(p) => {
                if ic {
                    value.to_ascii_lowercase().contains(&p.to_ascii_lowercase())
                } else {
                    value.contains(p.as_str())
                }
            }
            Pattern::Regex(_, re) => re.is_match(value),
        }
    }

    /// The exact value, if this is an `exact` matcher (DNS SANs use it for wildcard matching).
    pub(crate) fn exact_value(&self) -> Option<&str> {
        match &self.pattern {
            Pattern::Exact(p) => Some(p),
            _ => None,
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Envoy's load-time refusal of `safe_regex` + `ignore_case: true`.
pub(crate) fn regex_ignore_case() -> Error {
    Error::InvalidSanMatcher {
        reason: "ignore_case has no effect for safe_regex (Envoy refuses this matcher); \
                 drop ignore_case, or write (?i) in the regex"
            .to_owned(),
    }
}

fn non_empty(kind: &str, value: String) -> Result<String> {
    if value.is_empty() {
        return Err(Error::InvalidSanMatcher {
            reason: format!("{kind} must not be empty"),
        });
    }
    Ok(value)
}

impl fmt::Display for StringMatcher {
    /// Reads like the policy: `prefix "spiffe://example.org/" (ignore case)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Pattern::Exact(p) => write!(f, "exact {p:?}")?,
            Pattern::Prefix(p) => write!(f, "prefix {p:?}")?,
            Pattern::Suffix(p) => write!(f, "suffix {p:?}")?,
            Pattern::Contains(p) => write!(f, "contains {p:?}")?,
            Pattern::Regex(p, _) => write!(f, "regex {p:?}")?,
        }
        if self.ignore_case && !matches!(self.pattern, Pattern::Regex(..)) {
            f.write_str(" (ignore case)")?;
        }
        Ok(())
    }
}

/// The wire shape: one of the pattern fields, plus `ignore_case`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStringMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contains: Option<String>,
    #[serde(default, alias = "safeRegex", skip_serializing_if = "Option::is_none")]
    safe_regex: Option<RawRegex>,
    #[serde(
        default,
        alias = "ignoreCase",
        skip_serializing_if = "std::ops::Not::not"
    )]
    ignore_case: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegex {
    regex: String,
    /// Deprecated in Envoy and ignored; accepted so configs carry over unchanged.
    #[expect(
        dead_code,
        reason = "only read so that Envoy configs that set it still parse"
    )]
    #[serde(default, alias = "googleRe2", skip_serializing)]
    google_re2: Option<serde::de::IgnoredAny>,
}

impl TryFrom<RawStringMatcher> for StringMatcher {
    type Error = Error;

    fn try_from(raw: RawStringMatcher) -> Result<Self> {
        let mut patterns = Vec::new();
        if let Some(v) = raw.exact {
            patterns.push(Ok(StringMatcher::exact(v)));
        }
        if let Some(v) = raw.prefix {
            patterns.push(StringMatcher::prefix(v));
        }
        if let Some(v) = raw.suffix {
            patterns.push(StringMatcher::suffix(v));
        }
        if let Some(v) = raw.contains {
            patterns.push(StringMatcher::contains(v));
        }
        if let Some(v) = raw.safe_regex {
            patterns.push(StringMatcher::regex(v.regex));
        }
        if patterns.len() != 1 {
            return Err(Error::InvalidSanMatcher {
                reason: format!(
                    "a string matcher needs exactly one of exact, prefix, suffix, contains, safe_regex; got {}",
                    patterns.len()
                ),
            });
        }
        let Some(matcher) = patterns.pop() else {
            unreachable!("length checked above")
        };
        let matcher = matcher?;
        if raw.ignore_case && matches!(matcher.pattern, Pattern::Regex(..)) {
            return Err(regex_ignore_case());
        }
        Ok(matcher.ignore_case(raw.ignore_case))
    }
}

impl From<StringMatcher> for RawStringMatcher {
    fn from(m: StringMatcher) -> Self {
        let mut raw = RawStringMatcher {
            ignore_case: m.ignore_case,
            ..RawStringMatcher::default()
        };
        match m.pattern {
            Pattern::Exact(v) => raw.exact = Some(v),
            Pattern::Prefix(v) => raw.prefix = Some(v),
            Pattern::Suffix(v) => raw.suffix = Some(v),
            Pattern::Contains(v) => raw.contains = Some(v),
            Pattern::Regex(v, _) => {
                raw.safe_regex = Some(RawRegex {
                    regex: v,
                    google_re2: None,
                })
            }
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_case() {
        let p = StringMatcher::prefix("spiffe://EX/").unwrap();
        assert!(!p.matches("spiffe://ex/a"));
        assert!(p.clone().ignore_case(true).matches("spiffe://ex/a"));
        let s = StringMatcher::suffix(".svc").unwrap();
        assert!(s.matches("a.svc") && !s.matches("svc") && !s.matches("a.svc.x"));
        let c = StringMatcher::contains("Ns").unwrap().ignore_case(true);
        assert!(c.matches("x/ns/y"));
        assert!(StringMatcher::exact("").matches(""));
    }

    #[test]
    fn regex_is_full_match_and_ignores_ignore_case() {
        let r = StringMatcher::regex("a|b").unwrap().ignore_case(true);
        assert!(r.matches("a") && r.matches("b"));
        assert!(!r.matches("ab") && !r.matches("A"));
    }

    #[test]
    fn regex_with_ignore_case_is_refused_at_load_as_envoy_does() {
        let err = serde_json::from_str::<StringMatcher>(
            r#"{"safe_regex": {"google_re2": {}, "regex": "a"}, "ignore_case": true}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ignore_case has no effect for safe_regex"),
            "{err}"
        );
        let err = serde_json::from_str::<StringMatcher>(
            r#"{"safeRegex": {"regex": "a"}, "ignoreCase": true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("safe_regex"), "{err}");
        // ignore_case: false beside it is fine, as in Envoy.
        serde_json::from_str::<StringMatcher>(
            r#"{"safe_regex": {"regex": "a"}, "ignore_case": false}"#,
        )
        .unwrap();
    }

    #[test]
    fn empty_prefix_is_refused() {
        let err = StringMatcher::prefix("").unwrap_err();
        assert!(
            matches!(err, Error::InvalidSanMatcher { ref reason } if reason.contains("prefix must not be empty"))
        );
    }

    #[test]
    fn serde_needs_exactly_one_pattern() {
        let err =
            serde_json::from_str::<StringMatcher>(r#"{"exact":"a","prefix":"b"}"#).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = serde_json::from_str::<StringMatcher>(r#"{"ignore_case":true}"#).unwrap_err();
        assert!(err.to_string().contains("got 0"), "{err}");
        let err = serde_json::from_str::<StringMatcher>(r#"{"regex":"a"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn serde_round_trip() {
        let m: StringMatcher = serde_json::from_str(
            r#"{"safe_regex":{"google_re2":{},"regex":"x.*"},"ignore_case":false}"#,
        )
        .unwrap();
        let back = serde_json::to_string(&m).unwrap();
        assert_eq!(back, r#"{"safe_regex":{"regex":"x.*"}}"#);
    }

    #[test]
    fn prefix_on_non_ascii_boundary_does_not_panic() {
        let p = StringMatcher::prefix("é").unwrap();
        assert!(!p.matches("e\u{301}x"));
        let s = StringMatcher::suffix("é").unwrap();
        assert!(s.matches("caf\u{e9}"));
    }
}
