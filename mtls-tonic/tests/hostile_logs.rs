//! The server's log under a handshake flood: a few detailed lines per second per kind, the
//! rest counted on one summary line, every connection accounted for once.
//!
//! Its own test binary: it counts the lines its server logs under a thread-local
//! subscriber, and tracing caches each log callsite's interest process-wide when the
//! callsite is first hit. In a binary whose other tests hit the same callsites on their own
//! threads at the same time, a callsite could be cached as of no interest to this test's
//! subscriber and its lines lost (seen: the ten detailed "handshake failed" lines missing).
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use mtls_tonic::server::{MtlsIncoming, ServerOptions};
use support::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The number after `key=` in `line`, if any.
fn count_field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// current_thread: the accept loop and handshake tasks run under this thread's subscriber.
#[tokio::test]
async fn handshake_failures_and_timeouts_are_logged_a_few_lines_per_second_with_counts() {
    let (captured, _guard) = support::CapturedLogs::warnings();

    let pki = Pki::new();
    // No per-source rate here: every connection must reach the handshake to be counted.
    let options = ServerOptions::default()
        .handshake_timeout(Duration::from_millis(300))
        .handshake_rate_per_ip(None);
    let listener = options.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming =
        MtlsIncoming::configured(listener, pki.server_config(Pki::member_policy()), options);
    let started = Instant::now();

    // 400 connections that speak garbage, in bursts, and 100 that say nothing.
    const GARBAGE: u64 = 400;
    const SILENT: u64 = 100;
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..(GARBAGE / 50) {
        let bursts = (0..50).map(|_| async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await;
        });
        futures_util::future::join_all(bursts).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The last summary comes at the next one-second tick.
    let text = || captured.text();
    let counted = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        let failed = lines
            .iter()
            .filter(|l| l.contains("mTLS handshake failed"))
            .count() as u64
            + lines.iter().map(|l| count_field(l, "failed=")).sum::<u64>();
        let timed_out = lines
            .iter()
            .filter(|l| l.contains("mTLS handshake timed out"))
            .count() as u64
            + lines
                .iter()
                .map(|l| count_field(l, "timed_out="))
                .sum::<u64>();
        // Silent connections beyond the per-IP share (64) are shed for newer ones.
        let shed = lines
            .iter()
            .filter(|l| l.contains("shed the oldest"))
            .count() as u64
            + lines.iter().map(|l| count_field(l, "shed=")).sum::<u64>();
        (failed, timed_out + shed)
    };
    let all_counted = support::wait_until(Duration::from_secs(5), || {
        counted(&text()) == (GARBAGE, SILENT)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let text = text();
    let lines = text.lines().count();
    assert!(
        all_counted,
        "expected {GARBAGE} failures and {SILENT} timeouts or sheddings counted, got {:?}:\n{text}",
        counted(&text)
    );
    // 5 detailed lines per kind (failed, timed out, shed) per second, plus one summary line.
    let allowed = ((elapsed.ceil() as usize) + 1) * (3 * 5 + 1);
    assert!(
        lines <= allowed,
        "{lines} log lines in {elapsed:.1} s for {} events (allowed {allowed}):\n{text}",
        GARBAGE + SILENT
    );
    assert!(
        text.contains("more mTLS server events than logged"),
        "{text}"
    );
    eprintln!(
        "{lines} log lines in {elapsed:.1} s for {} events",
        GARBAGE + SILENT
    );
    drop(silent);
    drop(incoming);
}
