//! BalancedChannel against a real DNS server (hickory-server on loopback, records changed at
//! run time) and real mTLS tonic replicas on 127.0.0.2.. sharing one port.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mtls_tonic::{
    balance::{Backoff, BalancedChannel, EndpointState, ResolutionState},
    client::MtlsConnector,
};
use support::{
    dns::DnsServer,
    fixture::{
        Fixture, NAME, TTL, assert_fails_for_no_records, assert_ready, call, finish,
        finish_without, ip, ready_count,
    },
    pki::{CLIENT_ID, Pki},
    replica::Replica,
    wait_until,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// 3000 calls from 10 concurrent callers through `channel`: how many each replica served.
async fn spread_3000_calls(channel: &BalancedChannel) -> HashMap<String, usize> {
    assert_ready(channel, 3, Duration::from_secs(5)).await;
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let channel = channel.clone();
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..300 {
                let replica = call(&channel, "").await.unwrap();
                *counts.lock().unwrap().entry(replica).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 3000);
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreads_3000_calls_evenly_over_three_replicas() {
    let fx = Fixture::start(3, 3).await;
    // Round robin does not look at load: the spread is exact whatever the machine does
    // (each call takes the next ready endpoint; 3000 = 3 x 1000).
    let channel = fx
        .builder()
        .load_policy(mtls_tonic::balance::LoadPolicy::RoundRobin)
        .build()
        .unwrap();
    let counts = spread_3000_calls(&channel).await;
    let max = *counts.values().max().unwrap();
    let min = *counts.values().min().unwrap();
    eprintln!("round robin: {counts:?}");
    assert!(max - min <= 10, "round robin: {counts:?}");
    drop(channel);

    // p2c over calls in flight is load-aware by design: a replica whose thread the machine
    // starves holds its calls longer and gets fewer new ones. On a quiet machine the spread
    // is within 1.1; under a loaded CI host we saw up to 1.7. The bound below still fails
    // for a balancer that sticks to one endpoint or starves one (a replica under 20 % of
    // the calls, or the busiest above twice the least busy).
    let channel = fx.channel();
    let counts = spread_3000_calls(&channel).await;
    let max = *counts.values().max().unwrap() as f64;
    let min = *counts.values().min().unwrap() as f64;
    eprintln!("p2c: {counts:?}");
    assert!(min >= 600.0, "p2c starved a replica: {counts:?}");
    assert!(
        max / min <= 2.0,
        "p2c: max/min = {:.3}: {counts:?}",
        max / min
    );
    assert!(matches!(
        channel.resolution(),
        ResolutionState::Resolved { addresses: 3, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_record_gets_calls_within_one_refresh() {
    let (mut fx, channel) = Fixture::ready(4, 3).await;
    let all: Vec<Ipv4Addr> = (2..6).map(ip).collect();
    fx.dns.set_a(NAME, &all, TTL).await;
    let added = Instant::now();
    let fourth = ip(5).to_string();
    // Refresh period: TTL 1 s (+10 % jitter); allow the connect on top.
    let deadline = added + Duration::from_millis(1100) + Duration::from_millis(900);
    let mut first_at = None;
    while Instant::now() < deadline {
        if call(&channel, "").await.unwrap() == fourth {
            first_at = Some(added.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_at = first_at.unwrap_or_else(|| panic!("4th replica got no call: {channel:?}"));
    eprintln!("4th replica served its first call {first_at:?} after the record was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_record_drains_without_failed_calls() {
    let (mut fx, channel, (outcomes, stop, handles)) =
        Fixture::under_load("slow:30", Duration::from_millis(500)).await;
    fx.dns.set_a(NAME, &[ip(2), ip(3)], TTL).await;
    let removed = ip(4).to_string();
    let gone = wait_until(Duration::from_secs(3), || {
        channel
            .endpoints()
            .iter()
            .all(|e| e.addr.ip().to_string() != removed || e.state == EndpointState::Draining)
    })
    .await;
    assert!(gone, "{channel:?}");
    let outcomes = finish_without(
        (outcomes, stop, handles),
        &removed,
        Duration::from_millis(800),
    )
    .await;
    let before = outcomes
        .iter()
        .filter(|o| o.result.as_deref() == Ok(removed.as_str()))
        .count();
    assert!(before > 0, "the removed replica had calls before removal");
    // The drained endpoint leaves the channel's endpoint list.
    assert!(
        wait_until(Duration::from_secs(3), || channel.endpoints().len() == 2).await,
        "{channel:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_avoided_then_used_again() {
    let (mut fx, channel, (outcomes, stop, handles)) =
        Fixture::under_load("slow:20", Duration::from_millis(400)).await;
    let victim = ip(3);
    let addr = fx.replicas[&victim].addr;
    let killed = Instant::now();
    fx.replicas.get_mut(&victim).unwrap().kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = Instant::now();
    fx.replicas
        .insert(victim, Replica::restart(addr, fx.config.clone()));
    let back = wait_until(Duration::from_secs(5), || {
        outcomes.lock().unwrap().iter().any(|o| {
            o.started > restarted && o.result.as_deref() == Ok(victim.to_string().as_str())
        })
    })
    .await;
    finish(stop, handles).await;
    assert!(back, "restarted replica never served again: {channel:?}");
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    // Only calls in flight on the victim may fail: at most one per worker, all started before
    // the kill was noticed (within 1 s).
    assert!(failed.len() <= 8, "{} failed: {failed:?}", failed.len());
    for f in &failed {
        assert!(
            f.started < killed + Duration::from_secs(1),
            "a call started {:?} after the kill failed: {f:?}",
            f.started - killed
        );
        assert_eq!(f.result, Err(Code::Unavailable));
    }
    let to_victim_while_down = outcomes
        .iter()
        .filter(|o| o.started > killed + Duration::from_secs(1) && o.started < restarted)
        .filter(|o| o.result.as_deref() == Ok(victim.to_string().as_str()))
        .count();
    assert_eq!(to_victim_while_down, 0);
    eprintln!("kill: {} calls, {} failed", outcomes.len(), failed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_down_fails_unavailable_within_bound() {
    let (mut fx, channel) = Fixture::ready(3, 3).await;
    for replica in fx.replicas.values_mut() {
        replica.kill();
    }
    // The channel notices the closed connections (a call racing the kill itself may fail
    // UNAVAILABLE on the dying connection instead).
    assert_ready(&channel, 0, Duration::from_secs(2)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), call(&channel, ""))
            .await
            .expect("call hung")
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // Bound 1 s (ready_timeout) plus scheduling slack.
        assert!(took < Duration::from_millis(2500), "took {took:?}");
        assert!(
            status
                .message()
                .contains("no ready endpoint for bookstore.test"),
            "{}",
            status.message()
        );
    }
    // Once failing, later calls fail at once rather than waiting the bound again.
    let started = Instant::now();
    let _ = call(&channel, "").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_stopped_keeps_last_good_set() {
    let (mut fx, channel) = Fixture::ready(3, 3).await;
    fx.dns.stop().await;
    let unreachable = wait_until(Duration::from_secs(5), || {
        matches!(channel.resolution(), ResolutionState::Unreachable { .. })
    })
    .await;
    assert!(unreachable, "{:?}", channel.resolution());
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..300 {
        *seen.entry(call(&channel, "").await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(ready_count(&channel), 3);
    // DNS comes back with a smaller set: the channel follows it again.
    let mut dns = DnsServer::start_on(Some(fx.dns.addr)).await;
    dns.set_a(NAME, &[ip(2), ip(3)], TTL).await;
    let recovered = wait_until(Duration::from_secs(8), || {
        matches!(
            channel.resolution(),
            ResolutionState::Resolved { addresses: 2, .. }
        )
    })
    .await;
    assert!(recovered, "{:?}", channel.resolution());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_records_is_told_apart_and_fails_unavailable() {
    let (_fx, channel) = Fixture::strict_then_empty(1).await;
    let empty = wait_until(Duration::from_secs(3), || {
        matches!(channel.resolution(), ResolutionState::NoRecords { .. })
    })
    .await;
    assert!(empty, "{:?}", channel.resolution());
    assert_fails_for_no_records(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_endpoint_is_not_picked() {
    let fx = Fixture::start(2, 2).await;
    let channel = fx.builder().health_check("").build().unwrap();
    assert_ready(&channel, 2, Duration::from_secs(5)).await;
    let sick = &fx.replicas[&ip(2)];
    sick.set_serving(false).await;
    assert!(
        wait_until(Duration::from_secs(2), || channel.endpoints().iter().any(
            |e| e.addr == sick.addr && e.state == EndpointState::NotServing
        ))
        .await,
        "{channel:?}"
    );
    for _ in 0..50 {
        assert_eq!(call(&channel, "").await.unwrap(), ip(3).to_string());
    }
    sick.set_serving(true).await;
    assert_ready(&channel, 2, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_peak_ewma_policies_reach_every_replica() {
    let fx = Fixture::start(3, 3).await;
    for policy in [
        mtls_tonic::balance::LoadPolicy::RoundRobin,
        mtls_tonic::balance::LoadPolicy::PeakEwma,
    ] {
        let channel = fx.builder().load_policy(policy).build().unwrap();
        assert_ready(&channel, 3, Duration::from_secs(5)).await;
        let mut seen = HashMap::<String, usize>::new();
        for _ in 0..90 {
            *seen.entry(call(&channel, "").await.unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len(), 3, "{policy:?}: {seen:?}");
    }
}

/// Every `n` consecutive calls of `order` reached `n` distinct replicas.
fn assert_rotates(order: &[String], n: usize) {
    for window in order.windows(n) {
        let distinct: std::collections::HashSet<_> = window.iter().collect();
        assert_eq!(distinct.len(), n, "window {window:?} in {order:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_over_ready_endpoints_and_follows_readiness() {
    let mut fx = Fixture::start(3, 3).await;
    let channel = fx
        .builder()
        .load_policy(mtls_tonic::balance::LoadPolicy::RoundRobin)
        .build()
        .unwrap();
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    let mut order = Vec::new();
    for _ in 0..100 {
        order.push(call(&channel, "").await.unwrap());
    }
    assert_rotates(&order, 3);
    // One replica goes away: the rotation continues over the other two, then over all
    // three once it is back.
    let victim = ip(3);
    let addr = fx.replicas[&victim].addr;
    fx.replicas.get_mut(&victim).unwrap().kill();
    assert_ready(&channel, 2, Duration::from_secs(5)).await;
    let mut order = Vec::new();
    for _ in 0..40 {
        order.push(call(&channel, "").await.unwrap());
    }
    assert!(!order.contains(&victim.to_string()), "{order:?}");
    assert_rotates(&order, 2);
    fx.replicas
        .insert(victim, Replica::restart(addr, fx.config.clone()));
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    let mut order = Vec::new();
    for _ in 0..60 {
        order.push(call(&channel, "").await.unwrap());
    }
    assert_rotates(&order, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_is_never_ready() {
    let fx = Fixture::start(1, 1).await;
    // A client trusting a different CA: every handshake fails; the endpoint is refused
    // (told apart from a dead one) with the verifier's reason, and calls fail UNAVAILABLE
    // (no hang).
    let other = Pki::new();
    let connector = MtlsConnector::new(other.client_config(CLIENT_ID));
    let channel = BalancedChannel::builder(format!("bookstore.test:{}", fx.port), connector)
        .nameserver(fx.dns.addr)
        .backoff(
            Backoff::default()
                .initial(Duration::from_millis(100))
                .max(Duration::from_millis(200)),
        )
        .ready_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let status = call(&channel, "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let endpoints = channel.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert!(
        matches!(&endpoints[0].state, EndpointState::Refused { reason } if reason.contains("TLS handshake")),
        "{endpoints:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_ready_is_bounded_by_the_call_deadline() {
    let mut fx = Fixture::start(1, 1).await;
    let channel = fx.builder().wait_for_ready().build().unwrap();
    assert_ready(&channel, 1, Duration::from_secs(5)).await;
    for replica in fx.replicas.values_mut() {
        replica.kill();
    }
    assert_ready(&channel, 0, Duration::from_secs(2)).await;
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(channel.clone()).check(request),
    )
    .await
    .expect("call hung")
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_triggers_early_reresolution() {
    let mut fx = Fixture::start(3, 2).await;
    fx.dns.set_a(NAME, &[ip(2), ip(3)], 60).await;
    // TTL 60 s and a 30 s ceiling: without a trigger the next resolution is far away.
    let channel = fx
        .builder()
        .refresh(mtls_tonic::balance::Refresh::new(
            Duration::from_secs(30),
            Duration::from_secs(30),
            0.0,
        ))
        .reresolve_min_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_ready(&channel, 2, Duration::from_secs(5)).await;
    fx.dns.set_a(NAME, &[ip(2), ip(3), ip(4)], 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        channel.endpoints().len(),
        2,
        "no resolution expected yet: {channel:?}"
    );
    fx.replicas.get_mut(&ip(3)).unwrap().kill();
    let found = wait_until(Duration::from_secs(3), || {
        channel
            .endpoints()
            .iter()
            .any(|e| e.addr.ip() == ip(4) && e.state.is_ready())
    })
    .await;
    assert!(
        found,
        "the lost connection did not trigger a re-resolution: {channel:?}"
    );
}
