//! Soak mode: one long, bounded run with RSS and open file descriptors of every process
//! sampled over time, and the slope of each (a slow leak shows as a slope, not as a peak).
//!
//! ```
//! use mtls_benches::soak::slope_per_minute;
//! // 10 KiB more every minute, sampled every 30 s:
//! let samples = [(0.0, 1000.0), (30.0, 1005.0), (60.0, 1010.0), (90.0, 1015.0)];
//! assert!((slope_per_minute(&samples) - 10.0).abs() < 1e-9);
//! ```

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::child::Measured;
use crate::procstat;
use crate::result::PointResult;

/// One process at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessSample {
    /// Name in the report.
    pub name: String,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: u64,
}

/// Every process at one moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// The processes.
    pub processes: Vec<ProcessSample>,
}

/// The trend of one process over the soak (samples after the warm-up).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trend {
    /// Name in the report.
    pub name: String,
    /// RSS at the first and the last sample, KiB.
    pub rss_first_kib: u64,
    /// RSS at the last sample, KiB.
    pub rss_last_kib: u64,
    /// Largest RSS sampled, KiB.
    pub rss_max_kib: u64,
    /// Least-squares slope of RSS, KiB per minute.
    pub rss_kib_per_min: f64,
    /// Open fds at the first sample.
    pub fds_first: u64,
    /// Open fds at the last sample.
    pub fds_last: u64,
    /// Least-squares slope of open fds, per minute.
    pub fds_per_min: f64,
}

/// A finished soak.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakResult {
    /// The load point over the whole soak (calls, errors, latency, CPU).
    pub point: PointResult,
    /// Sample interval, seconds.
    pub sample_every_s: f64,
    /// Slopes use the samples from this many seconds on (after the warm-up).
    pub slopes_from_s: f64,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Per process: first/last/max and slopes.
    pub trends: Vec<Trend>,
    /// Build profile, start, note.
    #[serde(default)]
    pub conditions: crate::result::Conditions,
}

/// Open file descriptors of `pid` (0 when unreadable).
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count() as u64)
        .unwrap_or(0)
}

/// Samples `processes` now.
pub fn sample(processes: &[Measured], since: Instant) -> Sample {
    Sample {
        t_s: since.elapsed().as_secs_f64(),
        processes: processes
            .iter()
            .map(|p| ProcessSample {
                name: p.name.clone(),
                rss_kib: procstat::rss_kib(p.pid).unwrap_or(0),
                fds: open_fds(p.pid),
            })
            .collect(),
    }
}

/// Least-squares slope of `(seconds, value)` points, per minute (0 with fewer than two).
pub fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var * 60.0 }
}

/// The trend of every process over `samples` taken at or after `from_s`.
pub fn trends(samples: &[Sample], from_s: f64) -> Vec<Trend> {
    let used: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= from_s).collect();
    let Some(first) = used.first() else {
        return Vec::new();
    };
    first
        .processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let series = |f: &dyn Fn(&ProcessSample) -> u64| -> Vec<(f64, f64)> {
                used.iter()
                    .filter_map(|s| s.processes.get(i).map(|q| (s.t_s, f(q) as f64)))
                    .collect()
            };
            let rss = series(&|q| q.rss_kib);
            let fds = series(&|q| q.fds);
            let last = used.last().and_then(|s| s.processes.get(i));
            Trend {
                name: p.name.clone(),
                rss_first_kib: p.rss_kib,
                rss_last_kib: last.map_or(0, |q| q.rss_kib),
                rss_max_kib: rss.iter().map(|v| v.1 as u64).max().unwrap_or(0),
                rss_kib_per_min: slope_per_minute(&rss),
                fds_first: p.fds,
                fds_last: last.map_or(0, |q| q.fds),
                fds_per_min: slope_per_minute(&fds),
            }
        })
        .collect()
}

/// The soak as a Markdown table (one row per process), for BENCHMARKS.md.
pub fn markdown(result: &SoakResult) -> String {
    let p = &result.point;
    let mut out = format!(
        "{} at concurrency {} over {} replicas for {:.0} s: {} calls ({:.0}/s), {} errors, \
         p50 {:.0} µs, p99 {:.0} µs; samples every {:.0} s, slopes (least squares) from the \
         samples after {:.0} s.\n\n\
         | process | RSS first → last (max) | RSS slope | open fds first → last | fd slope |\n\
         |---|---|---|---|---|\n",
        p.scenario,
        p.concurrency,
        p.replicas,
        p.duration_s,
        p.calls,
        p.throughput_per_s,
        p.errors,
        p.latency.p50_us,
        p.latency.p99_us,
        result.sample_every_s,
        result.slopes_from_s,
    );
    for t in &result.trends {
        out.push_str(&format!(
            "| {} | {:.1} → {:.1} MiB ({:.1}) | {:+.1} KiB/min | {} → {} | {:+.2}/min |\n",
            t.name,
            t.rss_first_kib as f64 / 1024.0,
            t.rss_last_kib as f64 / 1024.0,
            t.rss_max_kib as f64 / 1024.0,
            t.rss_kib_per_min,
            t.fds_first,
            t.fds_last,
            t.fds_per_min,
        ));
    }
    out
}

/// The BENCHMARKS.md section: how it was run, its conditions, the table.
pub fn section(result: &SoakResult) -> String {
    format!(
        "\n## Soak (`loadgen soak`)\n\n\
         The `proxyless` mesh (mTLS + JWT on every call, `BalancedChannel` over the replicas) \
         driven without pause; RSS (`VmRSS`) and open file descriptors (`/proc/<pid>/fd`) of \
         every process sampled over time. A leak shows as a slope. Command: `loadgen soak \
         --replicas {} --concurrency {} --duration {:.0}s --sample-every {:.0}s`.\n\n\
         Conditions: {}\n\n{}",
        result.point.replicas,
        result.point.concurrency,
        result.point.duration_s,
        result.sample_every_s,
        result.conditions.describe(Some(result.point.other_load())),
        markdown(result)
    )
}

/// Samples `processes` every `every` until `done` resolves; returns the samples.
pub async fn sample_until(
    processes: Vec<Measured>,
    every: Duration,
    since: Instant,
    done: impl std::future::Future<Output = ()>,
) -> Vec<Sample> {
    let mut samples = vec![sample(&processes, since)];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = tick.tick() => samples.push(sample(&processes, since)),
            () = &mut done => break,
        }
    }
    samples.push(sample(&processes, since));
    samples
}
