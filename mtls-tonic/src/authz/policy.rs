//! Which peers may call which gRPC methods.

use std::{fmt, sync::Arc};

use mtls_core::{Authorizer, PeerIdentity, SanMatcher};

use super::AuthzError;
use crate::{
    Result,
    method::{MethodPattern, MethodTable},
};

#[derive(Clone)]
enum Rule {
    Spiffe(Arc<dyn Authorizer>),
    Sans(Arc<[SanMatcher]>),
}

impl Rule {
    fn allows(&self, peer: &PeerIdentity) -> bool {
        match self {
            Self::Spiffe(authorizer) => peer.spiffe_id().is_some_and(|id| authorizer.authorize(id)),
            Self::Sans(matchers) => SanMatcher::matches_any(matchers, peer.sans()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Spiffe(authorizer) => authorizer.describe(),
            Self::Sans(matchers) => {
                let list: Vec<String> = matchers.iter().map(ToString::to_string).collect();
                format!("a SAN matching one of [{}]", list.join(", "))
            }
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Per-method authorization rules, keyed by gRPC method path.
///
/// Patterns: `/pkg.Service/Method` (exact), `pkg.Service/*` or `/pkg.Service/*` (every
/// method of a service), and a default. The most specific pattern wins; a method no pattern
/// covers is denied ([`MethodPolicy::deny_by_default`]) unless a default rule is set.
///
/// ```
/// use mtls_core::{Authorize, PeerIdentity};
/// use mtls_tonic::authz::MethodPolicy;
/// let policy = MethodPolicy::deny_by_default()
///     .allow("/grpc.health.v1.Health/Check", Authorize::any())?
///     .allow("bookstore.Bookstore/*", Authorize::exact("spiffe://example.org/web".parse()?))?;
/// let anonymous = PeerIdentity::unauthenticated();
/// let denied = policy.check("/bookstore.Bookstore/GetBook", Some(&anonymous)).unwrap_err();
/// assert_eq!(denied.code(), tonic::Code::Unauthenticated);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MethodPolicy {
    rules: MethodTable<Rule>,
    default: Option<Rule>,
}

impl MethodPolicy {
    /// An empty policy: every method denied until allowed.
    pub fn deny_by_default() -> Self {
        Self::default()
    }

    /// Peers whose SPIFFE ID `authorizer` accepts may call methods matching `pattern`.
    pub fn allow(self, pattern: &str, authorizer: impl Authorizer) -> Result<Self> {
        self.insert(pattern, Rule::Spiffe(Arc::new(authorizer)))
    }

    /// Peers with a SAN matching any of `matchers` (Envoy `match_typed_subject_alt_names`
    /// semantics) may call methods matching `pattern`.
    pub fn allow_sans(
        self,
        pattern: &str,
        matchers: impl IntoIterator<Item = SanMatcher>,
    ) -> Result<Self> {
        self.insert(pattern, Rule::Sans(matchers.into_iter().collect()))
    }

    /// The rule for methods no pattern covers (instead of denying them).
    pub fn default_allow(mut self, authorizer: impl Authorizer) -> Self {
        self.default = Some(Rule::Spiffe(Arc::new(authorizer)));
        self
    }

    fn insert(mut self, pattern: &str, rule: Rule) -> Result<Self> {
        self.rules.insert(pattern.parse::<MethodPattern>()?, rule);
        Ok(self)
    }

    fn rule(&self, path: &str) -> Option<&Rule> {
        self.rules.get(path).or(self.default.as_ref())
    }

    /// True if a pattern names `path` exactly or by its service (not only the default):
    /// then it may be a metric label, a path no pattern names is `other`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn names(&self, path: &str) -> bool {
        self.rules.get(path).is_some()
    }

    /// Whether `peer` may call `path` (`/pkg.Service/Method`).
    pub fn check(&self, path: &str, peer: Option<&PeerIdentity>) -> Result<(), AuthzError> {
        let Some(rule) = self.rule(path) else {
            return Err(match peer {
                Some(peer) if peer.is_authenticated() => AuthzError::Denied {
                    method: path.to_owned(),
                    presented: describe_peer(peer),
                    expected: "nobody (no rule for this method)".to_owned(),
                },
                _ => AuthzError::Unauthenticated {
                    method: path.to_owned(),
                    expected: "nobody (no rule for this method)".to_owned(),
                },
            });
        };
        match peer {
            Some(peer) if peer.is_authenticated() => {
                if rule.allows(peer) {
                    Ok(())
                } else {
                    Err(AuthzError::Denied {
                        method: path.to_owned(),
                        presented: describe_peer(peer),
                        expected: rule.describe(),
                    })
                }
            }
            _ => Err(AuthzError::Unauthenticated {
                method: path.to_owned(),
                expected: rule.describe(),
            }),
        }
    }
}

fn describe_peer(peer: &PeerIdentity) -> String {
    match peer.spiffe_id() {
        Some(id) => id.to_string(),
        None => {
            let sans: Vec<String> = peer.sans().iter().map(ToString::to_string).collect();
            format!("[{}]", sans.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use mtls_core::Authorize;

    fn policy() -> MethodPolicy {
        MethodPolicy::deny_by_default()
            .allow("/pkg.S/Open", Authorize::any())
            .unwrap()
            .allow(
                "pkg.S/*",
                Authorize::exact("spiffe://example.org/admin".parse().unwrap()),
            )
            .unwrap()
    }

    #[test]
    fn most_specific_rule_wins() {
        let p = policy();
        assert!(matches!(p.rule("/pkg.S/Open"), Some(Rule::Spiffe(_))));
        assert_eq!(p.rule("/pkg.S/Open").unwrap().describe(), "any SPIFFE ID");
        assert_ne!(p.rule("/pkg.S/Other").unwrap().describe(), "any SPIFFE ID");
        assert!(p.rule("/other.S/Open").is_none());
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["", "/", "pkg.S", "/pkg.S/", "*/x", "/a/b/c", "/pkg.S/Op*"] {
            let err = MethodPolicy::deny_by_default()
                .allow(bad, Authorize::any())
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidMethodPattern { presented } if presented == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn no_peer_is_unauthenticated() {
        let err = policy().check("/pkg.S/Open", None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = policy().check("/nope.S/X", None).unwrap_err();
        assert!(err.to_string().contains("no rule"), "{err}");
    }
}

#[cfg(test)]
mod san_tests {
    use super::*;
    use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
    use mtls_core::Authorize;

    fn peer(id: &str) -> PeerIdentity {
        let ca = CertificateAuthority::new_root(&CaParams::new("t")).unwrap();
        let leaf = ca
            .issue(
                &LeafParams::svid(mtls_certs::SpiffeId::new(id).unwrap())
                    .add_dns_name("web.internal"),
            )
            .unwrap();
        PeerIdentity::from_chain(&leaf.cert_chain()).unwrap()
    }

    #[test]
    fn san_rules_and_denials_name_peer_and_method() {
        let policy = MethodPolicy::deny_by_default()
            .allow_sans("/pkg.S/Dns", ["DNS:exact:web.internal".parse().unwrap()])
            .unwrap()
            .allow(
                "/pkg.S/Admin",
                Authorize::exact("spiffe://example.org/admin".parse().unwrap()),
            )
            .unwrap();
        let web = peer("spiffe://example.org/web");
        assert_eq!(policy.check("/pkg.S/Dns", Some(&web)), Ok(()));
        let err = policy.check("/pkg.S/Admin", Some(&web)).unwrap_err();
        assert_eq!(
            err,
            AuthzError::Denied {
                method: "/pkg.S/Admin".into(),
                presented: "spiffe://example.org/web".into(),
                expected: "spiffe://example.org/admin".into(),
            }
        );
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = policy.check("/pkg.S/Other", Some(&web)).unwrap_err();
        assert!(
            matches!(err, AuthzError::Denied { .. }),
            "deny by default: {err}"
        );
    }

    #[test]
    fn default_rule_applies_to_uncovered_methods() {
        let policy = MethodPolicy::deny_by_default().default_allow(Authorize::any());
        assert_eq!(
            policy.check("/any.S/M", Some(&peer("spiffe://example.org/x"))),
            Ok(())
        );
    }
}
