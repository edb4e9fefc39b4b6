//! The balanced-channel fixture: replicas on 127.0.0.2.. behind a DNS name, a channel
//! builder with short timings, one-call and load helpers.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mtls_tonic::{
    balance::{Backoff, BalancedChannel, DnsTimeout},
    client::MtlsConnector,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    dns::DnsServer,
    pki::{CLIENT_ID, Pki},
    replica::{Replica, bind_shared_port},
};

pub const NAME: &str = "bookstore.test.";
pub const TTL: u32 = 1;

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

pub struct Fixture {
    pub pki: Pki,
    pub port: u16,
    pub config: Arc<rustls::ServerConfig>,
    pub dns: DnsServer,
    pub replicas: HashMap<Ipv4Addr, Replica>,
}

impl Fixture {
    /// Replicas on 127.0.0.2..=127.0.0.(1+started), DNS naming the first `in_dns` of them.
    pub async fn start(started: u8, in_dns: u8) -> Self {
        super::init_tracing();
        let pki = Pki::new();
        let config = Arc::new(pki.server_config(Pki::member_policy()));
        let ips: Vec<Ipv4Addr> = (2..2 + started).map(ip).collect();
        let (port, listeners) = bind_shared_port(&ips);
        let replicas = listeners
            .into_iter()
            .map(|l| {
                let r = Replica::start(l, config.clone());
                let std::net::IpAddr::V4(v4) = r.addr.ip() else {
                    unreachable!()
                };
                (v4, r)
            })
            .collect();
        let mut dns = DnsServer::start().await;
        dns.set_a(NAME, &ips[..usize::from(in_dns)], TTL).await;
        Self {
            pki,
            port,
            config,
            dns,
            replicas,
        }
    }

    /// [`Fixture::start`] and a [`Fixture::channel`], once the `in_dns` endpoints are ready
    /// (within 5 s; panics otherwise).
    pub async fn ready(started: u8, in_dns: u8) -> (Self, BalancedChannel) {
        let fx = Self::start(started, in_dns).await;
        let channel = fx.channel();
        assert_ready(&channel, usize::from(in_dns), Duration::from_secs(5)).await;
        (fx, channel)
    }

    /// [`Fixture::ready`] with 3 replicas, all in DNS, and [`load`] on its channel: 8
    /// callers of `service`, given `warm_up` to get going.
    pub async fn under_load(
        service: &'static str,
        warm_up: Duration,
    ) -> (Self, BalancedChannel, LoadRun) {
        let (fx, channel) = Self::ready(3, 3).await;
        let run = load(&channel, 8, service);
        tokio::time::sleep(warm_up).await;
        (fx, channel, run)
    }

    /// `replicas` replicas, all in DNS, behind a `strict_empty_answer()` channel; once they
    /// are ready (within 5 s), DNS answers with no records.
    pub async fn strict_then_empty(replicas: u8) -> (Self, BalancedChannel) {
        let mut fx = Self::start(replicas, replicas).await;
        let channel = fx.builder().strict_empty_answer().build().unwrap();
        assert_ready(&channel, usize::from(replicas), Duration::from_secs(5)).await;
        fx.dns.set_a(NAME, &[], TTL).await;
        (fx, channel)
    }

    pub fn channel(&self) -> BalancedChannel {
        self.builder().build().unwrap()
    }

    pub fn builder(&self) -> mtls_tonic::balance::BalancedChannelBuilder {
        let connector = MtlsConnector::new(self.pki.client_config(CLIENT_ID));
        BalancedChannel::builder(format!("bookstore.test:{}", self.port), connector)
            .nameserver(self.dns.addr)
            .dns_timeout(DnsTimeout::new(Duration::from_millis(300), 1))
            .refresh(mtls_tonic::balance::Refresh::new(
                Duration::from_millis(500),
                Duration::from_secs(1),
                0.1,
            ))
            .reresolve_min_interval(Duration::from_millis(500))
            .backoff(
                Backoff::default()
                    .initial(Duration::from_millis(100))
                    .max(Duration::from_millis(400)),
            )
            .connect_timeout(Duration::from_secs(2))
            .ready_timeout(Duration::from_secs(1))
    }
}

impl Fixture {
    /// [`Fixture::builder`] with outlier detection off and a retry policy of 3 attempts
    /// (5 to 20 ms backoff) for UNAVAILABLE: retries alone hide a replica answering it.
    pub fn retrying_builder(&self) -> mtls_tonic::balance::BalancedChannelBuilder {
        self.builder()
            .outlier_detection(mtls_tonic::balance::OutlierDetection::disabled())
            .retry_policy(
                mtls_tonic::balance::RetryPolicy::new(3)
                    .backoff(Duration::from_millis(5), Duration::from_millis(20), 2.0)
                    .retryable([Code::Unavailable]),
            )
    }
}

/// One unary call; the replica that served it.
pub async fn call(channel: &BalancedChannel, service: &str) -> Result<String, tonic::Status> {
    let mut client = HealthClient::new(channel.clone());
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(super::meta(&response, "x-replica"))
}

pub fn ready_count(channel: &BalancedChannel) -> usize {
    channel
        .endpoints()
        .iter()
        .filter(|e| e.state.is_ready())
        .count()
}

/// A call through `channel`, whose DNS name has no records, fails UNAVAILABLE saying so.
pub async fn assert_fails_for_no_records(channel: &BalancedChannel) {
    let status = call(channel, "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("DNS: no records"),
        "expected \"DNS: no records\", saw {:?}",
        status.message()
    );
}

/// Waits (polling, at most `within`) until exactly `want` endpoints of `channel` are
/// ready; panics with the channel's state otherwise.
pub async fn assert_ready(channel: &BalancedChannel, want: usize, within: std::time::Duration) {
    let ready = super::wait_until(within, || ready_count(channel) == want).await;
    assert!(
        ready,
        "expected {want} ready endpoints within {within:?}, saw {}: {channel:?}",
        ready_count(channel)
    );
}

#[derive(Debug)]
pub struct Outcome {
    pub started: Instant,
    pub result: Result<String, Code>,
    pub message: String,
}

pub type LoadRun = (
    Arc<Mutex<Vec<Outcome>>>,
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// `workers` loops calling until `stop`; every call's start time and outcome.
pub fn load(channel: &BalancedChannel, workers: usize, service: &'static str) -> LoadRun {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handles = (0..workers)
        .map(|_| {
            let channel = channel.clone();
            let outcomes = outcomes.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    let started = Instant::now();
                    let result = call(&channel, service).await;
                    let message = result
                        .as_ref()
                        .err()
                        .map(|s| s.message().to_owned())
                        .unwrap_or_default();
                    let result = result.map_err(|s| s.code());
                    outcomes.lock().unwrap().push(Outcome {
                        started,
                        result,
                        message,
                    });
                }
            })
        })
        .collect();
    (outcomes, stop, handles)
}

/// Asserts that no call in `outcomes` failed (showing the first few that did) and that more
/// than `at_least` calls were made, so a run that did nothing cannot pass.
pub fn assert_no_failed_call(outcomes: &[Outcome], at_least: usize) {
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(outcomes.len() > at_least, "{}", outcomes.len());
}

/// Once the replica `gone` has left the channel: lets the callers of `run` go on for
/// `quiet`, stops them, and asserts that no call failed and that none started from now on
/// went to `gone`. Every call's outcome.
pub async fn finish_without(run: LoadRun, gone: &str, quiet: Duration) -> Vec<Outcome> {
    let (outcomes, stop, handles) = run;
    let left = Instant::now();
    tokio::time::sleep(quiet).await;
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_no_failed_call(&outcomes, 0);
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started > left && o.result.as_deref() == Ok(gone))
        .collect();
    assert!(
        late.is_empty(),
        "expected no call started after {gone} left to go to it, saw {}: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    outcomes
}

pub async fn finish(
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
) {
    stop.send_replace(true);
    for h in handles {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
    }
}
