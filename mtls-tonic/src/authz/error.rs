//! Why [`AuthzService`](super::AuthzService) denied a call.

use tonic::{Code, Status};

/// A denied call: who called, what, and what the policy expected.
///
/// The `Display` text is the whole story, for the server's log. The caller gets
/// [`AuthzError::to_status`]: the code and who was refused for which method, never what
/// the policy allows (Envoy's RBAC answers `RBAC: access denied` and logs the rest);
/// [`AuthzError::to_detailed_status`] adds the policy, for development
/// ([`AuthzLayer::detailed_denials`](crate::authz::AuthzLayer::detailed_denials)).
///
/// ```
/// use mtls_tonic::authz::AuthzError;
/// let denied = AuthzError::Denied {
///     method: "/pkg.Svc/Method".into(),
///     presented: "spiffe://example.org/sa/intruder".into(),
///     expected: "spiffe://example.org/sa/web".into(),
/// };
/// assert_eq!(
///     denied.to_status().message(),
///     "peer spiffe://example.org/sa/intruder may not call /pkg.Svc/Method"
/// );
/// assert!(denied.to_detailed_status().message().ends_with("expected spiffe://example.org/sa/web"));
/// assert!(denied.to_string().ends_with("expected spiffe://example.org/sa/web"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// No authenticated peer identity on the request (not served over
    /// [`MtlsIncoming`](crate::server::MtlsIncoming), or a client without a certificate).
    #[error("{method}: no authenticated peer (expected {expected})")]
    Unauthenticated {
        /// The gRPC method path.
        method: String,
        /// What the policy for this method accepts.
        expected: String,
    },
    /// The peer is not allowed to call this method.
    #[error("peer {presented} may not call {method}: expected {expected}")]
    Denied {
        /// The gRPC method path.
        method: String,
        /// The peer's SPIFFE ID (or its SANs when it has none).
        presented: String,
        /// What the policy for this method accepts.
        expected: String,
    },
}

impl AuthzError {
    /// The gRPC status for this denial: UNAUTHENTICATED or PERMISSION_DENIED.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::Denied { .. } => Code::PermissionDenied,
        }
    }

    /// What the caller is told: who was refused for which method, not what the policy
    /// expected.
    pub fn caller_message(&self) -> String {
        match self {
            Self::Unauthenticated { method, .. } => format!("{method}: no authenticated peer"),
            Self::Denied {
                method, presented, ..
            } => format!("peer {presented} may not call {method}"),
        }
    }

    /// The status sent to the caller: [`AuthzError::code`] and
    /// [`AuthzError::caller_message`].
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.caller_message())
    }

    /// The status with the whole detail, the policy's expectation included: for
    /// development only.
    pub fn to_detailed_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}
