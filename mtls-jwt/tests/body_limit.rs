//! Issue 25: a JWKS server streaming an endless chunked body cannot grow the process: the
//! fetch stops at the 1 MiB limit and fails naming it. Alone in this test binary, so the
//! resident-set measure sees no other test's allocations.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The fault server alone (not support/mod.rs, which needs the workspace): this test ships
// in the package.
#[path = "support/fault_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod fault_server;

use std::time::{Duration, Instant};

use fault_server::{FaultServer, Reply};
use mtls_jwt::{Algorithm, Error, RemoteJwks, SigningKey, TokenSpec, Validator};

/// The process's resident set, in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_stops_at_the_limit() {
    let server = FaultServer::start("127.0.0.1", vec![], Reply::Endless).await;
    let url = server.url("/jwks");
    let v = Validator::builder()
        .jwks(RemoteJwks::new(url.clone()).retry_interval(Duration::from_secs(60)))
        .build()
        .unwrap();
    // Warm up (allocator, connection pool), then measure over many fetches.
    let _ = v.refresh().await;
    let before = rss_kib();
    let started = Instant::now();
    for _ in 0..30 {
        let err = v.refresh().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::JwksFetchFailed { .. }), "{text}");
        assert!(
            text.contains("1048576 bytes") && text.contains(&url),
            "names the limit and the URL: {text}"
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB over 30 endless bodies"
    );
    // Each fetch stops at 1 MiB: 30 of them take nowhere near the 10 s fetch timeout each.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let err = v
        .validate(
            &SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .mint(&TokenSpec::new(Duration::from_secs(300)))
                .unwrap(),
        )
        .await;
    assert!(
        err.unwrap_err().to_string().contains("1048576 bytes"),
        "a token is told why there are no keys"
    );
}
