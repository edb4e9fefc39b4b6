//! BalancedChannel with endpoints from any source — a static list, a push handle, a
//! discovery written here against the public API only — over real mTLS tonic replicas on
//! 127.0.0.2..: no DNS anywhere in this file.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use mtls_core::{Authorize, ClientConfigBuilder};
use mtls_tonic::{
    balance::{
        BalancedChannel, BalancedEndpoint, ChannelState, Discovery, EndpointChange, EndpointState,
        LoadPolicy, ResolutionState, endpoint_channel,
    },
    client::MtlsConnector,
};
use support::{
    fixture::{assert_no_failed_call, assert_ready, call, finish, ip, load, ready_count},
    pki::{CLIENT_ID, Pki, SERVER_ID, SERVICE_NAME},
    replica::{Replica, bind_shared_port},
    wait_until,
};
use tonic::Code;

/// Replicas on 127.0.0.2..=127.0.0.(1+n) sharing one port.
struct Replicas {
    pki: Pki,
    port: u16,
    addrs: Vec<SocketAddr>,
    _replicas: Vec<Replica>,
}

impl Replicas {
    fn start(n: u8) -> Self {
        support::init_tracing();
        let pki = Pki::new();
        let config = Arc::new(pki.server_config(Pki::member_policy()));
        let ips: Vec<Ipv4Addr> = (2..2 + n).map(ip).collect();
        let (port, listeners) = bind_shared_port(&ips);
        let replicas: Vec<Replica> = listeners
            .into_iter()
            .map(|l| Replica::start(l, config.clone()))
            .collect();
        Self {
            pki,
            port,
            addrs: replicas.iter().map(|r| r.addr).collect(),
            _replicas: replicas,
        }
    }

    fn service(&self) -> String {
        format!("{SERVICE_NAME}:{}", self.port)
    }

    fn connector(&self) -> MtlsConnector {
        MtlsConnector::new(self.pki.client_config(CLIENT_ID))
    }
}

fn short(
    builder: mtls_tonic::balance::BalancedChannelBuilder,
) -> mtls_tonic::balance::BalancedChannelBuilder {
    builder
        .backoff(
            mtls_tonic::balance::Backoff::default()
                .initial(Duration::from_millis(100))
                .max(Duration::from_millis(400)),
        )
        .connect_timeout(Duration::from_secs(2))
        .ready_timeout(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_list_balances_without_dns_with_per_endpoint_mtls() {
    let fx = Replicas::start(3);
    // The third endpoint gets its own connector, expecting another SPIFFE ID than the
    // replica presents: that endpoint alone is refused, the others serve.
    let inventory = "spiffe://example.org/ns/default/sa/inventory";
    let strict = ClientConfigBuilder::new(fx.pki.identity(CLIENT_ID, &[]), fx.pki.trust())
        .authorize(Authorize::exact(inventory.parse().unwrap()))
        .build()
        .unwrap();
    let endpoints = vec![
        BalancedEndpoint::new(fx.addrs[0]),
        BalancedEndpoint::new(fx.addrs[1])
            .server_name(SERVICE_NAME)
            .unwrap(),
        BalancedEndpoint::new(fx.addrs[2]).connector(MtlsConnector::new(strict)),
    ];
    let channel = short(BalancedChannel::static_list(
        fx.service(),
        endpoints,
        fx.connector(),
    ))
    .load_policy(LoadPolicy::RoundRobin)
    .build()
    .unwrap();
    let settled = wait_until(Duration::from_secs(5), || {
        let endpoints = channel.endpoints();
        ready_count(&channel) == 2
            && endpoints
                .iter()
                .any(|e| matches!(e.state, EndpointState::Refused { .. }))
    })
    .await;
    assert!(settled, "{channel:?}");
    assert!(
        matches!(
            channel.resolution(),
            ResolutionState::Discovered { endpoints: 3, .. }
        ),
        "{:?}",
        channel.resolution()
    );
    let refused = channel
        .endpoints()
        .into_iter()
        .find(|e| e.addr == fx.addrs[2])
        .unwrap();
    assert!(
        matches!(&refused.state, EndpointState::Refused { reason } if reason.contains(inventory) && reason.contains(SERVER_ID)),
        "{refused}"
    );
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..40 {
        *seen.entry(call(&channel, "").await.unwrap()).or_default() += 1;
    }
    let expected: HashSet<String> = fx.addrs[..2].iter().map(|a| a.ip().to_string()).collect();
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        expected,
        "{seen:?}"
    );
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![20, 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_static_list_fails_fast() {
    let fx = Replicas::start(1);
    let channel = BalancedChannel::static_list(fx.service(), [], fx.connector())
        .build()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || channel.state()
            == ChannelState::TransientFailure)
        .await,
        "{channel:?}"
    );
    let started = Instant::now();
    let status = call(&channel, "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(
        status.message().contains("discovery: 0 endpoint(s)"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_changes_add_and_drain_under_load_lose_no_call() {
    let fx = Replicas::start(3);
    let (endpoints, discovery) = endpoint_channel();
    let channel = short(BalancedChannel::discovery(
        fx.service(),
        discovery,
        fx.connector(),
    ))
    .build()
    .unwrap();
    assert_eq!(channel.resolution(), ResolutionState::Pending);
    for addr in &fx.addrs[..2] {
        assert!(endpoints.insert(*addr));
    }
    assert_ready(&channel, 2, Duration::from_secs(5)).await;
    let (outcomes, stop, handles) = load(&channel, 8, "slow:10");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Added under load: it gets calls.
    let added = Instant::now();
    endpoints.insert(fx.addrs[2]);
    assert_ready(&channel, 3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Removed under load: its calls in flight finish, then it gets none.
    endpoints.remove(fx.addrs[0]);
    let gone = wait_until(Duration::from_secs(5), || {
        channel.endpoints().iter().all(|e| e.addr != fx.addrs[0])
    })
    .await;
    assert!(gone, "{channel:?}");
    let removed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_no_failed_call(&outcomes, 200);
    let to = |addr: SocketAddr, after: Instant| {
        outcomes
            .iter()
            .filter(|o| {
                o.started > after && o.result.as_deref() == Ok(addr.ip().to_string().as_str())
            })
            .count()
    };
    assert!(to(fx.addrs[2], added) > 0, "the added endpoint got no call");
    assert_eq!(
        to(fx.addrs[0], removed),
        0,
        "calls went to the removed endpoint"
    );
    // Every endpoint pushed away: calls fail fast, naming the source.
    endpoints.remove(fx.addrs[1]);
    endpoints.remove(fx.addrs[2]);
    assert!(
        wait_until(Duration::from_secs(5), || channel.state()
            == ChannelState::TransientFailure)
        .await,
        "{channel:?}"
    );
    let status = call(&channel, "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A discovery of our own, as a user would write one for a registry it polls (Consul, a
/// Kubernetes EndpointSlice watch): it reads the wanted set from shared state on a timer
/// and emits the difference.
struct Polled {
    wanted: Arc<Mutex<Vec<SocketAddr>>>,
    known: HashSet<SocketAddr>,
    pending: Vec<EndpointChange>,
    tick: tokio::time::Interval,
}

impl Polled {
    fn new(wanted: Arc<Mutex<Vec<SocketAddr>>>) -> Self {
        Self {
            wanted,
            known: HashSet::new(),
            pending: Vec::new(),
            tick: tokio::time::interval(Duration::from_millis(50)),
        }
    }
}

impl Discovery for Polled {
    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<EndpointChange>> {
        loop {
            if let Some(change) = self.pending.pop() {
                return Poll::Ready(Some(change));
            }
            std::task::ready!(self.tick.poll_tick(cx));
            let wanted: HashSet<SocketAddr> = self.wanted.lock().unwrap().iter().copied().collect();
            for gone in self.known.difference(&wanted) {
                self.pending.push(EndpointChange::Remove(*gone));
            }
            for new in wanted.difference(&self.known) {
                self.pending
                    .push(EndpointChange::Insert(BalancedEndpoint::new(*new)));
            }
            self.known = wanted;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_discovery_drives_the_channel() {
    let fx = Replicas::start(3);
    let wanted = Arc::new(Mutex::new(fx.addrs[..2].to_vec()));
    let channel = short(BalancedChannel::discovery(
        fx.service(),
        Polled::new(wanted.clone()),
        fx.connector(),
    ))
    .build()
    .unwrap();
    assert_ready(&channel, 2, Duration::from_secs(5)).await;
    let (outcomes, stop, handles) = load(&channel, 8, "slow:5");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The registry now lists only the third replica.
    *wanted.lock().unwrap() = vec![fx.addrs[2]];
    let moved = wait_until(Duration::from_secs(5), || {
        let endpoints = channel.endpoints();
        endpoints.len() == 1 && endpoints[0].addr == fx.addrs[2] && endpoints[0].state.is_ready()
    })
    .await;
    assert!(moved, "{channel:?}");
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_no_failed_call(&outcomes, 100);
    let third = fx.addrs[2].ip().to_string();
    let late: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started > switched)
        .filter(|o| o.result.as_deref() != Ok(third.as_str()))
        .collect();
    assert!(
        late.is_empty(),
        "calls after the switch went elsewhere: {late:?}"
    );
    assert!(
        matches!(
            channel.resolution(),
            ResolutionState::Discovered { endpoints: 1, .. }
        ),
        "{:?}",
        channel.resolution()
    );
}
