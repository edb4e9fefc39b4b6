//! Shared test fixtures: test PKI, an in-process DNS server (hickory-server) whose records
//! change at run time, and tonic replicas on 127.0.0.2.. sharing one port.
// Test fixtures may panic on a broken fixture: that is a failed test, not a library bug.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod dns;
pub mod fixture;
pub mod pki;
pub mod replica;

use std::time::{Duration, Instant};

/// Logs for failing tests: `RUST_LOG=mtls_tonic=debug cargo test`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
