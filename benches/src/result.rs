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
    /// For `handshake`: one connection of the variant read off the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<HelloBytes>,
    /// The `recycling` scenario: every server-side connection was recycled at this age (s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_every_s: Option<f64>,
}

/// One handshake of a `handshake` variant, counted at the client's socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloBytes {
    /// Bytes the client wrote before the server's first byte: the ClientHello.
    pub client_hello: u64,
    /// Bytes the server sent before the client wrote again: ServerHello … Finished.
    pub server_flight: u64,
    /// Handshake kind as rustls saw it (`full`, `full with HelloRetryRequest`, `resumed`).
    pub kind: String,
    /// The negotiated key-exchange group (`X25519`, `X25519MLKEM768`).
    pub group: String,
    /// For the resumed rows: the share of the point's connections (warm-up included) that
    /// resumed a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_share: Option<f64>,
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

/// The variant `loadgen` gives the call scenarios' points when `MTLS_BENCH_METRICS=1`
/// installed the recorder (issue 15's "metrics on" row against the points without it).
///
/// ```
/// assert_eq!(mtls_benches::result::METRICS_VARIANT, "metrics");
/// ```
pub const METRICS_VARIANT: &str = "metrics";

/// Marks the call scenarios' points of a run with the recorder installed:
/// [`METRICS_VARIANT`], or `+metrics` after another variant. The handshake scenario's
/// points keep theirs (its variants name the servers compared).
///
/// ```
/// let mut points: Vec<mtls_benches::result::PointResult> = Vec::new(); // a run's points
/// mtls_benches::result::mark_metrics(&mut points);
/// ```
pub fn mark_metrics(points: &mut [PointResult]) {
    for point in points.iter_mut().filter(|p| p.scenario != "handshake") {
        point.variant = if point.variant.is_empty() {
            METRICS_VARIANT.to_owned()
        } else {
            format!("{}+{METRICS_VARIANT}", point.variant)
        };
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
    /// `openssl speed` figures (`loadgen crypto-bound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<crate::crypto::OpensslSpeed>,
    /// The per-layer cost run (`loadgen layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<crate::layers::LayersResult>,
    /// The signal that cut the run short (`"SIGINT"`, `"SIGTERM"`); `points` then holds only
    /// what was measured before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
}

/// The conditions a long run (soak, abuse) was measured under, rendered beside its table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    /// `release` or `debug`: the build profile of the load generator and its server
    /// processes (they are the same executable).
    pub build: String,
    /// Unix time at the start.
    pub started_unix: u64,
    /// A free-text note (what else ran on the machine).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Conditions {
    /// This process's build profile, now, with `note`.
    pub fn now(note: &str) -> Self {
        Self {
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            note: note.to_owned(),
        }
    }

    /// One sentence for the report: profile, date, other load (a share of the machine, from
    /// the points of the run), note.
    ///
    /// ```
    /// use mtls_benches::result::Conditions;
    /// let c = Conditions { build: "release".into(), started_unix: 0, note: "quiet".into() };
    /// assert_eq!(c.describe(Some(0.02)), "**release** build; started 1970-01-01 00:00 UTC; other programs used 2 % of the machine; quiet.");
    /// ```
    pub fn describe(&self, other_load: Option<f64>) -> String {
        let build = if self.build.is_empty() {
            "unknown"
        } else {
            &self.build
        };
        let mut s = format!("**{build}** build");
        if self.started_unix > 0 || self.build == "release" || self.build == "debug" {
            s.push_str(&format!("; started {}", utc(self.started_unix)));
        }
        if let Some(load) = other_load {
            s.push_str(&format!(
                "; other programs used {:.0} % of the machine",
                load * 100.0
            ));
        }
        if !self.note.is_empty() {
            s.push_str(&format!("; {}", self.note.trim_end_matches('.')));
        }
        s.push('.');
        s
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}
