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

/// One unary call; the replica that served it.
pub async fn call(channel: &BalancedChannel, service: &str) -> Result<String, tonic::Status> {
    let mut client = HealthClient::new(channel.clone());
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response
        .metadata()
        .get("x-replica")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned())
}

pub fn ready_count(channel: &BalancedChannel) -> usize {
    channel
        .endpoints()
        .iter()
        .filter(|e| e.state.is_ready())
        .count()
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
