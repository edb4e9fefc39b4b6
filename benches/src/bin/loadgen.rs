//! `loadgen` — the load generator of the mtls benchmarks.
//!
//! ```text
//! loadgen run --scenario handshake,proxyless --concurrency 1,16,128 --replicas 1,3,9 \
//!             --warmup 1s --duration 5s --out results.json
//! ```
//!
//! ```text
//! loadgen soak --replicas 3 --concurrency 128 --duration 5m --sample-every 10s --out soak.json
//! loadgen abuse --out abuse.json
//! ```
//!
//! Server processes are this same executable with an internal `serve-*` subcommand, so
//! each server has its own CPU and memory accounting.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mtls_benches::mesh::{self, ReplicaMode};
use mtls_benches::result::RunFile;
use mtls_benches::scenario::{self, RunOptions, Scenario};
use mtls_benches::{Error, handshake};

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "mtls whole-system load generator")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure scenarios and write the results as JSON.
    Run(RunArgs),
    /// Interleaved A/B comparisons: JWT validation vs raw jsonwebtoken (ES256, RS256, no
    /// cache), leaf issuance vs raw rcgen.
    Ab {
        /// Rounds (each: one batch of ours, one of the baseline).
        #[arg(long, default_value_t = 40)]
        rounds: usize,
        /// Time per batch.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "25ms")]
        batch_time: Duration,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Soak: the proxyless mesh under steady load for minutes, RSS and open fds of every
    /// process sampled over time; prints a Markdown table with the slopes.
    Soak(SoakArgs),
    /// Hostile load against one replica of ours and against an Envoy listener with the same
    /// certificates: an accept-path flood (idle, slowloris, garbage connections) and a
    /// handshake flood; honest-call latency side by side.
    Abuse(AbuseArgs),
    /// (internal) The mtls-core handshake server of the `handshake` scenario.
    #[command(hide = true)]
    ServeHandshake {
        /// Directory with the scenario's certificates.
        #[arg(long)]
        dir: PathBuf,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// (internal) One bookstore replica of the `plain-tonic`, `proxyless` or `envoy` scenario.
    #[command(hide = true)]
    ServeBookstore {
        /// The mesh directory (PKI files written by the load generator).
        #[arg(long)]
        dir: PathBuf,
        /// How to serve.
        #[arg(long, value_enum)]
        mode: ReplicaMode,
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Replica name (answered in `x-bookstore-replica`).
        #[arg(long)]
        name: String,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scenarios (comma-separated): handshake, plain-tonic, proxyless, envoy, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    scenario: Vec<String>,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    concurrency: Vec<usize>,
    /// Replica counts (proxyless and envoy).
    #[arg(long, value_delimiter = ',', default_value = "1,3,9")]
    replicas: Vec<usize>,
    /// Warm-up per point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Measurement window per point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Worker threads per server process and per Envoy.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the client runtime (default: one per CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Write the JSON here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct SoakArgs {
    /// Replicas.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Warm-up before the measured window (sampled too).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    warmup: Duration,
    /// The measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    duration: Duration,
    /// Sample interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    sample_every: Duration,
    /// Worker threads per server process.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Write the JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct AbuseArgs {
    /// Idle connections (TCP only, nothing sent).
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Slowloris connections (a TLS record header, then nothing).
    #[arg(long, default_value_t = 200)]
    slowloris: usize,
    /// Garbage connections (random bytes).
    #[arg(long, default_value_t = 200)]
    garbage: usize,
    /// Honest trials per target and phase.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Handshake-flood workers (full mTLS handshakes from 127.0.0.1, as fast as they go).
    #[arg(long, default_value_t = 8)]
    flood_workers: usize,
    /// Length of the handshake flood per target.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    flood_duration: Duration,
    /// Worker threads per server process and Envoy.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Write the JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Server children exit when the load generator that started them is gone (killed with
/// SIGKILL, its destructors never ran): they notice being re-parented.
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Cmd::ServeHandshake { .. } | Cmd::ServeBookstore { .. }
    ) {
        exit_with_parent();
    }
    let outcome = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Ab {
            rounds,
            batch_time,
            out,
        } => ab(rounds, batch_time, out),
        Cmd::Soak(args) => soak(args),
        Cmd::Abuse(args) => abuse(args),
        Cmd::ServeHandshake { dir, threads } => serve_handshake(dir, threads),
        Cmd::ServeBookstore {
            dir,
            mode,
            listen,
            name,
            threads,
        } => runtime(threads)
            .and_then(|rt| rt.block_on(mesh::serve_replica(&dir, mode, listen, &name))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "tokio runtime".into(),
            source,
        })
}

fn parse_scenarios(names: &[String]) -> Result<Vec<Scenario>, Error> {
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            out.extend(Scenario::ALL);
        } else {
            out.push(name.parse()?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn run(args: RunArgs) -> Result<(), Error> {
    let scenarios = parse_scenarios(&args.scenario)?;
    let client_threads = args.client_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let dir = tempfile::Builder::new()
        .prefix("mtls-bench-")
        .tempdir()
        .map_err(|source| Error::Io {
            context: "temporary directory".into(),
            source,
        })?;
    let opts = RunOptions {
        concurrency: args.concurrency.clone(),
        replicas: args.replicas.clone(),
        warmup: args.warmup,
        duration: args.duration,
        server_threads: args.server_threads,
        server_exe: std::env::current_exe().map_err(|source| Error::Io {
            context: "locating the loadgen executable".into(),
            source,
        })?,
        dir: dir.path().to_owned(),
        verbose: !args.quiet,
    };
    let rt = runtime(client_threads)?;
    let mut file = RunFile {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        client_threads,
        ..RunFile::default()
    };
    if scenarios.contains(&Scenario::Handshake) {
        file.points
            .extend(rt.block_on(scenario::run_handshake(&opts))?);
    }
    let mesh_scenarios: Vec<Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| *s != Scenario::Handshake)
        .collect();
    if !mesh_scenarios.is_empty() {
        file.points
            .extend(rt.block_on(mesh::run_mesh(&opts, &mesh_scenarios))?);
    }
    write_json(&file, args.out)
}

fn scratch_options(
    warmup: Duration,
    duration: Duration,
    server_threads: usize,
    dir: &std::path::Path,
) -> Result<RunOptions, Error> {
    Ok(RunOptions {
        concurrency: Vec::new(),
        replicas: Vec::new(),
        warmup,
        duration,
        server_threads,
        server_exe: std::env::current_exe().map_err(|source| Error::Io {
            context: "locating the loadgen executable".into(),
            source,
        })?,
        dir: dir.to_owned(),
        verbose: true,
    })
}

fn scratch_dir() -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix("mtls-bench-")
        .tempdir()
        .map_err(|source| Error::Io {
            context: "temporary directory".into(),
            source,
        })
}

fn soak(args: SoakArgs) -> Result<(), Error> {
    let dir = scratch_dir()?;
    let opts = scratch_options(args.warmup, args.duration, args.server_threads, dir.path())?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let result = runtime(threads)?.block_on(mesh::run_soak(
        &opts,
        args.replicas,
        args.concurrency,
        args.sample_every,
    ))?;
    eprintln!("{}", mtls_benches::soak::markdown(&result));
    write_any(&result, args.out)
}

fn abuse(args: AbuseArgs) -> Result<(), Error> {
    let dir = scratch_dir()?;
    let opts = scratch_options(
        Duration::ZERO,
        args.flood_duration,
        args.server_threads,
        dir.path(),
    )?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let plan = mtls_benches::abuse::Plan {
        idle: args.idle,
        slowloris: args.slowloris,
        garbage: args.garbage,
        trials: args.trials,
        flood_workers: args.flood_workers,
        flood_duration: args.flood_duration,
    };
    let result = runtime(threads)?.block_on(mesh::run_abuse(&opts, &plan))?;
    eprintln!("{}", mtls_benches::abuse::markdown(&result));
    write_any(&result, args.out)
}

fn write_any<T: serde::Serialize>(value: &T, out: Option<PathBuf>) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        context: "serializing results".into(),
        source: e.into(),
    })?;
    match out {
        Some(path) => std::fs::write(&path, json).map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        }),
        None => {
            println!("{json}");
            Ok(())
        }
    }
}

fn ab(rounds: usize, batch_time: Duration, out: Option<PathBuf>) -> Result<(), Error> {
    let results = mtls_benches::ab::all(rounds, batch_time)?;
    for r in &results {
        eprintln!(
            "{}: {} {:.2} µs vs {} {:.2} µs — speed ratio {:.3} (rounds {:.3}..{:.3})",
            r.name,
            r.ours,
            r.ours_ns / 1000.0,
            r.baseline,
            r.baseline_ns / 1000.0,
            r.speed_ratio,
            r.ratio_range.0,
            r.ratio_range.1
        );
    }
    let file = RunFile {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ab: results,
        ..RunFile::default()
    };
    write_json(&file, out)
}

fn write_json(file: &RunFile, out: Option<PathBuf>) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(file).map_err(|e| Error::Io {
        context: "serializing results".into(),
        source: e.into(),
    })?;
    match out {
        Some(path) => std::fs::write(&path, json).map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })?,
        None => println!("{json}"),
    }
    Ok(())
}

fn serve_handshake(dir: PathBuf, threads: usize) -> Result<(), Error> {
    let files = handshake::HandshakeFiles::in_dir(&dir);
    let config = handshake::server_config(&files)?;
    runtime(threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                context: "bind 127.0.0.1:0".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "local_addr".into(),
            source,
        })?;
        println!("READY {addr}");
        let _ = std::io::stdout().flush();
        handshake::serve(listener, config).await;
        Ok(())
    })
}
