//! SPIFFE ID authorizers (go-spiffe's `AuthorizeID`, `AuthorizeMemberOf`, ...).

use std::fmt;
use std::sync::Arc;

use mtls_identity::{SpiffeId, TrustDomain};

/// Decides whether a verified peer SPIFFE ID is allowed.
///
/// Any `Fn(&SpiffeId) -> bool + Send + Sync` closure is an authorizer; named policies and
/// combinators live on [`Authorize`].
///
/// ```
/// use mtls_core::Authorizer;
/// use mtls_core::SpiffeId;
/// let only_web = |id: &SpiffeId| id.path().ends_with("/sa/web");
/// assert!(only_web.authorize(&SpiffeId::new("spiffe://example.org/ns/a/sa/web")?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// Whether `peer` is allowed.
    fn authorize(&self, peer: &SpiffeId) -> bool;

    /// What this authorizer accepts, for error messages ("expected ..."). Closures say
    /// "an ID accepted by a custom authorizer"; name them with [`Authorize::custom`].
    fn describe(&self) -> String {
        "an ID accepted by a custom authorizer".to_owned()
    }
}

impl<F> Authorizer for F
where
    F: Fn(&SpiffeId) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self(peer)
    }
}

/// The named SPIFFE authorizers and their combinators.
///
/// ```
/// use mtls_core::{Authorize, Authorizer};
/// use mtls_core::{SpiffeId, TrustDomain};
/// let policy = Authorize::member_of(TrustDomain::new("example.org")?)
///     .and(Authorize::path_prefix("/ns/prod"));
/// assert!(policy.authorize(&SpiffeId::new("spiffe://example.org/ns/prod/sa/web")?));
/// assert!(!policy.authorize(&SpiffeId::new("spiffe://example.org/ns/production/x")?));
/// assert_eq!(policy.describe(), "member of example.org and path prefix /ns/prod/");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authorize {
    rule: Rule,
}

#[derive(Clone)]
enum Rule {
    Any,
    OneOf(Vec<SpiffeId>),
    MemberOf(Vec<TrustDomain>),
    PathPrefix(String),
    Custom(String, Arc<dyn Authorizer>),
    And(Box<Rule>, Box<Rule>),
    Or(Box<Rule>, Box<Rule>),
}

impl Authorize {
    /// Accepts any SPIFFE ID (the peer still had to present a valid X509-SVID that
    /// chains to its trust domain's bundle).
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// assert!(Authorize::any().authorize(&"spiffe://td/x".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn any() -> Self {
        Self { rule: Rule::Any }
    }

    /// Accepts exactly `id`.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::exact("spiffe://td/web".parse()?);
    /// assert!(a.authorize(&"spiffe://td/web".parse()?));
    /// assert!(!a.authorize(&"spiffe://td/web2".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exact(id: SpiffeId) -> Self {
        Self::one_of([id])
    }

    /// Accepts any of `ids`.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::one_of(["spiffe://td/a".parse()?, "spiffe://td/b".parse()?]);
    /// assert!(a.authorize(&"spiffe://td/b".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self {
            rule: Rule::OneOf(ids.into_iter().collect()),
        }
    }

    /// Accepts any ID in `trust_domain`.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::member_of("example.org".parse()?);
    /// assert!(a.authorize(&"spiffe://example.org/x".parse()?));
    /// assert!(!a.authorize(&"spiffe://example.com/x".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn member_of(trust_domain: TrustDomain) -> Self {
        Self::member_of_any([trust_domain])
    }

    /// Accepts any ID in one of `trust_domains`.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::member_of_any(["a.org".parse()?, "b.org".parse()?]);
    /// assert!(a.authorize(&"spiffe://b.org/x".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn member_of_any(trust_domains: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self {
            rule: Rule::MemberOf(trust_domains.into_iter().collect()),
        }
    }

    /// Accepts IDs whose path starts with `prefix` **at a segment boundary**:
    /// `/ns/prod` (or `/ns/prod/`) accepts `/ns/prod` and `/ns/prod/sa/web`, not
    /// `/ns/production`. Combine with [`Authorize::member_of`] to pin the trust domain.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::path_prefix("/ns/prod/");
    /// assert!(a.authorize(&"spiffe://td/ns/prod".parse()?));
    /// assert!(!a.authorize(&"spiffe://td/ns/production".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let trimmed = prefix.trim_end_matches('/');
        let normalized = if trimmed.starts_with('/') || trimmed.is_empty() {
            trimmed.to_owned()
        } else {
            format!("/{trimmed}")
        };
        Self {
            rule: Rule::PathPrefix(normalized),
        }
    }

    /// Wraps any authorizer (e.g. a closure) under a name used in error messages.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::custom("a web workload", |id: &mtls_core::SpiffeId| id.path().ends_with("/web"));
    /// assert_eq!(a.describe(), "a web workload");
    /// ```
    pub fn custom(description: impl Into<String>, authorizer: impl Authorizer) -> Self {
        Self {
            rule: Rule::Custom(description.into(), Arc::new(authorizer)),
        }
    }

    /// Both this and `other` must accept.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::any().and(|id: &mtls_core::SpiffeId| id.path() == "/x");
    /// assert!(!a.authorize(&"spiffe://td/y".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn and(self, other: impl Into<Authorize>) -> Self {
        Self {
            rule: Rule::And(Box::new(self.rule), Box::new(other.into().rule)),
        }
    }

    /// Either this or `other` must accept.
    ///
    /// ```
    /// # use mtls_core::{Authorize, Authorizer};
    /// let a = Authorize::exact("spiffe://td/a".parse()?).or(Authorize::exact("spiffe://td/b".parse()?));
    /// assert!(a.authorize(&"spiffe://td/b".parse()?));
    /// assert_eq!(a.describe(), "spiffe://td/a or spiffe://td/b");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn or(self, other: impl Into<Authorize>) -> Self {
        Self {
            rule: Rule::Or(Box::new(self.rule), Box::new(other.into().rule)),
        }
    }
}

impl<F> From<F> for Authorize
where
    F: Fn(&SpiffeId) -> bool + Send + Sync + 'static,
{
    fn from(f: F) -> Self {
        Authorize {
            rule: Rule::Custom(f.describe(), Arc::new(f)),
        }
    }
}

impl Rule {
    fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Rule::Any => true,
            Rule::OneOf(ids) => ids.iter().any(|i| i == id),
            Rule::MemberOf(tds) => tds.iter().any(|td| id.is_member_of(td)),
            Rule::PathPrefix(p) => {
                let path = id.path();
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Rule::Custom(_, a) => a.authorize(id),
            Rule::And(a, b) => a.allows(id) && b.allows(id),
            Rule::Or(a, b) => a.allows(id) || b.allows(id),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Any => f.write_str("any SPIFFE ID"),
            Rule::OneOf(ids) if ids.len() == 1 => write!(f, "{}", ids[0]),
            Rule::OneOf(ids) => {
                f.write_str("one of [")?;
                write_list(f, ids)?;
                f.write_str("]")
            }
            Rule::MemberOf(tds) if tds.len() == 1 => write!(f, "member of {}", tds[0]),
            Rule::MemberOf(tds) => {
                f.write_str("member of one of [")?;
                write_list(f, tds)?;
                f.write_str("]")
            }
            Rule::PathPrefix(p) => write!(f, "path prefix {p}/"),
            Rule::Custom(d, _) => f.write_str(d),
            Rule::And(a, b) => write!(f, "{} and {}", Paren(a, false), Paren(b, false)),
            Rule::Or(a, b) => write!(f, "{} or {}", Paren(a, true), Paren(b, true)),
        }
    }
}

/// Parenthesizes an operand whose operator differs from the enclosing one.
struct Paren<'a>(&'a Rule, bool);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs = matches!(
            (self.0, self.1),
            (Rule::Or(..), false) | (Rule::And(..), true)
        );
        if needs {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Authorizer for Authorize {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self.rule.allows(peer)
    }

    fn describe(&self) -> String {
        self.rule.to_string()
    }
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authorize({})", self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn descriptions_read_like_policy() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let a = Authorize::member_of(td).and(Authorize::path_prefix("ns/prod"));
        assert_eq!(
            a.describe(),
            "member of example.org and path prefix /ns/prod/"
        );
        let b = Authorize::exact(id("spiffe://t/a")).or(Authorize::exact(id("spiffe://t/b")));
        let c = Authorize::any().and(b);
        assert_eq!(
            c.describe(),
            "any SPIFFE ID and (spiffe://t/a or spiffe://t/b)"
        );
        let ids = Authorize::one_of([id("spiffe://t/a"), id("spiffe://t/b")]);
        assert_eq!(ids.describe(), "one of [spiffe://t/a, spiffe://t/b]");
    }

    #[test]
    fn path_prefix_is_segment_aware() {
        let a = Authorize::path_prefix("/ns/prod");
        assert!(a.authorize(&id("spiffe://t/ns/prod/sa/x")));
        assert!(a.authorize(&id("spiffe://t/ns/prod")));
        assert!(!a.authorize(&id("spiffe://t/ns/prodx")));
        assert!(!a.authorize(&id("spiffe://t/ns")));
    }

    #[test]
    fn closures_combine() {
        let a = Authorize::member_of("t".parse().unwrap()).and(|i: &SpiffeId| i.path() != "/bad");
        assert!(a.authorize(&id("spiffe://t/good")));
        assert!(!a.authorize(&id("spiffe://t/bad")));
        assert!(!a.authorize(&id("spiffe://u/good")));
    }
}
