//! Which methods need a token, and whether its subject must be the peer.

use std::collections::HashSet;

use crate::{Error, Result};

/// Per-method JWT requirements: every method needs a token except those skipped (exact
/// `/pkg.Service/Method` or a whole `pkg.Service/*`), e.g. health checks.
///
/// ```
/// let rules = mtls_tonic::jwt::JwtRules::require_all()
///     .skip("/grpc.health.v1.Health/*")?
///     .bind_subject_to_peer();
/// assert!(!rules.requires_token("/grpc.health.v1.Health/Check"));
/// assert!(rules.requires_token("/bookstore.Bookstore/GetBook"));
/// # Ok::<(), mtls_tonic::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct JwtRules {
    skip_exact: HashSet<String>,
    skip_services: HashSet<String>,
    bind_subject: bool,
}

impl JwtRules {
    /// Every method requires a valid token.
    pub fn require_all() -> Self {
        Self::default()
    }

    /// Methods matching `pattern` need no token.
    pub fn skip(mut self, pattern: &str) -> Result<Self> {
        let invalid = || Error::InvalidMethodPattern {
            presented: pattern.to_owned(),
        };
        let trimmed = pattern.strip_prefix('/').unwrap_or(pattern);
        let (service, method) = trimmed.split_once('/').ok_or_else(invalid)?;
        let valid = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains('*');
        match (valid(service), method) {
            (true, "*") => {
                self.skip_services.insert(service.to_owned());
            }
            (true, m) if valid(m) => {
                self.skip_exact.insert(format!("/{service}/{m}"));
            }
            _ => return Err(invalid()),
        }
        Ok(self)
    }

    /// The token's `sub` must equal the SPIFFE ID the peer proved in the mTLS handshake
    /// (a stolen token is useless from another workload).
    pub fn bind_subject_to_peer(mut self) -> Self {
        self.bind_subject = true;
        self
    }

    /// Whether calls to `path` need a token.
    pub fn requires_token(&self, path: &str) -> bool {
        if self.skip_exact.contains(path) {
            return false;
        }
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(s, _)| s);
        !service.is_some_and(|s| self.skip_services.contains(s))
    }

    /// Whether subject binding is on.
    pub fn binds_subject(&self) -> bool {
        self.bind_subject
    }
}
