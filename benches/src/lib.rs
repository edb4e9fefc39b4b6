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
//! ```text
//!  loadgen (client, measured as `client`)
//!    ├─ spawns itself: `loadgen serve-*`  (servers/replicas, measured by PID)
//!    ├─ spawns Envoy (.venv/bin/envoy)    (measured by PID)
//!    └─ driver: N workers ─call─► scenario ─► histogram + /proc deltas ─► PointResult (JSON)
//! ```
#![forbid(unsafe_code)]

pub mod chart;
pub mod child;
pub mod criterion;
pub mod driver;
pub mod envoy;
mod error;
pub mod handshake;
pub mod latency;
pub mod mesh;
pub mod procstat;
pub mod report;
pub mod result;
pub mod scenario;

pub use error::{Error, Result};
