//! Which methods need a token, and whether its subject must be the peer.

use crate::{
    Result,
    method::{MethodPattern, MethodTable},
};

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
    skip: MethodTable<()>,
    bind_subject: bool,
}

impl JwtRules {
    /// Every method requires a valid token.
    pub fn require_all() -> Self {
        Self::default()
    }

    /// Methods matching `pattern` need no token.
    pub fn skip(mut self, pattern: &str) -> Result<Self> {
        self.skip.insert(pattern.parse::<MethodPattern>()?, ());
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
        self.skip.get(path).is_none()
    }

    /// Whether subject binding is on.
    pub fn binds_subject(&self) -> bool {
        self.bind_subject
    }
}
