//! Envoy sidecars for the bookstore: bootstrap JSON generated from the [`MeshPolicy`]
//! (the same object the proxyless server and client are built from), and Envoy processes.
//!
//! ```text
//! client ──h2c──► client sidecar ──mTLS (client SVID; server SAN = MeshPolicy::server_id)──►
//!   server sidecar (require_client_certificate; SAN ∈ MeshPolicy::allowed_clients;
//!                   jwt_authn: MeshPolicy::issuer/audience + JWKS; XFCC SANITIZE_SET)
//!   ──h2c──► replica on loopback
//! ```
//!
//! [`MeshPolicy`]: crate::MeshPolicy

mod config;
mod install;
mod process;

pub use config::{
    CertSource, ClientSidecar, JwksRef, SDS_CLUSTER, STAT_PREFIX_INBOUND, STAT_PREFIX_OUTBOUND,
    ServerSidecar,
};
pub use install::{envoy_requirement, install_envoy, project_venv};
pub use process::{EnvoyOptions, EnvoyProcess, find_envoy};
