//! SPIFFE IDs and trust domains parsed as strictly as the SPIFFE spec and go-spiffe parse
//! them — the one parsing entry point for configuration and certificates alike.
//!
//! The `spiffe` crate's own types are lenient where the spec is not: they lower-case an
//! upper-case trust domain or `SPIFFE://` scheme, and `TrustDomain::new` ignores whatever
//! follows the trust domain of an ID (`spiffe://td/bad/` gives `td`). go-spiffe refuses all
//! of these (58 of its test vectors); so do these types, with the reason. Every mtls crate
//! takes and returns these types (mtls-certs, mtls-core, mtls-jwt, mtls-agent).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

const SCHEME: &str = "spiffe://";
/// SPIFFE-ID §2.1: a trust domain is at most 255 bytes.
const MAX_TRUST_DOMAIN: usize = 255;
/// SPIFFE-ID §2.3: implementations must support IDs up to 2048 bytes and should not make
/// longer ones; longer ones are refused here.
const MAX_ID: usize = 2048;

/// A SPIFFE ID (`spiffe://<trust domain><path>`), parsed strictly: scheme and trust domain
/// in lower case, trust domain `[a-z0-9._-]` (at most 255 bytes), path segments
/// `[a-zA-Z0-9._-]`, no empty, `.` or `..` segment, no trailing `/`, no percent-encoding,
/// query, fragment, port or user info, at most 2048 bytes. Nothing is rewritten: an ID is
/// either canonical or refused, saying why.
///
/// ```
/// use mtls_identity::SpiffeId;
/// let id: SpiffeId = "spiffe://example.org/ns/prod/sa/web".parse()?;
/// assert_eq!(id.trust_domain().as_str(), "example.org");
/// assert_eq!(id.path(), "/ns/prod/sa/web");
/// // compared with text as it is written (no formatting, no parsing of the other side)
/// assert!(id == *"spiffe://example.org/ns/prod/sa/web");
/// assert!(id != *"spiffe://example.org/ns/prod/sa/we");
/// assert!(id != *"spiffe://example.org.evil/ns/prod/sa/web");
///
/// for bad in ["SPIFFE://example.org/a", "spiffe://Example.org/a", "spiffe://example.org/a/",
///             "spiffe://example.org/a/../b", "spiffe://example.org:8443/a", "spiffe://example.org/%61"] {
///     let err = bad.parse::<SpiffeId>().unwrap_err();
///     assert!(matches!(err, mtls_identity::Error::InvalidSpiffeId { .. }), "{bad}: {err}");
/// }
/// # Ok::<(), mtls_identity::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    inner: spiffe::SpiffeId,
}

/// A SPIFFE trust domain, parsed strictly: `[a-z0-9._-]`, at most 255 bytes, never
/// lower-cased for you. As in go-spiffe, a SPIFFE ID is accepted too (`spiffe://example.org`
/// or `spiffe://example.org/path` give `example.org`) — but only a valid one: a trailing
/// `/`, a bad path or an upper-case scheme is refused, not ignored.
///
/// ```
/// use mtls_identity::TrustDomain;
/// let td: TrustDomain = "example.org".parse()?;
/// assert_eq!(td.id_string(), "spiffe://example.org");
/// assert_eq!("spiffe://example.org/ns/a".parse::<TrustDomain>()?, td);
/// for bad in ["Example.org", "SPIFFE://example.org", "spiffe://example.org/", "exa mple.org", ""] {
///     assert!(bad.parse::<TrustDomain>().is_err(), "{bad:?}");
/// }
/// # Ok::<(), mtls_identity::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain {
    inner: spiffe::TrustDomain,
}

fn invalid(presented: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSpiffeId {
        presented: presented.to_owned(),
        reason: reason.into(),
    }
}

/// go-spiffe's trust domain characters: lower-case letters, digits, `.`, `-`, `_`.
fn check_trust_domain(presented: &str, td: &str) -> Result<()> {
    if td.is_empty() {
        return Err(invalid(presented, "the trust domain is missing"));
    }
    if td.len() > MAX_TRUST_DOMAIN {
        return Err(invalid(
            presented,
            format!(
                "the trust domain is {} bytes, at most {MAX_TRUST_DOMAIN} are allowed",
                td.len()
            ),
        ));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        let why = if c.is_ascii_uppercase() {
            " (trust domains are lower case; nothing is lower-cased for you)"
        } else if c == ':' {
            " (no port)"
        } else if c == '%' {
            " (no percent-encoding)"
        } else if c == '@' {
            " (no user info)"
        } else {
            ""
        };
        return Err(invalid(
            presented,
            format!(
                "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores; found {c:?}{why}"
            ),
        ));
    }
    Ok(())
}

/// go-spiffe's path rules.
fn check_path(presented: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(invalid(presented, "the path must start with a slash"));
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(invalid(
                presented,
                if segments.peek().is_some() {
                    "the path cannot contain empty segments"
                } else {
                    "the path cannot have a trailing slash"
                },
            ));
        }
        if segment == "." || segment == ".." {
            return Err(invalid(presented, "the path cannot contain dot segments"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            let why = match c {
                '%' => " (no percent-encoding)",
                '?' => " (no query)",
                '#' => " (no fragment)",
                _ => "",
            };
            return Err(invalid(
                presented,
                format!(
                    "path segment characters are limited to letters, numbers, dots, dashes, and underscores; found {c:?}{why}"
                ),
            ));
        }
    }
    Ok(())
}

impl SpiffeId {
    /// Parses `id` strictly (see the type's docs).
    ///
    /// ```
    /// let err = mtls_identity::SpiffeId::new("Spiffe://example.org/a").unwrap_err();
    /// assert!(err.to_string().contains("scheme"), "{err}");
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(invalid(id, "a SPIFFE ID cannot be empty"));
        }
        let Some(rest) = id.strip_prefix(SCHEME) else {
            let why = if id
                .get(..SCHEME.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
            {
                "the scheme must be spiffe:// in lower case"
            } else {
                "the scheme is missing or invalid: expected spiffe://"
            };
            return Err(invalid(id, why));
        };
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        check_trust_domain(id, td)?;
        check_path(id, path)?;
        if id.len() > MAX_ID {
            return Err(invalid(
                id,
                format!("the ID is {} bytes, at most {MAX_ID} are allowed", id.len()),
            ));
        }
        let inner = spiffe::SpiffeId::new(id).map_err(|e| invalid(id, e.to_string()))?;
        // Unreachable with the checks above; kept so the two parsers can never disagree
        // silently.
        if inner.to_string() != id {
            return Err(invalid(id, format!("not in canonical form ({inner})")));
        }
        let trust_domain = TrustDomain {
            inner: inner.trust_domain().clone(),
        };
        Ok(Self {
            trust_domain,
            inner,
        })
    }

    /// The ID of `trust_domain` with the path made of `segments` (each checked as in
    /// [`new`](Self::new)).
    ///
    /// ```
    /// use mtls_identity::{SpiffeId, TrustDomain};
    /// let td: TrustDomain = "example.org".parse()?;
    /// let id = SpiffeId::from_segments(td.clone(), &["ns", "prod"])?;
    /// assert_eq!(id.to_string(), "spiffe://example.org/ns/prod");
    /// assert!(SpiffeId::from_segments(td, &["a/b"]).is_err());
    /// # Ok::<(), mtls_identity::Error>(())
    /// ```
    pub fn from_segments(trust_domain: TrustDomain, segments: &[&str]) -> Result<Self> {
        let mut text = trust_domain.id_string();
        for segment in segments {
            if segment.contains('/') {
                return Err(invalid(segment, "a path segment cannot contain '/'"));
            }
            text.push('/');
            text.push_str(segment);
        }
        Self::new(text)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path (empty for a trust domain's own ID), e.g. `/ns/prod/sa/web`.
    pub fn path(&self) -> &str {
        self.inner.path()
    }

    /// Whether the ID belongs to `trust_domain`.
    ///
    /// ```
    /// let id = mtls_identity::SpiffeId::new("spiffe://example.org/a")?;
    /// assert!(id.is_member_of(&"example.org".parse()?));
    /// # Ok::<(), mtls_identity::Error>(())
    /// ```
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        &self.trust_domain == trust_domain
    }

    /// The same ID as the `spiffe` crate's type (for its Workload API client, mtls-certs
    /// and mtls-agent).
    pub fn as_spiffe(&self) -> &spiffe::SpiffeId {
        &self.inner
    }
}

impl TrustDomain {
    /// Parses a trust domain name, or takes the trust domain of a valid SPIFFE ID (see the
    /// type's docs).
    ///
    /// ```
    /// let err = mtls_identity::TrustDomain::new("spiffe://example.org/path/").unwrap_err();
    /// assert!(err.to_string().contains("trailing slash"), "{err}");
    /// ```
    pub fn new(id_or_name: impl AsRef<str>) -> Result<Self> {
        let s = id_or_name.as_ref();
        if s.is_empty() {
            return Err(invalid(s, "the trust domain is missing"));
        }
        // As go-spiffe: anything that looks like it has a scheme is parsed as an ID.
        if s.contains(":/") {
            return Ok(SpiffeId::new(s)?.trust_domain);
        }
        check_trust_domain(s, s)?;
        let inner = spiffe::TrustDomain::new(s).map_err(|e| invalid(s, e.to_string()))?;
        Ok(Self { inner })
    }

    /// The name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        self.inner.as_str()
    }

    /// The trust domain's own SPIFFE ID as text, e.g. `spiffe://example.org`.
    pub fn id_string(&self) -> String {
        self.inner.id_string()
    }

    /// The same trust domain as the `spiffe` crate's type.
    pub fn as_spiffe(&self) -> &spiffe::TrustDomain {
        &self.inner
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// Equal to the ID's text, `spiffe://<trust domain><path>`, compared byte for byte (e.g. a
/// token's `sub` against the peer's ID, without formatting the ID).
impl PartialEq<str> for SpiffeId {
    fn eq(&self, text: &str) -> bool {
        text.strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(self.trust_domain.as_str()))
            == Some(self.path())
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.inner)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.as_str())
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

/// Checks a `spiffe` crate ID again with the strict rules (its parser may have rewritten
/// the text it was given).
impl TryFrom<spiffe::SpiffeId> for SpiffeId {
    type Error = Error;
    fn try_from(id: spiffe::SpiffeId) -> Result<Self> {
        Self::new(id.to_string())
    }
}

impl TryFrom<&spiffe::SpiffeId> for SpiffeId {
    type Error = Error;
    fn try_from(id: &spiffe::SpiffeId) -> Result<Self> {
        Self::new(id.to_string())
    }
}

impl TryFrom<spiffe::TrustDomain> for TrustDomain {
    type Error = Error;
    fn try_from(td: spiffe::TrustDomain) -> Result<Self> {
        Self::new(td.as_str())
    }
}

impl From<SpiffeId> for spiffe::SpiffeId {
    fn from(id: SpiffeId) -> Self {
        id.inner
    }
}

impl From<&SpiffeId> for spiffe::SpiffeId {
    fn from(id: &SpiffeId) -> Self {
        id.inner.clone()
    }
}

impl From<TrustDomain> for spiffe::TrustDomain {
    fn from(td: TrustDomain) -> Self {
        td.inner
    }
}

impl PartialEq<spiffe::SpiffeId> for SpiffeId {
    fn eq(&self, other: &spiffe::SpiffeId) -> bool {
        &self.inner == other
    }
}
