//! Why [`AuthzService`](super::AuthzService) denied a call.

use tonic::{Code, Status};

/// A denied call: who called, what, and what the policy expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// No authenticated peer identity on the request (not served over
    /// [`MtlsIncoming`](crate::MtlsIncoming), or a client without a certificate).
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

    /// The status sent to the caller.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}
