//! Hostile load, the same against one replica of ours and against an Envoy listener with the
//! same certificates (`loadgen abuse`):
//!
//! 1. **Accept-path flood**: `idle` TCP connections that send nothing, `slowloris` that send a
//!    TLS record header and stop, `garbage` that send random bytes — all held open, from
//!    40 sources (127.0.0.10..49) — then `trials` honest *new connection + call*s, timed.
//! 2. **Handshake flood**: `flood_workers` clients with a valid certificate doing full mTLS
//!    handshakes (no resumption) as fast as they can from one source (127.0.0.50), while
//!    honest callers from 127.0.0.1 call over their established connection: p99 with and
//!    without the flood.
//!
//! ```
//! use mtls_benches::abuse::percentile_ms;
//! let mut trials = vec![3.0, 1.0, 2.0, 10.0];
//! assert_eq!(percentile_ms(&mut trials, 100.0), 10.0);
//! assert_eq!(percentile_ms(&mut trials, 50.0), 2.0);
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::result::PointResult;

/// What to throw at each target.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Idle connections.
    pub idle: usize,
    /// Slowloris connections.
    pub slowloris: usize,
    /// Garbage connections.
    pub garbage: usize,
    /// Honest new-connection trials per phase.
    pub trials: usize,
    /// Handshake-flood workers.
    pub flood_workers: usize,
    /// Handshake-flood length.
    pub flood_duration: Duration,
}

/// One target's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetResult {
    /// `proxyless` (mtls-tonic) or `envoy` (Envoy 1.40 listener, same certificates).
    pub target: String,
    /// Honest new connection + call before the flood, ms per trial.
    pub connect_baseline_ms: Vec<f64>,
    /// The same with the accept-path flood held open, ms per trial (failed trials: 5000).
    pub connect_flooded_ms: Vec<f64>,
    /// Attack connections that were open when the honest trials started.
    pub flood_connections: usize,
    /// Honest calls on established connections without a handshake flood.
    pub calls_baseline: PointResult,
    /// The same during the handshake flood.
    pub calls_flooded: PointResult,
    /// Handshakes per second the flood achieved.
    pub flood_handshakes_per_s: f64,
}

/// Both targets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbuseResult {
    /// Ours, then Envoy.
    pub targets: Vec<TargetResult>,
    /// Build profile, start, note.
    #[serde(default)]
    pub conditions: crate::result::Conditions,
}

/// The `p`-th percentile (nearest rank) of `values`; sorts them.
pub fn percentile_ms(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// A TCP connection from `source` that sends `first` and is then held open.
async fn hold_open(
    source: IpAddr,
    addr: SocketAddr,
    first: Vec<u8>,
) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let connect = socket.connect(addr);
    let mut tcp = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .ok()?
        .ok()?;
    if !first.is_empty() {
        tcp.write_all(&first).await.ok()?;
    }
    Some(tcp)
}

/// Opens the accept-path flood against `addr`; the connections stay open while held.
pub async fn open_flood(plan: &Plan, addr: SocketAddr) -> Vec<tokio::net::TcpStream> {
    let mut first: Vec<Vec<u8>> = Vec::new();
    first.extend(std::iter::repeat_n(Vec::new(), plan.idle));
    first.extend(std::iter::repeat_n(
        vec![0x16, 0x03, 0x01, 0x02, 0x00],
        plan.slowloris,
    ));
    for _ in 0..plan.garbage {
        first.push((0..512).map(|_| fastrand_byte()).collect());
    }
    let mut held = Vec::new();
    for (chunk_no, chunk) in first.chunks(100).enumerate() {
        let opens = chunk.iter().enumerate().map(|(i, bytes)| {
            let n = chunk_no * 100 + i;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + (n % 40) as u8));
            hold_open(source, addr, bytes.clone())
        });
        let opened = futures_util::future::join_all(opens).await;
        held.extend(opened.into_iter().flatten());
    }
    held
}

fn fastrand_byte() -> u8 {
    // A cheap xorshift; the bytes only need to be unlike TLS.
    thread_local!(static STATE: std::cell::Cell<u32> = const { std::cell::Cell::new(0x9e37_79b9) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.set(x);
        (x >> 24) as u8
    })
}

/// Full mTLS handshakes (no resumption) from 127.0.0.50 to `addr` by `workers` tasks until
/// `stop`; each sends the HTTP/2 preface and waits for the server's first bytes (so the
/// server verified our certificate).
/// Returns the number of completed handshakes.
pub async fn handshake_flood(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    server_name: rustls_pki_types::ServerName<'static>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let connector = connector.clone();
        let name = server_name.clone();
        let stop = stop.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(tcp) = hold_open(IpAddr::from([127, 0, 0, 50]), addr, Vec::new()).await
                else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let Ok(Ok(mut tls)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    connector.connect(name.clone(), tcp),
                )
                .await
                else {
                    continue;
                };
                // The HTTP/2 preface: both servers answer with SETTINGS once the handshake
                // (client certificate included) is verified.
                let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
                if tls.write_all(preface).await.is_err() {
                    continue;
                }
                let mut byte = [0u8; 1];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), tls.read(&mut byte)).await
                    && n > 0
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed)
}

/// The BENCHMARKS.md section: what was thrown, and the table.
pub fn section(result: &AbuseResult) -> String {
    let flood = result.targets.first().map_or(0, |t| t.flood_connections);
    format!(
        "\n## Hostile load: mtls-tonic vs Envoy (`loadgen abuse`)\n\n\
         One mtls-tonic replica (`MtlsIncoming` + `ServerOptions` defaults) and one Envoy 1.40 \
         listener with the same certificates (client certificate required, two workers) in \
         front of a plaintext replica, one after the other. *Accept-path flood*: idle TCP \
         connections, slowloris (a TLS record header, then nothing) and garbage connections \
         ({flood} opened, from 127.0.0.10..49) held open while an honest client makes a new \
         connection and one `GetBook` (JWT included). *Handshake flood*: clients with a valid \
         certificate doing full mTLS handshakes (no resumption) as fast as they can from \
         127.0.0.50, while 4 honest callers from 127.0.0.1 call over their established \
         connection.\n\nConditions: {}\n\n{}",
        result.conditions.describe(other_load(result)),
        markdown(result)
    )
}

/// The largest share of the machine other programs used during the honest-call windows.
fn other_load(result: &AbuseResult) -> Option<f64> {
    result
        .targets
        .iter()
        .flat_map(|t| [&t.calls_baseline, &t.calls_flooded])
        .map(PointResult::other_load)
        .reduce(f64::max)
}

/// The results as Markdown, both targets side by side.
pub fn markdown(result: &AbuseResult) -> String {
    let mut out = String::from(
        "| target | new conn + call, no flood (median / max) | with idle+slowloris+garbage held open (median / max) | calls p50 / p99, no flood | during a handshake flood (p50 / p99) | flood handshakes/s |\n\
         |---|---|---|---|---|---|\n",
    );
    for t in &result.targets {
        let (mut base, mut flooded) = (t.connect_baseline_ms.clone(), t.connect_flooded_ms.clone());
        out.push_str(&format!(
            "| {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms ({} connections) | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.0} |\n",
            t.target,
            percentile_ms(&mut base, 50.0),
            percentile_ms(&mut base, 100.0),
            percentile_ms(&mut flooded, 50.0),
            percentile_ms(&mut flooded, 100.0),
            t.flood_connections,
            t.calls_baseline.latency.p50_us / 1000.0,
            t.calls_baseline.latency.p99_us / 1000.0,
            t.calls_flooded.latency.p50_us / 1000.0,
            t.calls_flooded.latency.p99_us / 1000.0,
            t.flood_handshakes_per_s,
        ));
    }
    out
}
