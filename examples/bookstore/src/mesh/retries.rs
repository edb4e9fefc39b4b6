//! The retry step: both paths have one retry policy (UNAVAILABLE, at most
//! [`RETRY_ATTEMPTS`] attempts: the proxyless channel's gRFC A6 policy, the client
//! sidecar's `retry_on: unavailable`), and [`RETRIED_CALLS`] calls marked "fail the first
//! attempt" ([`crate::faults`]) each make exactly one retry, which is served.

use std::time::Duration;

use mtls_tonic::balance::RetryPolicy;
use tonic::{Code, Request};

use super::*;
use crate::{faults::FAIL_FIRST_ATTEMPT_HEADER, proto::bookstore_client::BookstoreClient};

/// Attempts per call on both paths (the proxyless `maxAttempts`; the client sidecar's
/// `num_retries` is one less).
///
/// ```
/// assert_eq!(bookstore::mesh::RETRY_ATTEMPTS, 3);
/// ```
pub const RETRY_ATTEMPTS: u32 = 3;
/// Calls the retry step marks to fail their first attempt: each path makes exactly this
/// many retries (the stats table's retries row).
///
/// ```
/// assert!(bookstore::mesh::RETRIED_CALLS > 0);
/// ```
pub const RETRIED_CALLS: usize = 3;

/// The proxyless channel's retry policy: as the client sidecar's route (UNAVAILABLE,
/// [`RETRY_ATTEMPTS`], Envoy's default back-off: 25 ms base, 250 ms max).
pub(super) fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(RETRY_ATTEMPTS)
        .backoff(Duration::from_millis(25), Duration::from_millis(250), 2.0)
        .retryable([Code::Unavailable])
}

/// What the retry step saw: each marked call's result (the replica that served it, or
/// its status) and how many first attempts the replicas failed during it.
#[derive(Clone, Debug)]
pub(super) struct RetriedCalls {
    pub(super) results: Vec<Result<String, (Code, String)>>,
    pub(super) failed_on_purpose: u64,
}

impl RetriedCalls {
    pub(super) fn served(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

/// [`RETRIED_CALLS`] `ListShelves` calls, one after another, each marked to fail its first
/// attempt (ids `<path>-retry-<n>`, so no call of the other path shares one).
pub(super) async fn retried_calls(
    channel: crate::scenario::BoxChannel,
    token: &str,
    path: PathKind,
    replicas: &Replicas,
) -> RetriedCalls {
    let mut client = BookstoreClient::new(channel);
    let failed_before = replicas.faults().failed();
    let mut results = Vec::new();
    for n in 1..=RETRIED_CALLS {
        let mut request = Request::new(());
        request.set_timeout(Duration::from_secs(10));
        let metadata = request.metadata_mut();
        if let Ok(value) = format!("Bearer {token}").parse() {
            metadata.insert("authorization", value);
        }
        if let Ok(value) = format!("{path}-retry-{n}").parse() {
            metadata.insert(FAIL_FIRST_ATTEMPT_HEADER, value);
        }
        let result = client.list_shelves(request).await;
        results.push(match result {
            Ok(response) => Ok(response
                .metadata()
                .get(crate::REPLICA_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned()),
            Err(status) => Err((status.code(), status.message().to_owned())),
        });
    }
    RetriedCalls {
        results,
        failed_on_purpose: replicas.faults().failed() - failed_before,
    }
}

/// Check [`checks::RETRIES`]: every marked call failed its first attempt and was served on
/// the retry.
pub(super) fn retries_check(path: PathKind, r: &RetriedCalls) -> Check {
    let failures: Vec<String> = r
        .results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(code, message)| format!("{code:?}: {message}"))
        .take(2)
        .collect();
    let served_by: Vec<&str> = r
        .results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(String::as_str)
        .collect();
    let mut observed = format!(
        "{} first attempts failed, {}/{} served ({})",
        r.failed_on_purpose,
        r.served(),
        r.results.len(),
        served_by.join(", ")
    );
    if !failures.is_empty() {
        observed.push_str(&format!("; {}", failures.join("; ")));
    }
    Check {
        path,
        name: checks::RETRIES,
        expected: format!(
            "{RETRIED_CALLS} calls failing once: each retried (UNAVAILABLE, {RETRY_ATTEMPTS} attempts) and served"
        ),
        observed,
        passed: r.served() == RETRIED_CALLS && r.failed_on_purpose == RETRIED_CALLS as u64,
        status: None,
    }
}
