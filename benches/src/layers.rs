//! The per-layer cost at concurrency 1 (`loadgen layers`): the same `GetBook` over one
//! replica with the stack built up one layer at a time — tonic's own TLS, then the mTLS
//! transport (`MtlsIncoming` + `MtlsConnector`), the `BalancedChannel`, the
//! `authorization` header, `JwtLayer`, `AuthzLayer` — measured in interleaved rounds (every
//! configuration once per round, so drifting load hits all), medians over rounds. A
//! layer's cost is the difference to the configuration before it.
//!
//! ```
//! use mtls_benches::layers::{LayerRow, LayersResult};
//! let row = |name: &str, c, s, l| LayerRow { name: name.into(), adds: String::new(),
//!     client_cpu_us: c, server_cpu_us: s, latency_us: l, calls: 1000 };
//! let r = LayersResult { rounds: 5, window_ms: 300, rows: vec![row("a", 10.0, 8.0, 60.0), row("b", 12.5, 8.0, 63.0)] };
//! let md = r.markdown();
//! assert!(md.contains("| b |  | 12.5 | +2.5 | 8.0 | +0.0 | 63.0 | +3.0 |"), "{md}");
//! ```

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One configuration, per call (medians over the rounds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    /// Configuration name (`tonic TLS`, `+ mTLS transport`, …).
    pub name: String,
    /// What it adds to the previous row, in words.
    pub adds: String,
    /// Client (load generator) CPU per call, µs.
    pub client_cpu_us: f64,
    /// Server (replica process) CPU per call, µs.
    pub server_cpu_us: f64,
    /// Mean latency per call, µs (concurrency 1: the window over the calls).
    pub latency_us: f64,
    /// Calls measured over all rounds.
    pub calls: u64,
}

/// A `loadgen layers` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayersResult {
    /// Rounds (each measures every configuration once).
    pub rounds: usize,
    /// Window per configuration per round, ms.
    pub window_ms: u64,
    /// The configurations, each adding one layer to the one before.
    pub rows: Vec<LayerRow>,
}

impl LayersResult {
    /// The table: absolute figures per configuration and the difference to the one before.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "| configuration | adds | client CPU µs/call | Δ | server CPU µs/call | Δ | latency µs/call | Δ |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        let mut prev: Option<&LayerRow> = None;
        for r in &self.rows {
            let d = |f: fn(&LayerRow) -> f64| {
                prev.map_or("–".into(), |p| format!("{:+.1}", f(r) - f(p)))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {} | {:.1} | {} | {:.1} | {} |",
                r.name,
                r.adds,
                r.client_cpu_us,
                d(|r| r.client_cpu_us),
                r.server_cpu_us,
                d(|r| r.server_cpu_us),
                r.latency_us,
                d(|r| r.latency_us),
            );
            prev = Some(r);
        }
        md
    }
}

/// Median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the harness: one replica per server configuration (tonic TLS, `MtlsIncoming` alone,
/// then with `JwtLayer`, then with `AuthzLayer` too) on 127.0.0.2, six client configurations over them, `rounds`
/// rounds of one `window` each (after a short warm-up), the order rotated every round.
pub async fn run(
    opts: &crate::scenario::RunOptions,
    rounds: usize,
    window: std::time::Duration,
) -> crate::Result<LayersResult> {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use bookstore::proto::bookstore_client::BookstoreClient;
    use mtls_tonic::balance::BalancedChannel;

    use crate::driver::{CallFn, LoadSpec, PointLabel, measure};
    use crate::error::Error;
    use crate::mesh::{self, ReplicaMode};

    let mesh = mesh::mesh_for(opts, 1).await?;
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let mut replicas = Vec::new();
    let mut ports = Vec::new();
    for (mode, name) in [
        (ReplicaMode::TonicTls, "replica-tonic-tls"),
        (ReplicaMode::MtlsBare, "replica-mtls"),
        (ReplicaMode::MtlsJwt, "replica-mtls-jwt"),
        (ReplicaMode::Mtls, "replica-mtls-jwt-authz"),
    ] {
        let port = mesh::shared_free_port(&[ip])?;
        replicas.push(mesh::spawn_replica(
            opts,
            mode,
            SocketAddr::from((ip, port)),
            name,
        )?);
        ports.push(port);
    }
    let pki_err = |e: String| Error::Pki(e);
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|source| Error::Read {
            path: p.to_owned(),
            source,
        })
    };
    let tonic_tls = tonic::transport::Endpoint::from_shared(format!("https://{ip}:{}", ports[0]))
        .map_err(|e| pki_err(e.to_string()))?
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(
                    mesh.pki.bundle_path(),
                )?))
                .domain_name(&mesh.policy.service_name),
        )
        .map_err(|e| pki_err(format!("tonic client TLS: {e}")))?
        .connect_lazy();
    let mtls_channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{}", ports[1]))
        .map_err(|e| pki_err(e.to_string()))?
        .connect_with_connector_lazy(mesh.connector()?);
    let balanced = |port: u16| -> crate::Result<BalancedChannel> {
        BalancedChannel::builder(
            format!("{}:{port}", mesh.policy.service_name),
            mesh.connector()?,
        )
        .nameserver(mesh.dns.addr())
        .build()
        .map_err(|e| pki_err(e.to_string()))
    };
    let token = Some(mesh.token.clone());
    let bare = balanced(ports[1])?;
    // (name, adds, replica index, call)
    let configs: Vec<(&str, &str, usize, CallFn)> = vec![
        (
            "tonic TLS",
            "tonic `Channel` + `ServerTlsConfig` (server auth only): the base",
            0,
            mesh::get_book(BookstoreClient::new(tonic_tls), None),
        ),
        (
            "+ mTLS transport",
            "`MtlsConnector` + `MtlsIncoming` (client certificate, SPIFFE verification), tonic `Channel`",
            1,
            mesh::get_book(BookstoreClient::new(mtls_channel), None),
        ),
        (
            "+ balancer",
            "`BalancedChannel` (DNS, p2c, keepalive) instead of tonic's `Channel`",
            1,
            mesh::get_book(BookstoreClient::new(bare.clone()), None),
        ),
        (
            "+ token header",
            "an `authorization: Bearer …` header on every call (not checked)",
            1,
            mesh::get_book(BookstoreClient::new(bare), token.clone()),
        ),
        (
            "+ JWT layer",
            "`JwtLayer` on the server (mtls-jwt, ES256, token cache hit)",
            2,
            mesh::get_book(BookstoreClient::new(balanced(ports[2])?), token.clone()),
        ),
        (
            "+ authz layer",
            "`AuthzLayer` (per-method SPIFFE policy): the whole `proxyless` stack",
            3,
            mesh::get_book(BookstoreClient::new(balanced(ports[3])?), token),
        ),
    ];
    for (name, _, _, call) in &configs {
        mesh::wait_until_serving(call, name, Duration::from_secs(20)).await?;
    }
    let n = configs.len();
    let mut samples: Vec<[Vec<f64>; 3]> = (0..n).map(|_| Default::default()).collect();
    let mut calls = vec![0u64; n];
    let spec = LoadSpec {
        concurrency: 1,
        warmup: Duration::from_millis(200).min(window),
        duration: window,
    };
    for round in 0..rounds.max(1) {
        for k in 0..n {
            let i = (k + round) % n;
            let (name, _, replica, call) = &configs[i];
            let label = PointLabel {
                scenario: "layers".into(),
                variant: (*name).into(),
                replicas: 1,
            };
            let p = measure(spec, label, &[replicas[*replica].measured()], call.clone()).await;
            if p.calls == 0 {
                continue;
            }
            let per_call = |cpu_s: f64| cpu_s * 1e6 / p.calls as f64;
            let role_cpu = |role| {
                p.processes
                    .iter()
                    .filter(|u| u.role == role)
                    .map(|u| u.cpu_s)
                    .sum::<f64>()
            };
            samples[i][0].push(per_call(role_cpu(crate::child::Role::Client)));
            samples[i][1].push(per_call(role_cpu(crate::child::Role::Server)));
            samples[i][2].push(p.duration_s * 1e6 / p.calls as f64);
            calls[i] += p.calls;
            if opts.verbose {
                eprintln!(
                    "layers round {} {name}: {:.0} calls/s, client {:.1} µs, server {:.1} µs per call",
                    round + 1,
                    p.throughput_per_s,
                    samples[i][0].last().unwrap_or(&0.0),
                    samples[i][1].last().unwrap_or(&0.0)
                );
            }
        }
    }
    let rows = configs
        .iter()
        .zip(samples)
        .zip(calls)
        .map(
            |(((name, adds, _, _), [client, server, latency]), calls)| LayerRow {
                name: (*name).into(),
                adds: (*adds).into(),
                client_cpu_us: median(client),
                server_cpu_us: median(server),
                latency_us: median(latency),
                calls,
            },
        )
        .collect();
    drop(replicas);
    Ok(LayersResult {
        rounds: rounds.max(1),
        window_ms: window.as_millis() as u64,
        rows,
    })
}
