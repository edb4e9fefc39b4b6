//! # bookstore: the mtls mesh on one machine
//!
//! Google's public bookstore gRPC sample (wire-compatible proto, package
//! `endpoints.examples.bookstore`) served and called the two ways a mesh can do it:
//!
//! ```text
//! proxyless:  client ── BalancedChannel (DNS bookstore.local -> 127.0.0.2/.3/.4, mTLS, bearer JWT)
//!                  ──► replica: MtlsIncoming -> AuthzLayer (SPIFFE ID) -> JwtLayer -> Bookstore
//!
//! Envoy:      client ── h2c ──► client Envoy (STRICT_DNS via the same DNS, upstream mTLS, SAN match)
//!                  ──► server Envoy per replica (client cert required, SAN match, jwt_authn, XFCC)
//!                  ──► replica on loopback, plaintext
//! ```
//!
//! Both paths are configured from one [`MeshPolicy`]: the proxyless server's authorizer,
//! method policy and JWT validator, and the Envoy bootstrap JSON ([`envoy`]) and Kubernetes
//! manifests ([`k8s`]) are generated from it.
//!
//! ## Pieces
//! - [`proto`]: the generated messages, client and server (compiled by `build.rs` with
//!   protox: no system `protoc`).
//! - [`Store`] and [`BookstoreService`]: the seeded in-memory bookstore, NOT_FOUND /
//!   INVALID_ARGUMENT errors, the replica's name in [`REPLICA_HEADER`].
//! - [`server`]: [`server::spawn`] with [`Security::Mtls`] or [`Security::Plaintext`],
//!   `grpc.health.v1` included; [`server::bind`] with clear errors.
//! - [`faults`]: the mesh demo's deliberate UNAVAILABLE for a call's first attempt
//!   (replicas in demo mode only), to show both paths' retries.
//! - [`scenario`]: the client's scenario over any channel, with a [`Report`] of calls per
//!   replica.
//! - [`MeshPki`]: a throwaway PKI (root, intermediate, SVIDs) and JWT issuer in a directory.
//! - [`MeshDns`]: an in-process authoritative DNS server for `bookstore.local`.
//! - [`identity`]: where workloads get their SVIDs ([`WorkloadIdentities`]; [`MeshPki`]
//!   implements it with files, [`AgentIdentities`] with an identity agent).
//! - [`agent`]: [`AgentIdentities`], an in-process `mtls-agent`: SPIFFE Workload API
//!   sources for the replicas, the client and the intruder, SDS for the Envoy sidecars
//!   ([`envoy::CertSource::Sds`]), rotation with no restart — `bookstore-mesh --agent`.
//! - [`envoy`]: Envoy bootstrap generation ([`envoy::ClientSidecar`],
//!   [`envoy::ServerSidecar`]) and Envoy processes ([`envoy::EnvoyProcess`]: ready check,
//!   stats, killed on drop; [`envoy::find_envoy`]).
//! - [`k8s`]: the Kubernetes manifests of `examples/bookstore/k8s/`.
//! - [`mesh`]: the whole mesh, as `bookstore-mesh` runs it ([`mesh::run`]), and its parts
//!   for other programs: [`mesh::Replicas`], [`mesh::Sidecars`],
//!   [`mesh::proxyless_channel`], [`mesh::envoy_channel`]. With identities that rotate
//!   (an agent), each path's scenario runs in two halves around a forced rotation
//!   ([`mesh::Rotation`]: the new serial must be in use, no call may fail).
//!   [`mesh::federation`]: two federated trust domains ([`mesh::FederatedDomains`]: an
//!   agent and a CA each, bundle endpoints both ways) and a CA rotation crossing over
//!   ([`mesh::CaRotation`]).
//!
//! ## Binaries
//! - `bookstore-mesh`: the main job (see the README); `--agent` for identities from an
//!   in-process `mtls-agent` (Workload API + SDS) with a rotation mid-scenario;
//!   `--federation` for the client and the bookstore in two federated trust domains.
//! - `bookstore-server`: one replica, mTLS + SPIFFE authorization + JWT, or `--plaintext`
//!   on loopback behind a sidecar.
//! - `bookstore-client`: the scenario, proxyless or through a local sidecar.
//!
//! ## Quick start
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use bookstore::{BookstoreService, MeshPki, MeshPolicy, Scenario, Security, Store, server};
//!
//! let policy = MeshPolicy::bookstore();
//! let dir = tempfile::tempdir()?;
//! let pki = MeshPki::create(dir.path(), &policy)?;
//!
//! // A replica: mTLS, only the client's SPIFFE ID, tokens checked against the JWKS.
//! let listener = server::bind("127.0.0.2:50051".parse()?, false).await?;
//! let security = Security::Mtls {
//!     tls: std::sync::Arc::new(pki.server_config()?),
//!     policy: policy.method_policy()?,
//!     jwt: Some((
//!         policy.validator(mtls_jwt::JwksSource::inline(pki.jwks_json()))?,
//!         policy.jwt_rules()?,
//!     )),
//! };
//! let _replica = server::spawn(listener, BookstoreService::new(Store::seeded(), "r1")?, security)?;
//!
//! // The client: a balanced mTLS channel and a bearer token.
//! let channel = mtls_tonic::balance::BalancedChannel::builder(
//!     "127.0.0.2:50051",
//!     mtls_tonic::client::MtlsConnector::new(pki.client_config(pki.client())?).server_name("bookstore.local")?,
//! )
//! .build()?;
//! let report = Scenario::new(bookstore::scenario::boxed(channel), Some(pki.token(&policy.audience)?))
//!     .run(18)
//!     .await;
//! println!("{}", report.distribution());
//! # Ok(()) }
//! ```
//!
//! ## Dependencies
//! - `mtls-certs`, `mtls-core` (feature `workload-api`), `mtls-jwt`, `mtls-tonic`,
//!   `mtls-agent`: the project's crates.
//! - `tokio-rustls`: the agent mode's probe of the certificate each replica serves.
//! - `tonic`, `tonic-prost`, `prost`, `tonic-health`, `tower`, `http`: gRPC.
//! - `tokio`, `tokio-stream`: runtime, sockets, child processes, signals.
//! - `mtls-tonic` feature `testing`: the in-process DNS server (`LoopbackDns`).
//! - `serde`, `serde_json`, `serde_yaml_ng`: Envoy JSON and Kubernetes YAML.
//! - `clap`, `tracing-subscriber`: the binaries; `tempfile`: the mesh's throwaway directory.
//! - `humantime`: `bookstore-server`'s `--reload-interval` and its RFC 3339 / "expires in"
//!   wording (dev: `time` for the tests' certificate dates).
//! - `metrics-exporter-prometheus`: the binaries' `--metrics-listen` ([`metrics`]); the
//!   libraries link only the `metrics` facade.
//! - build: `protox` (proto compiler in Rust), `tonic-prost-build` (code generation).
#![forbid(unsafe_code)]

pub mod agent;
mod dns;
pub mod envoy;
mod error;
pub mod faults;
pub mod identity;
pub mod k8s;
pub mod mesh;
pub mod metrics;
mod pki;
mod policy;
mod rotation;
pub mod scenario;
pub mod server;
mod store;

/// The generated protobuf messages, `bookstore_client` and `bookstore_server`.
#[allow(missing_docs, clippy::all, unreachable_pub)] // generated by tonic-prost-build
pub mod proto {
    tonic::include_proto!("endpoints.examples.bookstore");
}

pub use agent::AgentIdentities;
pub use dns::MeshDns;
pub use error::{Error, Result};
pub use identity::{Workload, WorkloadIdentities};
pub use mesh::{MeshOptions, MeshOutcome, RollingRestart};
pub use pki::{MeshPki, SvidFiles};
pub use policy::{
    AUDIENCE, BOOKSTORE_SERVICE, CALLER_HEADER, CLIENT_ID, CLIENT_TRUST_DOMAIN,
    FEDERATED_CLIENT_ID, FEDERATED_NEIGHBOUR_ID, HEALTH_SERVICE, INTRUDER_ID, ISSUER, MeshPolicy,
    REPLICA_HEADER, SERVER_ID, SERVICE_NAME, TLS_HEADER, TRUST_DOMAIN, UNFEDERATED_ID,
    UNFEDERATED_TRUST_DOMAIN,
};
pub use scenario::{Report, Scenario};
pub use server::{Security, ServerHandle};
pub use store::{BookstoreService, Store, caller};

/// Logs to stderr for the bookstore binaries: `RUST_LOG` if set, else `default` (e.g.
/// `"warn"`), so the binaries' own output on stdout stays readable.
///
/// ```
/// bookstore::init_logging("error");
/// ```
pub fn init_logging(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // A second call (tests, embedding) keeps the first subscriber.
    // Colours only on a terminal: a redirected log gets no escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C or (on unix) SIGTERM: how the bookstore binaries learn to shut down.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // No signal arrives here, so the other branch wins.
/// let stopped = tokio::select! {
///     _ = bookstore::shutdown_signal() => true,
///     _ = std::future::ready(()) => false,
/// };
/// assert!(!stopped);
/// # }
/// ```
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs a bookstore binary's `run` on a new multi-threaded runtime and returns its exit
/// code; on an error (or a runtime that cannot start) prints `<binary>: error: …` to stderr
/// and fails.
///
/// ```
/// use std::process::ExitCode;
///
/// let ok = bookstore::block_on("demo", async { Ok(ExitCode::SUCCESS) });
/// assert_eq!(ok, ExitCode::SUCCESS);
/// let failed = bookstore::block_on("demo", async {
///     Err(bookstore::Error::Config("no --listen given".into()))
/// });
/// assert_eq!(failed, ExitCode::FAILURE);
/// ```
pub fn block_on(
    binary: &str,
    run: impl std::future::Future<Output = Result<std::process::ExitCode>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run).unwrap_or_else(|e| {
        eprintln!("{binary}: error: {e}");
        std::process::ExitCode::FAILURE
    })
}
