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
    /// tonic's own TLS (server auth only), one replica, no JWT: the floor.
    PlainTonic,
    /// mtls-tonic mTLS + JWT + `BalancedChannel` over N replicas.
    Proxyless,
    /// Plaintext client → client Envoy → mTLS → server Envoys (jwt_authn) → replicas.
    Envoy,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 4] = [
        Scenario::Handshake,
        Scenario::PlainTonic,
        Scenario::Proxyless,
        Scenario::Envoy,
    ];

    /// The name used on the command line and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Handshake => "handshake",
            Scenario::PlainTonic => "plain-tonic",
            Scenario::Proxyless => "proxyless",
            Scenario::Envoy => "envoy",
        }
    }

    /// Whether Envoy is needed.
    pub fn needs_envoy(self) -> bool {
        matches!(self, Scenario::Handshake | Scenario::Envoy)
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
                expected: "handshake, plain-tonic, proxyless or envoy",
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

/// Runs the `handshake` scenario: both servers started once; for each concurrency, the
/// mtls-core server then Envoy, back to back.
pub async fn run_handshake(opts: &RunOptions) -> Result<Vec<PointResult>> {
    crate::envoy::require_envoy("the handshake scenario")?;
    let files = HandshakeFiles::generate(&opts.dir)?;
    let client = handshake::client_config(&files)?;

    let mut command = Command::new(&opts.server_exe);
    command
        .arg("serve-handshake")
        .arg("--dir")
        .arg(&opts.dir)
        .arg("--threads")
        .arg(opts.server_threads.to_string());
    let (ours, addr) =
        ChildProcess::spawn_ready("server", Role::Server, command, Duration::from_secs(30))?;
    let ours_addr: std::net::SocketAddr = addr.parse().map_err(|_| Error::Child {
        role: "server".into(),
        reason: format!("expected `READY <address>`, got `READY {addr}`"),
    })?;

    let port = free_port()?;
    let envoy = Envoy::start(
        "envoy-server",
        Role::ServerProxy,
        &opts.dir,
        &handshake::envoy_bootstrap(&files, port),
        opts.server_threads,
    )
    .await?;
    let envoy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let hybrid = handshake::client_config_with(
        &files,
        &files.client_cert,
        &files.client_key,
        mtls_core::KxGroup::X25519Mlkem768,
    )?;
    let mut out = Vec::new();
    for &c in &opts.concurrency {
        // Classical (X25519) then hybrid post-quantum (X25519MLKEM768), each back to back
        // on both servers (their default groups include both).
        for (suffix, client) in [("", &client), (crate::report::HYBRID_SUFFIX, &hybrid)] {
            for (variant, addr, process) in [
                ("mtls-core", ours_addr, ours.measured()),
                ("envoy", envoy_addr, envoy.measured()),
            ] {
                let label = PointLabel {
                    scenario: Scenario::Handshake.as_str().into(),
                    variant: format!("{variant}{suffix}"),
                    replicas: 1,
                };
                let r = measure(
                    opts.spec(c),
                    label,
                    &[process],
                    handshake::call(addr, client.clone()),
                )
                .await;
                opts.progress(&r);
                out.push(r);
            }
        }
    }
    drop(envoy);
    drop(ours);
    Ok(out)
}

/// A free loopback port (bound, then released: Envoy binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(Error::io("local_addr"))?.port())
}
