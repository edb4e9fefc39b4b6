//! DNS-driven discovery: resolve, diff, insert/remove endpoints, schedule the next resolve.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
};
use tokio::sync::mpsc::UnboundedSender;
use tower::discover::Change;
use tracing::{debug, info, warn};

use super::{
    Backoff, BalancedEndpoint, Discovery, EndpointChange, ResolutionState,
    backoff::jittered,
    connection,
    ctx::Ctx,
    endpoint::{Shared, Subchannel},
};
use crate::{Error, Result};

/// Where and how to ask DNS.
#[derive(Clone, Debug)]
pub(crate) struct DnsSettings {
    pub(crate) nameserver: Option<SocketAddr>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: usize,
    pub(crate) refresh_floor: Duration,
    pub(crate) refresh_ceiling: Duration,
    pub(crate) refresh_jitter: f64,
    pub(crate) reresolve_min_interval: Duration,
    pub(crate) failure_backoff: Backoff,
    /// How long READY endpoints outlive an empty answer (ZERO: removed at once).
    pub(crate) empty_answer_grace: Duration,
}

pub(crate) fn build_resolver(settings: &DnsSettings) -> Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match settings.nameserver {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                provider,
            )
        }
        None => TokioResolver::builder(provider).map_err(|e| Error::Resolver(e.to_string()))?,
    };
    let options = builder.options_mut();
    // We schedule re-resolution from the TTL ourselves; a cache would only hide changes.
    options.cache_size = 0;
    options.timeout = settings.timeout;
    options.attempts = settings.attempts.max(1);
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| Error::Resolver(e.to_string()))
}

enum Lookup {
    Found(Vec<IpAddr>, Duration),
    NoRecords,
    Failed(String),
}

impl Lookup {
    /// `Some(true)`: addresses, `Some(false)`: no records, `None`: the look-up failed.
    fn found(&self) -> Option<bool> {
        match self {
            Lookup::Found(..) => Some(true),
            Lookup::NoRecords => Some(false),
            Lookup::Failed(_) => None,
        }
    }
}

async fn lookup(resolver: &TokioResolver, host: &str) -> Lookup {
    // A trailing dot: the target is a full name, no search-list expansion.
    let fqdn = format!("{host}.");
    let name = if host.contains('.') {
        fqdn.as_str()
    } else {
        host
    };
    match resolver.lookup_ip(name).await {
        Ok(found) => {
            let ttl = found
                .valid_until()
                .saturating_duration_since(Instant::now());
            let mut ips: Vec<IpAddr> = found.iter().collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                Lookup::NoRecords
            } else {
                Lookup::Found(ips, ttl)
            }
        }
        Err(error) if error.is_no_records_found() || error.is_nx_domain() => Lookup::NoRecords,
        Err(error) => Lookup::Failed(error.to_string()),
    }
}

type Changes = UnboundedSender<Change<SocketAddr, Subchannel>>;

/// Brings the endpoint set in line with `addrs`: new ones get a task and go to the balancer,
/// vanished ones are drained.
fn apply(
    ctx: &Arc<Ctx>,
    current: &mut HashMap<SocketAddr, Arc<Shared>>,
    addrs: &[SocketAddr],
    tx: &Changes,
) {
    let gone: Vec<SocketAddr> = current
        .keys()
        .filter(|a| !addrs.contains(a))
        .copied()
        .collect();
    for addr in gone {
        if let Some(shared) = current.remove(&addr) {
            info!(target = %ctx.target, endpoint = %addr, "endpoint left DNS: draining");
            shared.remove();
            let _ = tx.send(Change::Remove(addr));
        }
    }
    for &addr in addrs {
        if current.contains_key(&addr) {
            continue;
        }
        info!(target = %ctx.target, endpoint = %addr, "endpoint added");
        let shared = Shared::new(addr, ctx);
        ctx.register(shared.clone());
        tokio::spawn(connection::run(ctx.clone(), shared.clone()));
        let _ = tx.send(Change::Insert(addr, Subchannel::new(shared.clone())));
        current.insert(addr, shared);
    }
}

/// Endpoints kept through an empty DNS answer, and when their grace ends.
type Kept = HashMap<SocketAddr, tokio::time::Instant>;

/// Drops kept endpoints whose grace ended, that are no longer ready, or that removed
/// themselves (their connection ended).
fn prune(
    ctx: &Arc<Ctx>,
    current: &mut HashMap<SocketAddr, Arc<Shared>>,
    kept: &mut Kept,
    tx: &Changes,
) {
    let now = tokio::time::Instant::now();
    kept.retain(|addr, until| {
        let Some(shared) = current.get(addr) else {
            return false;
        };
        let expired = *until <= now;
        if !(expired || shared.is_removed() || !shared.is_ready()) {
            return true;
        }
        if expired {
            info!(target = %ctx.target, endpoint = %addr, "endpoint not in DNS: grace over, draining");
        } else if !shared.is_removed() {
            info!(target = %ctx.target, endpoint = %addr, "endpoint not in DNS is no longer ready: removing");
        }
        shared.remove();
        current.remove(addr);
        let _ = tx.send(Change::Remove(*addr));
        false
    });
}

/// An empty answer after a good one: ready endpoints stay (marked "not in DNS") for the
/// grace, the others go at once.
fn keep_ready(
    ctx: &Arc<Ctx>,
    current: &mut HashMap<SocketAddr, Arc<Shared>>,
    kept: &mut Kept,
    grace: Duration,
    tx: &Changes,
) {
    let until = tokio::time::Instant::now() + grace;
    let addrs: Vec<SocketAddr> = current.keys().copied().collect();
    for addr in addrs {
        if kept.contains_key(&addr) {
            continue;
        }
        let ready = current.get(&addr).is_some_and(|s| s.is_ready());
        if ready {
            if let Some(shared) = current.get(&addr) {
                warn!(target = %ctx.target, endpoint = %addr, ?grace, "DNS has no records: keeping the ready endpoint");
                shared.set_not_in_dns(Some(SystemTime::now()));
            }
            kept.insert(addr, until);
        } else if let Some(shared) = current.remove(&addr) {
            info!(target = %ctx.target, endpoint = %addr, "DNS has no records: removing the endpoint that is not ready");
            shared.remove();
            let _ = tx.send(Change::Remove(addr));
        }
    }
}

/// The discovery task for a static list or a user's [`Discovery`]: applies its changes
/// (new endpoints get a task, removed ones drain, an insert at a known address with another
/// dial replaces it). Ends when the balancer is gone; a source that ends keeps its set.
pub(crate) async fn run_source(ctx: Arc<Ctx>, mut source: Box<dyn Discovery>, tx: Changes) {
    let mut current: HashMap<SocketAddr, (Arc<Shared>, BalancedEndpoint)> = HashMap::new();
    let mut ended = false;
    loop {
        let change = tokio::select! {
            change = std::future::poll_fn(|cx| source.poll_change(cx)), if !ended => change,
            () = tx.closed() => break,
        };
        match change {
            Some(EndpointChange::Insert(endpoint)) => {
                let addr = endpoint.addr;
                if let Some((_, known)) = current.get(&addr) {
                    if known.same_as(&endpoint) {
                        continue;
                    }
                    info!(target = %ctx.target, endpoint = %addr, "endpoint replaced: draining the old one");
                    drain_out(&mut current, addr, &tx);
                }
                info!(target = %ctx.target, endpoint = %addr, "endpoint added");
                // An endpoint's own server name needs an mTLS connector: its own, else the
                // channel's (a channel over a user's connector has no server name to set).
                let own = endpoint.connector.is_some() || endpoint.server_name.is_some();
                let dial = own
                    .then(|| {
                        endpoint
                            .connector
                            .clone()
                            .or_else(|| ctx.connector.mtls().cloned())
                    })
                    .flatten()
                    .map(|connector| {
                        let connector = connector.connect_timeout(ctx.settings.connect_timeout);
                        let sni = endpoint
                            .server_name
                            .clone()
                            .or_else(|| connector.configured_server_name().cloned())
                            .unwrap_or_else(|| ctx.sni.clone());
                        (connector.for_server_name(sni.clone()), sni)
                    });
                let shared = Shared::with_dial(addr, &ctx, dial);
                ctx.register(shared.clone());
                tokio::spawn(connection::run(ctx.clone(), shared.clone()));
                let _ = tx.send(Change::Insert(addr, Subchannel::new(shared.clone())));
                current.insert(addr, (shared, endpoint));
            }
            Some(EndpointChange::Remove(addr)) => {
                if current.contains_key(&addr) {
                    info!(target = %ctx.target, endpoint = %addr, "endpoint removed by discovery: draining");
                    drain_out(&mut current, addr, &tx);
                }
            }
            None => {
                debug!(target = %ctx.target, endpoints = current.len(), "discovery source ended: keeping its endpoints");
                ended = true;
            }
        }
        ctx.set_resolution(ResolutionState::Discovered {
            endpoints: current.len(),
            at: SystemTime::now(),
        });
    }
    let addrs: Vec<SocketAddr> = current.keys().copied().collect();
    for addr in addrs {
        drain_out(&mut current, addr, &tx);
    }
}

/// Takes `addr` out of `current` and the balancer; its task drains it.
fn drain_out(
    current: &mut HashMap<SocketAddr, (Arc<Shared>, BalancedEndpoint)>,
    addr: SocketAddr,
    tx: &Changes,
) {
    if let Some((shared, _)) = current.remove(&addr) {
        shared.remove();
        let _ = tx.send(Change::Remove(addr));
    }
}

/// The discovery task. Ends when the balancer is gone (the change receiver dropped).
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    resolver: Option<TokioResolver>,
    settings: DnsSettings,
    tx: Changes,
) {
    let mut current = HashMap::new();
    let port = ctx.target.port;
    let resolver = match (ctx.target.ip, resolver) {
        (None, Some(resolver)) => resolver,
        (ip, _) => {
            // An IP literal: one endpoint for good.
            let addrs: Vec<SocketAddr> =
                ip.map(|ip| SocketAddr::new(ip, port)).into_iter().collect();
            apply(&ctx, &mut current, &addrs, &tx);
            ctx.set_resolution(ResolutionState::Static);
            tx.closed().await;
            apply(&ctx, &mut current, &[], &tx);
            return;
        }
    };
    let mut failures = settings.failure_backoff.start();
    let mut kept = Kept::new();
    loop {
        let resolved_at = tokio::time::Instant::now();
        let answer = lookup(&resolver, &ctx.target.dns_name).await;
        crate::metrics::dns_resolution(&ctx.target, answer.found());
        prune(&ctx, &mut current, &mut kept, &tx);
        let wait = match answer {
            Lookup::Found(ips, ttl) => {
                failures.reset();
                let addrs: Vec<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                debug!(target = %ctx.target, ?addrs, ?ttl, "resolved");
                for addr in &addrs {
                    if kept.remove(addr).is_some()
                        && let Some(shared) = current.get(addr)
                    {
                        info!(target = %ctx.target, endpoint = %addr, "endpoint is in DNS again");
                        shared.set_not_in_dns(None);
                    }
                }
                kept.retain(|addr, _| addrs.contains(addr));
                apply(&ctx, &mut current, &addrs, &tx);
                ctx.set_resolution(ResolutionState::Resolved {
                    addresses: addrs.len(),
                    ttl,
                    at: SystemTime::now(),
                });
                jittered(
                    ttl.clamp(settings.refresh_floor, settings.refresh_ceiling),
                    settings.refresh_jitter,
                )
            }
            Lookup::NoRecords => {
                failures.reset();
                if settings.empty_answer_grace.is_zero() {
                    if !current.is_empty() {
                        warn!(target = %ctx.target, "DNS says the name has no records: removing all endpoints");
                    }
                    apply(&ctx, &mut current, &[], &tx);
                } else {
                    keep_ready(
                        &ctx,
                        &mut current,
                        &mut kept,
                        settings.empty_answer_grace,
                        &tx,
                    );
                }
                ctx.set_resolution(ResolutionState::NoRecords {
                    at: SystemTime::now(),
                });
                jittered(settings.refresh_floor, settings.refresh_jitter)
            }
            Lookup::Failed(error) => {
                warn!(target = %ctx.target, %error, kept = current.len(), "DNS unreachable: keeping the last good endpoints");
                ctx.set_resolution(ResolutionState::Unreachable {
                    error,
                    at: SystemTime::now(),
                });
                failures.next_delay().min(settings.refresh_ceiling)
            }
        };
        let mut deadline = resolved_at + wait;
        let earliest = resolved_at + settings.reresolve_min_interval;
        loop {
            let grace_over = kept.values().min().copied();
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = async {
                    match grace_over {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => prune(&ctx, &mut current, &mut kept, &tx),
                () = ctx.reresolve.notified() => {
                    // A connection failed: resolve now, but not more often than the minimum interval.
                    deadline = deadline.min(earliest);
                    prune(&ctx, &mut current, &mut kept, &tx);
                }
                () = tx.closed() => {
                    apply(&ctx, &mut current, &[], &tx);
                    return;
                }
            }
        }
    }
}
