//! The mesh demo's one deliberate failure: "fail the first attempt of this call", so the
//! scenario can show that both paths retry by the same policy and lose no call.
//!
//! A replica given a [`FailFirstAttempts`] (only `bookstore-mesh` does:
//! [`crate::mesh::Replicas`]) answers a call that carries [`FAIL_FIRST_ATTEMPT_HEADER`]
//! `: <call id>` with UNAVAILABLE the first time any replica sharing that
//! [`FailFirstAttempts`] sees the id, and serves it normally on every later attempt. A
//! retry (by the client's policy, or its sidecar's `retry_on: unavailable`) therefore
//! succeeds whichever replica it reaches. A server started without one — `bookstore-server`,
//! [`crate::BookstoreService::new`] alone — ignores the header: it is a demo scenario's
//! switch, not something a caller can use against a real deployment.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tonic::Status;

/// The request header naming a call whose first attempt must fail (its value: the call's
/// id, any printable ASCII chosen by the caller, unique per call).
pub const FAIL_FIRST_ATTEMPT_HEADER: &str = "x-demo-fail-first-attempt";

/// The call ids whose first attempt has already failed, shared by the replicas of one
/// demo mesh (cheap to clone).
///
/// ```
/// use bookstore::faults::FailFirstAttempts;
/// let faults = FailFirstAttempts::new();
/// assert!(faults.first_attempt("call-1").is_some(), "the first attempt fails");
/// assert!(faults.first_attempt("call-1").is_none(), "the retry is served");
/// assert_eq!(faults.failed(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct FailFirstAttempts {
    seen: Arc<Mutex<HashSet<String>>>,
    failed: Arc<AtomicU64>,
}

impl FailFirstAttempts {
    /// No call seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The UNAVAILABLE status for the first attempt of call `id`; `None` for every later
    /// attempt (the id was seen).
    pub fn first_attempt(&self, id: &str) -> Option<Status> {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
        first.then(|| {
            self.failed.fetch_add(1, Ordering::Relaxed);
            Status::unavailable(format!(
                "{FAIL_FIRST_ATTEMPT_HEADER} {id:?}: first attempt failed on purpose (mesh demo); a retry is served"
            ))
        })
    }

    /// How many first attempts were failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}
