//! # mtls-benches
//!
//! Whole-system benchmarks of the mtls crates on one machine, in one run:
//!
//! - `loadgen` — a closed-loop load generator for the bookstore `GetBook` call and for
//!   bare mTLS handshakes, with scenarios `plain-tonic` (tonic's own TLS, the floor),
//!   `proxyless` (mtls-tonic mTLS + JWT + `BalancedChannel`), `envoy` (the same call
//!   through a client Envoy and server Envoys) and `handshake` (mtls-core vs an Envoy
//!   listener). Every server is its own process, so the kernel's accounting in `/proc`
//!   gives each process's CPU time and peak RSS ([`procstat`]).
//! - `bench-report` — turns the load generator's JSON and criterion's estimates into
//!   `BENCHMARKS.md` with pairwise ratios and an SVG chart.
//!
//! `./scripts/bench.sh` runs everything; see the README.
//!
//! ## Quick start: measuring any async call
//!
//! The driver is not tied to the scenarios: give it a call, a concurrency and a window,
//! and the processes to account for (the calling process is always included).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use mtls_benches::driver::{CallFn, LoadSpec, PointLabel, measure};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let call: CallFn = Arc::new(|_worker| {
//!     Box::pin(async {
//!         tokio::time::sleep(Duration::from_millis(1)).await;
//!         Ok(())
//!     })
//! });
//! let spec = LoadSpec { concurrency: 4, warmup: Duration::from_millis(20), duration: Duration::from_millis(100) };
//! let label = PointLabel { scenario: "sleep".into(), variant: String::new(), replicas: 1 };
//! let point = measure(spec, label, &[], call).await;
//! assert!(point.calls > 0 && point.errors == 0);
//! assert_eq!(point.processes[0].name, "client");
//! println!("{}", serde_json::to_string_pretty(&point).unwrap());
//! # }
//! ```
//!
//! ## Features
//!
//! None. Linux only (`/proc`); Envoy scenarios need `.venv/bin/envoy`
//! (`./scripts/install-test-tools.sh`) or `$MTLS_ENVOY`.
//!
//! ## Dependencies
//!
//! - the project's crates and the `bookstore` example (PKI, policy, DNS, server, Envoy
//!   bootstraps) — the scenarios are built from them, not re-implemented;
//! - `tonic` with `tls-aws-lc` for the `plain-tonic` floor (aws-lc-rs: no `ring`);
//! - `hdrhistogram` for latency percentiles; `tokio`, `tokio-rustls`, `rustls` for the
//!   handshake scenario; `clap`, `humantime`, `serde`, `serde_json`, `tempfile`, `thiserror`.
//!
//! ```text
//!  loadgen (client, measured as `client`)
//!    ├─ spawns itself: `loadgen serve-*`  (servers/replicas, measured by PID)
//!    ├─ spawns Envoy (.venv/bin/envoy)    (measured by PID)
//!    └─ driver: N workers ─call─► scenario ─► histogram + /proc deltas ─► PointResult (JSON)
//! ```
#![forbid(unsafe_code)]

pub mod ab;
pub mod abuse;
pub mod chart;
pub mod child;
pub mod criterion;
pub mod crypto;
pub mod driver;
pub mod envoy;
mod error;
pub mod handrolled;
pub mod handshake;
pub mod latency;
pub mod layers;
pub mod mesh;
pub mod procstat;
pub mod report;
pub mod result;
pub mod scenario;
pub mod soak;

pub use error::{Error, Result};
