//! Scenarios: what runs where, and the order in which points are measured.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::child::{ChildProcess, Role};
use crate::driver::{LoadSpec, PointLabel, measure};
use crate::envoy::Envoy;
use crate::error::{Error, Result};
use crate::handshake::{self, HandshakeFiles};
use crate::result::PointResult;

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scenario {
    /// A new mTLS connection per call: mtls-core server vs an Envoy listener.
    Handshake,
    /// tonic's own TLS (server auth only), no JWT, over N replicas (`balance_list`): the floor.
    PlainTonic,
    /// tonic's own TLS with client certificates and a hand-written JWT interceptor over N
    /// replicas: the same security, hand-rolled.
    PlainTonicMtls,
    /// mtls-tonic mTLS + JWT + `BalancedChannel` over N replicas.
    Proxyless,
    /// Plaintext client → client Envoy → mTLS → server Envoys (jwt_authn) → replicas.
    Envoy,
    /// `proxyless` and `envoy` while the servers recycle every connection
    /// ([`RunOptions::recycle_every`]): failed calls and p99 during recycling.
    Recycling,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Handshake,
        Scenario::PlainTonic,
        Scenario::PlainTonicMtls,
        Scenario::Proxyless,
        Scenario::Envoy,
        Scenario::Recycling,
    ];

    /// The name used on the command line and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Handshake => "handshake",
            Scenario::PlainTonic => "plain-tonic",
            Scenario::PlainTonicMtls => "plain-tonic-mtls",
            Scenario::Proxyless => "proxyless",
            Scenario::Envoy => "envoy",
            Scenario::Recycling => "recycling",
        }
    }

    /// Whether Envoy is needed.
    pub fn needs_envoy(self) -> bool {
        matches!(
            self,
            Scenario::Handshake | Scenario::Envoy | Scenario::Recycling
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| Error::Invalid {
                what: "scenario",
                expected: "handshake, plain-tonic, plain-tonic-mtls, proxyless, envoy or recycling",
                found: s.to_owned(),
            })
    }
}

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Concurrency levels, each measured in turn.
    pub concurrency: Vec<usize>,
    /// Replica counts for `proxyless` and `envoy`.
    pub replicas: Vec<usize>,
    /// Warm-up per point.
    pub warmup: Duration,
    /// Measurement window per point.
    pub duration: Duration,
    /// Worker threads of each server process (and `--concurrency` of each Envoy).
    pub server_threads: usize,
    /// The executable that serves as the server child processes (the load generator
    /// itself, with a `serve-*` subcommand).
    pub server_exe: PathBuf,
    /// Scratch directory for certificates, Envoy configs and logs.
    pub dir: PathBuf,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// The `recycling` scenario: the servers' connection age.
    pub recycle_every: Duration,
    /// Every point measured so far, in order (what an interrupted run writes).
    pub measured: PointLog,
}

/// The points a run has measured so far, shared with whoever may have to write them when
/// the run is interrupted (`loadgen run` on SIGINT/SIGTERM).
///
/// ```
/// let log = mtls_benches::scenario::PointLog::default();
/// assert!(log.take().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct PointLog(std::sync::Arc<std::sync::Mutex<Vec<PointResult>>>);

impl PointLog {
    fn push(&self, point: &PointResult) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(point.clone());
    }

    /// Takes every point logged so far.
    pub fn take(&self) -> Vec<PointResult> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl RunOptions {
    pub(crate) fn spec(&self, concurrency: usize) -> LoadSpec {
        LoadSpec {
            concurrency,
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    pub(crate) fn progress(&self, r: &PointResult) {
        self.measured.push(r);
        if self.verbose {
            let variant = if r.variant.is_empty() {
                String::new()
            } else {
                format!("[{}]", r.variant)
            };
            eprintln!(
                "{}{variant} c={} r={}: {:.0}/s p50 {:.0}µs p99 {:.0}µs errors {} cpu/1k {:.3}s",
                r.scenario,
                r.concurrency,
                r.replicas,
                r.throughput_per_s,
                r.latency.p50_us,
                r.latency.p99_us,
                r.errors,
                r.cpu_s_per_1k_calls_total
            );
        }
    }
}

/// Starts one mtls-core handshake server process (`serve-handshake`) named `name`.
fn spawn_handshake_server(
    opts: &RunOptions,
    name: &str,
    resumption: bool,
) -> Result<(ChildProcess, std::net::SocketAddr)> {
    let mut command = Command::new(&opts.server_exe);
    command
        .arg("serve-handshake")
        .arg("--dir")
        .arg(&opts.dir)
        .arg("--threads")
        .arg(opts.server_threads.to_string());
    if resumption {
        command.arg("--resumption");
    }
    let (child, addr) =
        ChildProcess::spawn_ready(name, Role::Server, command, Duration::from_secs(30))?;
    let addr = addr.parse().map_err(|_| Error::Child {
        role: name.into(),
        reason: format!("expected `READY <address>`, got `READY {addr}`"),
    })?;
    Ok((child, addr))
}

/// The variant suffix of the handshake scenario's resumed (session ticket) points.
pub const RESUMED_SUFFIX: &str = "-resumed";

/// Runs the `handshake` scenario: the servers started once; for each concurrency, the
/// mtls-core server then Envoy, back to back, for classical full handshakes, hybrid full
/// handshakes and resumed handshakes (servers issuing session tickets: their own processes,
/// so the full rows pay nothing for tickets). Before each point, one connection of the
/// variant has its ClientHello and server flight counted.
pub async fn run_handshake(opts: &RunOptions) -> Result<Vec<PointResult>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio_rustls::TlsConnector;
    crate::envoy::require_envoy("the handshake scenario")?;
    let files = HandshakeFiles::generate(&opts.dir)?;
    let (ours, ours_addr) = spawn_handshake_server(opts, "server", false)?;
    let (ours_resumed, ours_resumed_addr) = spawn_handshake_server(opts, "server-resumed", true)?;
    let files_ref = &files;
    let envoy_at = |name: &'static str, resumption: bool| async move {
        // Port 0: the kernel picks the listener's port as Envoy binds it.
        let envoy = Envoy::start(
            name,
            Role::ServerProxy,
            &opts.dir,
            &handshake::envoy_bootstrap_with(files_ref, 0, resumption),
            opts.server_threads,
        )
        .await?;
        let addr = envoy.listener_addr("handshake").await?;
        Ok::<_, Error>((envoy, addr))
    };
    let (envoy, envoy_addr) = envoy_at("envoy-server", false).await?;
    let (envoy_resumed, envoy_resumed_addr) = envoy_at("envoy-server-resumed", true).await?;

    let connector = |config: rustls::ClientConfig| TlsConnector::from(std::sync::Arc::new(config));
    let classical = connector(handshake::client_config(&files)?);
    let hybrid = connector(handshake::client_config_with(
        &files,
        &files.client_cert,
        &files.client_key,
        mtls_core::KxGroup::X25519Mlkem768,
    )?);
    // One session cache per server: both listen on 127.0.0.1, the cache's key.
    let resuming_ours = connector(handshake::client_config_resuming(&files)?);
    let resuming_envoy = connector(handshake::client_config_resuming(&files)?);
    let variants = [
        ("mtls-core", "", ours_addr, ours.measured(), &classical),
        ("envoy", "", envoy_addr, envoy.measured(), &classical),
        (
            "mtls-core",
            crate::report::HYBRID_SUFFIX,
            ours_addr,
            ours.measured(),
            &hybrid,
        ),
        (
            "envoy",
            crate::report::HYBRID_SUFFIX,
            envoy_addr,
            envoy.measured(),
            &hybrid,
        ),
        (
            "mtls-core",
            RESUMED_SUFFIX,
            ours_resumed_addr,
            ours_resumed.measured(),
            &resuming_ours,
        ),
        (
            "envoy",
            RESUMED_SUFFIX,
            envoy_resumed_addr,
            envoy_resumed.measured(),
            &resuming_envoy,
        ),
    ];
    let mut out = Vec::new();
    for &c in &opts.concurrency {
        for (server, suffix, addr, process, connector) in &variants {
            let resuming = *suffix == RESUMED_SUFFIX;
            if resuming {
                // A first full handshake, so the counted one resumes.
                handshake::hello_bytes(*addr, connector).await?;
            }
            let hello = handshake::hello_bytes(*addr, connector).await?;
            let label = PointLabel {
                scenario: Scenario::Handshake.as_str().into(),
                variant: format!("{server}{suffix}"),
                replicas: 1,
            };
            let counts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let mut r = measure(
                opts.spec(c),
                label,
                std::slice::from_ref(process),
                handshake::call_counting(*addr, (*connector).clone(), counts.clone()),
            )
            .await;
            r.hello = Some(crate::result::HelloBytes {
                resumed_share: resuming.then(|| {
                    // Warm-up connections included: a lower bound on the window's share.
                    counts[1].load(Ordering::Relaxed) as f64
                        / counts[0].load(Ordering::Relaxed).max(1) as f64
                }),
                ..hello
            });
            opts.progress(&r);
            out.push(r);
        }
    }
    drop((envoy, envoy_resumed, ours, ours_resumed));
    Ok(out)
}

/// A free loopback port (bound, then released: Envoy binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(Error::io("local_addr"))?.port())
}
