//! Polling with a deadline.

use std::time::{Duration, Instant};

/// How often [`eventually`] and [`wait_until`] look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `f` every 20 ms until it returns `Some`, at most `limit`; panics with
/// "timed out waiting for {what}" after that.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut calls = 0;
/// let value = mtls_test_support::eventually(std::time::Duration::from_secs(5), "the third call", || {
///     calls += 1;
///     (calls == 3).then_some(calls)
/// })
/// .await;
/// assert_eq!(value, 3);
/// # }
/// ```
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held
/// (for tests that also assert that something does *not* happen in time).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// assert!(mtls_test_support::wait_until(Duration::from_secs(5), || true).await);
/// assert!(!mtls_test_support::wait_until(Duration::from_millis(50), || false).await);
/// # }
/// ```
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
