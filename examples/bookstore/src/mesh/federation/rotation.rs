//! The CA rotation row: `bookstore.local` rotates its CA while calls run on both paths;
//! the new root must reach `client.local` within one refresh hint, the bookstore must then
//! serve SVIDs of the new CA, and no call may fail.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mtls_tonic::balance::BalancedChannel;

use super::super::*;
use super::{
    BookstoreCaller, FETCH_SLACK, FederatedDomains,
    run::{bundle_roots, ca_serials, serials_of, trusts_all},
};
use crate::{
    MeshPolicy, Report, Result, Scenario,
    rotation::{colon_hex, served_serial},
    scenario::{BoxChannel, CALLS_PER_ROUND, boxed},
};

/// A CA rotation in `bookstore.local` under calls on both paths, and where the new root
/// was seen in `client.local` (times since the rotation started).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CaRotation {
    /// The refresh hint both bundle endpoints serve.
    pub refresh_hint: Duration,
    /// Why the rotation could not be made, if it could not.
    pub error: Option<String>,
    /// Serials of the roots the rotation added to bookstore.local's bundle.
    pub new_roots: Vec<String>,
    /// client.local's `spiffe_sequence` of bookstore.local's bundle before and after.
    pub sequence: (Option<u64>, Option<u64>),
    /// The new root in client.local's agent (its federated bundle of bookstore.local).
    pub client_agent: Option<Duration>,
    /// The new root in the client's Workload API source (its trust).
    pub client_source: Option<Duration>,
    /// The new root in the client sidecar's validation context (SDS, admin `/certs`).
    pub client_sidecar: Option<Duration>,
    /// bookstore.local's agent issues the bookstore's SVID from the new CA.
    pub activated: Option<Duration>,
    /// Each replica serves the new SVID in a handshake the client verifies.
    pub replicas_new: Vec<(String, bool)>,
    /// Each server sidecar presents the new SVID (admin `/certs`).
    pub sidecars_new: Vec<(String, bool)>,
    /// A new proxyless connection after the switch: a call answered (or why not).
    pub fresh_call: Option<std::result::Result<String, String>>,
    /// Proxyless calls during the rotation: made, failed.
    pub proxyless_calls: (usize, usize),
    /// Envoy-path calls during the rotation: made, failed (`None` without Envoy).
    pub envoy_calls: Option<(usize, usize)>,
    /// A few failed calls, if any.
    pub failures: Vec<String>,
}

impl CaRotation {
    /// Whether the new root reached `seen` within one refresh hint (+ [`FETCH_SLACK`]),
    /// and before the bookstore issued from the new CA.
    fn in_time(&self, seen: Option<Duration>) -> bool {
        seen.is_some_and(|t| {
            t <= self.refresh_hint + FETCH_SLACK && self.activated.is_some_and(|a| t <= a)
        })
    }

    /// The check for `path`.
    pub fn check(&self, path: PathKind) -> Check {
        let secs = |t: Option<Duration>| {
            t.map_or("never".to_owned(), |t| format!("+{:.1}s", t.as_secs_f64()))
        };
        let expected = format!(
            "new root at client.local within one refresh hint ({:?}) and before the switch, new CA's SVIDs served, no failed call",
            self.refresh_hint
        );
        let all_new = |v: &[(String, bool)]| !v.is_empty() && v.iter().all(|(_, new)| *new);
        let (reached, served, calls, extra) = match path {
            PathKind::Proxyless => (
                self.in_time(self.client_agent) && self.in_time(self.client_source),
                all_new(&self.replicas_new),
                Some(self.proxyless_calls),
                matches!(self.fresh_call, Some(Ok(_))),
            ),
            PathKind::Envoy => (
                self.in_time(self.client_agent) && self.in_time(self.client_sidecar),
                all_new(&self.sidecars_new),
                self.envoy_calls,
                true,
            ),
        };
        let calls_ok = calls.is_some_and(|(made, failed)| made > 0 && failed == 0);
        let observed = match &self.error {
            Some(e) => e.clone(),
            None => {
                let seen = match path {
                    PathKind::Proxyless => format!(
                        "client.local agent {}, client source {}",
                        secs(self.client_agent),
                        secs(self.client_source)
                    ),
                    PathKind::Envoy => format!(
                        "client.local agent {}, client sidecar {}",
                        secs(self.client_agent),
                        secs(self.client_sidecar)
                    ),
                };
                let (who, list) = match path {
                    PathKind::Proxyless => ("replicas", &self.replicas_new),
                    PathKind::Envoy => ("server sidecars", &self.sidecars_new),
                };
                let new = list.iter().filter(|(_, n)| *n).count();
                let (made, failed) = calls.unwrap_or_default();
                let mut text = format!(
                    "{seen}; sequence {} -> {}; {new}/{} {who} on the new CA ({}); {}/{made} calls ok",
                    self.sequence.0.map_or("-".to_owned(), |s| s.to_string()),
                    self.sequence.1.map_or("-".to_owned(), |s| s.to_string()),
                    list.len(),
                    secs(self.activated),
                    made - failed,
                );
                if path == PathKind::Proxyless {
                    match &self.fresh_call {
                        Some(Ok(replica)) => {
                            text.push_str(&format!("; new connection answered by {replica}"))
                        }
                        Some(Err(e)) => text.push_str(&format!("; new connection FAILED: {e}")),
                        None => text.push_str("; no new connection made"),
                    }
                }
                if let Some(first) = self.failures.first() {
                    text.push_str(&format!("; e.g. {first}"));
                }
                text
            }
        };
        Check {
            path,
            name: checks::CA_ROTATION,
            expected,
            observed,
            passed: self.error.is_none() && reached && served && calls_ok && extra,
            status: None,
        }
    }

    /// One paragraph for the mesh's output.
    pub fn describe(&self) -> String {
        let at = |t: Option<Duration>| {
            t.map_or("not seen".to_owned(), |t| {
                format!("after {:.2}s", t.as_secs_f64())
            })
        };
        if let Some(e) = &self.error {
            return format!("    CA rotation: {e}");
        }
        format!(
            "    new root(s) {}: client.local's agent {}, the client's source {}, the client sidecar {}; \
             bookstore.local issues from the new CA {}\n    calls during the rotation: proxyless {}/{} failed, envoy {}",
            self.new_roots.join(", "),
            at(self.client_agent),
            at(self.client_source),
            at(self.client_sidecar),
            at(self.activated),
            self.proxyless_calls.1,
            self.proxyless_calls.0,
            self.envoy_calls
                .map_or("-".to_owned(), |(made, failed)| format!(
                    "{failed}/{made} failed"
                )),
        )
    }
}

/// Waits (up to `timeout`) until every counter of `rounds` has reached `since` + `more`.
async fn wait_rounds(rounds: &[AtomicUsize], since: &[usize], more: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline
        && rounds
            .iter()
            .zip(since)
            .any(|(n, since)| n.load(Ordering::Relaxed) < since + more)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rounds_now(rounds: &[AtomicUsize]) -> Vec<usize> {
    rounds.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

/// Rotates bookstore.local's CA while `proxyless` and (with Envoy) `envoy` carry calls,
/// and follows the new root into client.local and the new SVIDs into the bookstore.
#[allow(clippy::too_many_arguments)]
pub(super) async fn rotate_under_calls(
    options: &MeshOptions,
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    proxyless: BoxChannel,
    envoy: Option<(&Sidecars, BoxChannel)>,
    replicas: &[SocketAddr],
    token: &str,
    fresh_channel: impl Fn() -> Result<BalancedChannel>,
) -> Result<CaRotation> {
    let mut r = CaRotation {
        refresh_hint: domains.refresh_hint(),
        ..CaRotation::default()
    };
    // The callers run in this task (the client future is not `Send`-general), beside
    // the rotation, until it says stop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let paths = if envoy.is_some() { 2 } else { 1 };
    let rounds: Vec<AtomicUsize> = (0..paths).map(|_| AtomicUsize::new(0)).collect();
    let caller = |channel: BoxChannel, index: usize| {
        let mut scenario = Scenario::new(channel, Some(token.to_owned()));
        let (stopped, rounds) = (stopped.clone(), &rounds);
        async move {
            let mut report = Report::default();
            while !*stopped.borrow() {
                report.extend(scenario.run(CALLS_PER_ROUND).await);
                rounds[index].fetch_add(1, Ordering::Relaxed);
            }
            report
        }
    };
    let proxyless_calls = caller(proxyless, 0);
    let envoy_calls = async {
        match envoy.as_ref() {
            Some((_, channel)) => Some(caller(channel.clone(), 1).await),
            None => None,
        }
    };
    let rotation = async {
        follow(
            options,
            domains,
            policy,
            envoy.as_ref().map(|(s, _)| *s),
            replicas,
            token,
            &fresh_channel,
            &rounds,
            &mut r,
        )
        .await;
        let _ = stop.send(true);
    };
    let (proxyless_report, envoy_report, ()) = tokio::join!(proxyless_calls, envoy_calls, rotation);
    r.proxyless_calls = made_and_failed(&proxyless_report);
    r.envoy_calls = envoy_report.as_ref().map(made_and_failed);
    r.failures = proxyless_report
        .failures()
        .map(|c| format!("proxyless {c}"))
        .chain(
            envoy_report
                .iter()
                .flat_map(|r| r.failures().map(|c| format!("envoy {c}"))),
        )
        .take(3)
        .collect();
    Ok(r)
}

/// The rotation itself, while the callers run: rotate, follow the new root into
/// client.local and the new SVIDs into the bookstore, then a round more and a new
/// connection.
#[allow(clippy::too_many_arguments)]
async fn follow(
    options: &MeshOptions,
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    envoy: Option<&Sidecars>,
    replicas: &[SocketAddr],
    token: &str,
    fresh_channel: &impl Fn() -> Result<BalancedChannel>,
    rounds: &[AtomicUsize],
    r: &mut CaRotation,
) {
    let hint = domains.refresh_hint();
    let bookstore = domains.bookstore_agent();
    let client_agent = domains.client_agent();
    let td = &policy.trust_domain;
    let client_source = domains.caller_source(BookstoreCaller::Client);
    let before_roots = bundle_roots(&bookstore.bundle_pem());
    let before_serial = bookstore.serial_of(&policy.server_id);
    r.sequence.0 = client_agent
        .federated_bundles()
        .get(td)
        .and_then(|b| b.sequence());
    // Calls are flowing on every path before the rotation starts.
    wait_rounds(rounds, &vec![0; rounds.len()], 1, Duration::from_secs(20)).await;
    let started = Instant::now();
    if let Err(e) = rotate_ca(bookstore) {
        r.error = Some(e);
    }
    let new_roots: Vec<_> = bundle_roots(&bookstore.bundle_pem())
        .into_iter()
        .filter(|root| !before_roots.contains(root))
        .collect();
    r.new_roots = serials_of(&new_roots);
    if r.error.is_none() && new_roots.is_empty() {
        r.error = Some(format!(
            "the rotation added no root to {td}'s bundle (still {} root(s))",
            before_roots.len()
        ));
    }
    let new_serials = r.new_roots.clone();
    say!(
        options,
        "    {td} rotated its CA: new root(s) {} published; following it into client.local",
        new_serials.join(", ")
    );

    let deadline = started + hint * 3 + Duration::from_secs(15);
    let mut last_slow_poll = None::<Instant>;
    while r.error.is_none() && Instant::now() < deadline {
        let now = started.elapsed();
        if r.client_agent.is_none() {
            let bundle = client_agent.federated_bundles();
            let have = bundle.get(td).map(|b| b.x509_authorities().to_vec());
            if have.is_some_and(|have| new_roots.iter().all(|n| have.contains(n))) {
                r.client_agent = Some(now);
            }
        }
        if r.client_source.is_none() && trusts_all(client_source, td, &new_roots) {
            r.client_source = Some(now);
        }
        if r.activated.is_none() && bookstore.serial_of(&policy.server_id) != before_serial {
            r.activated = Some(now);
        }
        // Handshakes and admin calls: every 100 ms.
        if last_slow_poll.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            last_slow_poll = Some(Instant::now());
            if let Some(sidecars) = envoy
                && r.client_sidecar.is_none()
                && let Ok(have) = ca_serials(sidecars.client()).await
                && new_serials
                    .iter()
                    .all(|n| have.iter().any(|h| same_serial(h, n)))
            {
                r.client_sidecar = Some(started.elapsed());
            }
            if r.activated.is_some() {
                let current = bookstore.serial_of(&policy.server_id).unwrap_or_default();
                r.replicas_new = served_now(domains, policy, replicas, &current).await;
                if let Some(sidecars) = envoy {
                    r.sidecars_new = presented_now(sidecars, &current).await;
                }
            }
        }
        let all_new = |v: &[(String, bool)]| !v.is_empty() && v.iter().all(|(_, n)| *n);
        let done = r.client_agent.is_some()
            && r.client_source.is_some()
            && all_new(&r.replicas_new)
            && (envoy.is_none() || (r.client_sidecar.is_some() && all_new(&r.sidecars_new)));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.sequence.1 = client_agent
        .federated_bundles()
        .get(td)
        .and_then(|b| b.sequence());

    // Calls keep going on the new CA's SVIDs for a round on every path, and a new
    // connection verifies the bookstore's new SVID with the federated bundle.
    let since = rounds_now(rounds);
    wait_rounds(rounds, &since, 1, Duration::from_secs(20)).await;
    r.fresh_call = Some(match fresh_channel() {
        Ok(channel) => {
            match wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(5)).await {
                Ok(()) => Scenario::new(boxed(channel), Some(token.to_owned()))
                    .probe()
                    .await
                    .map(|replica| replica.unwrap_or_else(|| "?".to_owned()))
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    });
}

/// Calls made and calls failed.
fn made_and_failed(report: &Report) -> (usize, usize) {
    (report.total(), report.total() - report.succeeded())
}

/// Whether each replica serves the SVID serial `current`, in a new handshake made with
/// the client's configuration (its trust: client.local + the federated bookstore.local).
async fn served_now(
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    replicas: &[SocketAddr],
    current: &str,
) -> Vec<(String, bool)> {
    let config = match domains.caller_tls(BookstoreCaller::Client) {
        Ok(config) => Arc::new(config),
        Err(e) => return vec![(e.to_string(), false)],
    };
    let mut out = Vec::new();
    for addr in replicas {
        let served = served_serial(config.clone(), *addr, &policy.service_name).await;
        let new = served.as_deref().is_ok_and(|s| same_serial(s, current));
        out.push((addr.ip().to_string(), new));
    }
    out
}

/// Whether each server sidecar presents the SVID serial `current` (admin `/certs`).
async fn presented_now(sidecars: &Sidecars, current: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for envoy in sidecars.servers() {
        let new = envoy.cert_serials().await.is_ok_and(|serials| {
            serials
                .first()
                .is_some_and(|hex| same_serial(&colon_hex(hex), current))
        });
        out.push((envoy.name().to_owned(), new));
    }
    out
}

/// Starts the CA rotation in `agent`'s trust domain: the new root joins the bundle now,
/// SVIDs chain to it after the agent's activation delay.
fn rotate_ca(agent: &mtls_agent::Agent) -> std::result::Result<(), String> {
    agent
        .rotate_ca()
        .map(|_| ())
        .map_err(|e| format!("{}: Agent::rotate_ca failed: {e}", agent.trust_domain()))
}
