//! The JSON the load generator writes: one [`PointResult`] per measured point.

use serde::{Deserialize, Serialize};

use crate::child::Role;
use crate::latency::LatencySummary;

/// One process's share of a measured point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Name (`client`, `replica-1`, `envoy-client`, `envoy-server-2`, `server`).
    pub name: String,
    /// Role in the scenario.
    pub role: Role,
    /// OS process id.
    pub pid: u32,
    /// User + system CPU seconds during the measurement window.
    pub cpu_s: f64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// CPU seconds per 1,000 successful calls.
    pub cpu_s_per_1k_calls: f64,
    /// Peak RSS (`VmHWM`) during the window, KiB.
    pub peak_rss_kib: u64,
    /// Whether the peak covers only the window (`clear_refs` accepted) or the whole life.
    pub peak_rss_window_only: bool,
}

/// One measured point: a scenario (and variant) at one concurrency and replica count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// `plain-tonic`, `proxyless`, `envoy` or `handshake`.
    pub scenario: String,
    /// For `handshake`: which server (`mtls-core` or `envoy`); otherwise empty.
    #[serde(default)]
    pub variant: String,
    /// Concurrent callers (closed loop: each waits for its answer, then calls again).
    pub concurrency: usize,
    /// Server replicas behind the client.
    pub replicas: usize,
    /// Warm-up before the window, seconds.
    pub warmup_s: f64,
    /// Length of the measurement window, seconds (wall clock).
    pub duration_s: f64,
    /// Successful calls completed in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub errors: u64,
    /// The first failure's message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Successful calls per second.
    pub throughput_per_s: f64,
    /// Latency of successful calls.
    pub latency: LatencySummary,
    /// Every process of the scenario.
    pub processes: Vec<ProcessUsage>,
    /// CPU seconds per 1,000 calls, all processes together.
    pub cpu_s_per_1k_calls_total: f64,
    /// Calls per CPU-second of the serving side (servers and their proxies): for
    /// `handshake`, handshakes per server CPU-second.
    pub calls_per_server_cpu_s: f64,
    /// CPUs of the machine.
    #[serde(default)]
    pub machine_cpus: usize,
    /// CPU seconds used during the window by everything *except* the measured processes
    /// (other programs, kernel threads): how quiet the machine was.
    #[serde(default)]
    pub other_cpu_s: f64,
}

impl PointResult {
    /// The process named `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessUsage> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// Share of the machine's CPU capacity used by other programs during the window (0..1).
    pub fn other_load(&self) -> f64 {
        let capacity = self.duration_s * self.machine_cpus.max(1) as f64;
        if capacity > 0.0 {
            (self.other_cpu_s / capacity).min(1.0)
        } else {
            0.0
        }
    }

    /// Largest peak RSS among processes of `role`, KiB.
    pub fn max_rss_kib(&self, role: Role) -> Option<u64> {
        self.processes
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.peak_rss_kib)
            .max()
    }
}

/// A load generator run: what it measured, with how it was asked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The command line.
    pub command: String,
    /// Unix time at the start.
    pub started_unix: u64,
    /// Worker threads of the client runtime.
    pub client_threads: usize,
    /// Every point, in the order measured.
    pub points: Vec<PointResult>,
    /// Interleaved A/B micro comparisons (`loadgen ab`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ab: Vec<crate::ab::AbResult>,
}
