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
//!
//! `MTLS_BENCH_METRICS=1` (inherited by the server processes): every process installs the
//! Prometheus recorder, so the libraries' metrics (handshakes, JWT verdicts, authorization,
//! connections) are recorded on the measured path — the "metrics on" row against a run
//! without it (issue 15: on >= 0.97x off at concurrency 16; a quiet-machine measurement).
//! Its call points carry the variant `metrics`, so bench-report puts the two runs' points
//! side by side in one row.
//!
//! SIGINT or SIGTERM stops every server and Envoy it started (by PID), removes its
//! temporary directory, says so, and — for `run` — writes the points measured so far
//! (exit 130 / 143).

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
#[command(name = "loadgen", version, about = "mtls whole-system load generator")]
struct Cli {
    /// The Envoy binary (default: $MTLS_ENVOY, `envoy` on PATH, or the project's
    /// .venv/bin/envoy).
    #[arg(long, global = true, value_name = "PATH")]
    envoy: Option<PathBuf>,
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
    /// The crypto bound of a handshake on this machine: `openssl speed` for P-256 ECDSA
    /// sign/verify, P-256 ECDH and X25519 (CPU time), written as a run file for bench-report.
    CryptoBound {
        /// Seconds per algorithm.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The per-layer cost at concurrency 1: one replica, the stack built up one layer at a
    /// time (tonic TLS, mTLS transport, balancer, token header, JWT layer, authz layer),
    /// interleaved rounds, medians.
    Layers {
        /// Rounds (each measures every configuration once).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Window per configuration per round.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        window: Duration,
        /// Worker threads per server process.
        #[arg(long, default_value_t = 2)]
        server_threads: usize,
        /// Write the JSON here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// (internal) The mtls-core handshake server of the `handshake` scenario.
    #[command(hide = true)]
    ServeHandshake {
        /// Directory with the scenario's certificates.
        #[arg(long)]
        dir: PathBuf,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Issue session tickets (`Resumption::Tickets`).
        #[arg(long)]
        resumption: bool,
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
        /// Recycle every connection at this age (mode `mtls`).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_connection_age: Option<Duration>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scenarios (comma-separated): handshake, plain-tonic, plain-tonic-mtls, proxyless,
    /// envoy, recycling, or all.
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
    /// The `recycling` scenario: servers recycle every connection at this age.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    recycle_every: Duration,
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
    #[command(flatten)]
    written: Written,
}

/// Where a soak's or an abuse run's results go, and the note rendered with them.
#[derive(Args, Debug)]
struct Written {
    /// A note on the conditions (what else ran), rendered beside the table.
    #[arg(long, env = "BENCH_NOTE", default_value = "")]
    note: String,
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
    #[command(flatten)]
    written: Written,
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

/// How a run ended.
enum Ended<T> {
    /// It finished.
    Done(T),
    /// A signal stopped it (its name).
    Interrupted(&'static str),
}

/// Runs `work` on `rt` until it ends or SIGINT/SIGTERM arrives. The handlers are in place
/// before `work` starts any child; on a signal `work` is dropped at once, which kills (by
/// PID) and reaps every child process it started.
fn until_signal<T>(
    rt: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<Ended<T>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    rt.block_on(async {
        let handler = |kind: SignalKind| {
            signal(kind).map_err(|source| Error::Io {
                context: "installing the SIGINT/SIGTERM handlers".into(),
                source,
            })
        };
        let mut int = handler(SignalKind::interrupt())?;
        let mut term = handler(SignalKind::terminate())?;
        tokio::select! {
            result = work => result.map(Ended::Done),
            _ = int.recv() => Ok(Ended::Interrupted("SIGINT")),
            _ = term.recv() => Ok(Ended::Interrupted("SIGTERM")),
        }
    })
}

/// Exit code after a signal: 128 + its number.
fn signal_exit(name: &str) -> ExitCode {
    ExitCode::from(if name == "SIGTERM" { 143 } else { 130 })
}

/// The end of a run that writes nothing when interrupted: the last words, and that `what`
/// (e.g. "the soak") left no results.
fn cut_short(
    signal: &'static str,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    what: &str,
) -> Result<Option<&'static str>, Error> {
    say_interrupted(signal, dir, rt);
    eprintln!("loadgen: {what} was cut short: no results written");
    Ok(Some(signal))
}

/// The machine's cores (2 when unknown): the default worker count.
fn available_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// The last words of an interrupted run: what was stopped and removed.
fn say_interrupted(name: &str, dir: tempfile::TempDir, rt: tokio::runtime::Runtime) {
    // Remaining client tasks end with the runtime; the children are already gone.
    rt.shutdown_timeout(Duration::from_secs(1));
    let path = dir.path().display().to_string();
    match dir.close() {
        Ok(()) => eprintln!(
            "loadgen: interrupted by {name}: stopped every server and Envoy it started, \
             removed {path}"
        ),
        Err(e) => eprintln!(
            "loadgen: interrupted by {name}: stopped every server and Envoy it started; \
             could not remove {path}: {e}"
        ),
    }
}

/// `MTLS_BENCH_METRICS=1`: the recorder is installed (in this process and the servers).
fn metrics_on() -> bool {
    std::env::var_os("MTLS_BENCH_METRICS").is_some_and(|v| v == "1")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if metrics_on() {
        // Recorded, never scraped: the cost measured is the libraries' recording.
        // With A66's latency buckets, as the bookstore binaries export them.
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration".to_owned()),
            &mtls_tonic::metrics::LATENCY_BUCKETS,
        );
        if let Err(e) = builder.and_then(|b| b.install_recorder()) {
            eprintln!("loadgen: MTLS_BENCH_METRICS=1: installing the recorder: {e}");
            return ExitCode::FAILURE;
        }
        mtls_tonic::metrics::describe();
    }
    if let Some(envoy) = cli.envoy.clone() {
        mtls_benches::envoy::use_envoy(envoy);
    }
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
        } => ab(rounds, batch_time, out).map(|()| None),
        Cmd::Soak(args) => soak(args),
        Cmd::Layers {
            rounds,
            window,
            server_threads,
            out,
        } => layers(rounds, window, server_threads, out),
        Cmd::CryptoBound { seconds, out } => {
            mtls_benches::crypto::OpensslSpeed::measure(seconds).and_then(|speed| {
                eprintln!(
                    "openssl speed ({}): P-256 sign {:.0}/s verify {:.0}/s, X25519 {:.0}/s, P-256 ECDH {:.0}/s: at most {:.0} full mTLS handshakes per server CPU-second",
                    speed.version,
                    speed.p256_sign_per_s,
                    speed.p256_verify_per_s,
                    speed.x25519_per_s,
                    speed.p256_ecdh_per_s,
                    speed.classical_bound_per_s()
                );
                write_any(
                    &RunFile {
                        command: std::env::args().collect::<Vec<_>>().join(" "),
                        crypto: Some(speed),
                        ..RunFile::default()
                    },
                    out,
                )
            })
            .map(|()| None)
        }
        Cmd::Abuse(args) => abuse(args),
        Cmd::ServeHandshake {
            dir,
            threads,
            resumption,
        } => serve_handshake(dir, threads, resumption).map(|()| None),
        Cmd::ServeBookstore {
            dir,
            mode,
            listen,
            name,
            threads,
            max_connection_age,
        } => runtime(threads)
            .and_then(|rt| {
                rt.block_on(mesh::serve_replica(
                    &dir,
                    mode,
                    listen,
                    &name,
                    max_connection_age,
                ))
            })
            .map(|()| None),
    };
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(signal)) => signal_exit(signal),
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

/// `Ok(Some(signal))` when a signal stopped the run (the points so far are written).
fn run(args: RunArgs) -> Result<Option<&'static str>, Error> {
    let scenarios = parse_scenarios(&args.scenario)?;
    let client_threads = args.client_threads.unwrap_or_else(available_threads);
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
        recycle_every: args.recycle_every,
        measured: Default::default(),
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
    let mesh_scenarios: Vec<Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| *s != Scenario::Handshake)
        .collect();
    let work = async {
        let mut points = Vec::new();
        if scenarios.contains(&Scenario::Handshake) {
            points.extend(scenario::run_handshake(&opts).await?);
        }
        if !mesh_scenarios.is_empty() {
            points.extend(mesh::run_mesh(&opts, &mesh_scenarios).await?);
        }
        Ok(points)
    };
    match until_signal(&rt, work)? {
        Ended::Done(mut points) => {
            if metrics_on() {
                mtls_benches::result::mark_metrics(&mut points);
            }
            file.points = points;
            write_any(&file, args.out)?;
            Ok(None)
        }
        Ended::Interrupted(signal) => {
            say_interrupted(signal, dir, rt);
            file.points = opts.measured.take();
            if metrics_on() {
                mtls_benches::result::mark_metrics(&mut file.points);
            }
            file.interrupted = Some(signal.to_owned());
            let n = file.points.len();
            let to = args
                .out
                .as_ref()
                .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
            write_any(&file, args.out)?;
            eprintln!("loadgen: wrote the {n} point(s) measured before {signal} to {to}");
            Ok(Some(signal))
        }
    }
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
        recycle_every: Duration::from_secs(2),
        measured: Default::default(),
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

fn soak(args: SoakArgs) -> Result<Option<&'static str>, Error> {
    let dir = scratch_dir()?;
    let opts = scratch_options(args.warmup, args.duration, args.server_threads, dir.path())?;
    let threads = available_threads();
    let rt = runtime(threads)?;
    let work = mesh::run_soak(&opts, args.replicas, args.concurrency, args.sample_every);
    match until_signal(&rt, work)? {
        Ended::Done(mut result) => {
            result.conditions.note = args.written.note;
            eprintln!("{}", mtls_benches::soak::markdown(&result));
            write_any(&result, args.written.out)?;
            Ok(None)
        }
        Ended::Interrupted(signal) => cut_short(signal, dir, rt, "the soak"),
    }
}

fn layers(
    rounds: usize,
    window: Duration,
    server_threads: usize,
    out: Option<PathBuf>,
) -> Result<Option<&'static str>, Error> {
    let dir = scratch_dir()?;
    let opts = scratch_options(Duration::ZERO, window, server_threads, dir.path())?;
    let threads = available_threads();
    let rt = runtime(threads)?;
    match until_signal(&rt, mtls_benches::layers::run(&opts, rounds, window))? {
        Ended::Done(result) => {
            eprintln!("{}", result.markdown());
            write_any(
                &RunFile {
                    command: std::env::args().collect::<Vec<_>>().join(" "),
                    layers: Some(result),
                    ..RunFile::default()
                },
                out,
            )?;
            Ok(None)
        }
        Ended::Interrupted(signal) => cut_short(signal, dir, rt, "the layers run"),
    }
}

fn abuse(args: AbuseArgs) -> Result<Option<&'static str>, Error> {
    let dir = scratch_dir()?;
    let opts = scratch_options(
        Duration::ZERO,
        args.flood_duration,
        args.server_threads,
        dir.path(),
    )?;
    let threads = available_threads();
    let plan = mtls_benches::abuse::Plan {
        idle: args.idle,
        slowloris: args.slowloris,
        garbage: args.garbage,
        trials: args.trials,
        flood_workers: args.flood_workers,
        flood_duration: args.flood_duration,
    };
    let rt = runtime(threads)?;
    match until_signal(&rt, mesh::run_abuse(&opts, &plan))? {
        Ended::Done(mut result) => {
            result.conditions.note = args.written.note;
            eprintln!("{}", mtls_benches::abuse::markdown(&result));
            write_any(&result, args.written.out)?;
            Ok(None)
        }
        Ended::Interrupted(signal) => cut_short(signal, dir, rt, "the abuse run"),
    }
}

/// `value` as pretty JSON, into `out` or on stdout.
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
    write_any(&file, out)
}

fn serve_handshake(dir: PathBuf, threads: usize, resumption: bool) -> Result<(), Error> {
    let files = handshake::HandshakeFiles::in_dir(&dir);
    let config = handshake::server_config_with(
        &files,
        if resumption {
            mtls_core::Resumption::Tickets
        } else {
            mtls_core::Resumption::Off
        },
    )?;
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
        // The accept loop runs on a worker, as Envoy's listeners run on its workers: an
        // accepted connection's task starts on the same thread (tokio's LIFO slot) instead of
        // waking the main thread for the accept and a worker for the handshake.
        let _ = tokio::spawn(handshake::serve(listener, config)).await;
        Ok(())
    })
}
