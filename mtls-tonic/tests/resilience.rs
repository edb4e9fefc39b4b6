//! BalancedChannel against failing replicas (real DNS on loopback, real mTLS tonic replicas
//! on 127.0.0.2..): gRFC A6 retry policy and throttling, outlier detection (gRFC A50).
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mtls_tonic::balance::{EndpointState, OutlierDetection, RetryPolicy, ServiceConfig};
use support::{
    fixture::{Fixture, assert_no_failed_call, assert_ready, call, finish, ip, load},
    wait_until,
};
use tonic::Code;

fn checks(fx: &Fixture) -> u64 {
    fx.replicas.values().map(|r| r.checks()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_hides_a_replica_answering_unavailable() {
    let fx = Fixture::start(3, 3).await;
    fx.replicas[&ip(2)].answer_with(Code::Unavailable);
    let channel = fx.retrying_builder().build().unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    let (outcomes, stop, handles) = load(&channel, 8, "");
    tokio::time::sleep(Duration::from_secs(2)).await;
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_no_failed_call(&outcomes, 100);
    assert!(
        fx.replicas[&ip(2)].checks() > 0,
        "the failing replica was never tried"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.result.as_deref() != Ok("127.0.0.2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_stops_retries_when_every_replica_fails() {
    let fx = Fixture::start(3, 3).await;
    for replica in fx.replicas.values() {
        replica.answer_with(Code::Unavailable);
    }
    let config = ServiceConfig::from_json(
        r#"{"methodConfig":[{"name":[{"service":"grpc.health.v1.Health"}],
            "retryPolicy":{"maxAttempts":3,"initialBackoff":"0.001s","maxBackoff":"0.005s",
              "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}],
            "retryThrottling":{"maxTokens":10,"tokenRatio":0.1}}"#,
    )
    .unwrap();
    let channel = fx
        .builder()
        .outlier_detection(OutlierDetection::disabled())
        .service_config(config)
        .build()
        .unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    for _ in 0..50 {
        assert_eq!(
            call(&channel, "").await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    let attempts = checks(&fx);
    // 10 tokens: retries stop once 5 are gone; without throttling it would be 150.
    assert!(
        (50..=56).contains(&attempts),
        "{attempts} attempts for 50 calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_codes_are_returned_at_once() {
    let fx = Fixture::start(3, 3).await;
    for replica in fx.replicas.values() {
        replica.answer_with(Code::NotFound);
    }
    let channel = fx
        .builder()
        .retry_policy(
            RetryPolicy::new(5)
                .backoff(Duration::from_millis(300), Duration::from_secs(1), 2.0)
                .retryable([Code::Unavailable]),
        )
        .build()
        .unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    let started = Instant::now();
    let status = call(&channel, "").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(checks(&fx), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_fast_failing_replica_and_takes_it_back() {
    let fx = Fixture::start(3, 3).await;
    let channel = fx
        .builder()
        .health_check("")
        .load_policy(mtls_tonic::balance::LoadPolicy::PeakEwma)
        .outlier_detection(
            OutlierDetection::default()
                .base_ejection_time(Duration::from_secs(1))
                .max_ejection_time(Duration::from_secs(2)),
        )
        .build()
        .unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    let bad = &fx.replicas[&ip(2)];
    bad.answer_with(Code::Unavailable);
    let (outcomes, stop, handles) = load(&channel, 8, "");
    let ejected_seen = Arc::new(AtomicUsize::new(0));
    let max_ejected = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let channel = channel.clone();
        let (seen, max) = (ejected_seen.clone(), max_ejected.clone());
        tokio::spawn(async move {
            loop {
                let n = channel
                    .endpoints()
                    .iter()
                    .filter(|e| matches!(e.state, EndpointState::Ejected { .. }))
                    .count();
                if n > 0 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                max.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (bad_before, all_before) = (bad.checks(), checks(&fx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (bad_after, all_after) = (bad.checks(), checks(&fx));
    let share = (bad_after - bad_before) as f64 / (all_after - all_before).max(1) as f64;
    assert!(
        share <= 0.05,
        "the failing replica got {:.1} % of calls",
        share * 100.0
    );
    assert!(
        ejected_seen.load(Ordering::Relaxed) > 0,
        "never shown as ejected"
    );
    // It recovers: traffic comes back once its ejection ends.
    bad.answer_with(Code::Ok);
    let back = wait_until(Duration::from_secs(6), || {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(200)
            .any(|o| o.result.as_deref() == Ok("127.0.0.2"))
    })
    .await;
    finish(stop, handles).await;
    watcher.abort();
    assert!(back, "the recovered replica got no calls: {channel:?}");
    assert_eq!(
        max_ejected.load(Ordering::Relaxed),
        1,
        "more than the max ejection percent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_exceeds_the_max_ejection_percent() {
    let fx = Fixture::start(3, 3).await;
    let channel = fx
        .builder()
        .outlier_detection(OutlierDetection::default().max_ejection_percent(50))
        .build()
        .unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    fx.replicas[&ip(2)].answer_with(Code::Internal);
    fx.replicas[&ip(3)].answer_with(Code::Internal);
    let mut most = 0;
    let mut served = HashMap::<String, usize>::new();
    for _ in 0..300 {
        if let Ok(replica) = call(&channel, "").await {
            *served.entry(replica).or_default() += 1;
        }
        let ejected = channel
            .endpoints()
            .iter()
            .filter(|e| matches!(e.state, EndpointState::Ejected { .. }))
            .count();
        most = most.max(ejected);
    }
    // 1 of 3 is 33 % <= 50 %; a second would make 67 %.
    assert_eq!(most, 1, "{channel:?}");
    assert!(
        served.get("127.0.0.4").copied().unwrap_or(0) > 0,
        "{served:?}"
    );
}
