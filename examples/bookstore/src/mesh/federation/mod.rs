//! `bookstore-mesh --federation`: the bookstore and its client in two trust domains, each
//! with its own in-process `mtls-agent` and CA, federated by exchanging SPIFFE bundles
//! over their bundle endpoints ([`FederatedDomains`]).
//!
//! ```text
//!  client.local agent ──bundle endpoint (https_web)──────────► bookstore.local agent
//!  client.local agent ◄──bundle endpoint (https_spiffe)─────── bookstore.local agent
//!        │ Workload API / SDS                                      │ Workload API / SDS
//!  client (spiffe://client.local/ns/default/sa/client) ──mTLS──► replicas 127.0.0.2–4
//!  client sidecar (validates spiffe://bookstore.local) ──mTLS──► server sidecars
//!                                                 (validate spiffe://client.local)
//! ```
//!
//! The bookstore's policy ([`MeshPolicy::federated`](crate::MeshPolicy::federated)) admits
//! exactly the foreign ID [`FEDERATED_CLIENT_ID`](crate::FEDERATED_CLIENT_ID), on both
//! paths (the replicas' handshake authorizer; the server sidecars' SAN match). Checked on
//! each path, proxyless and through Envoy sidecars fed by SDS:
//!
//! - the scenario, balance and caller rows of the main mesh, the caller now foreign;
//! - [`checks::FEDERATION`]: each side trusts the other's CA as fetched from its bundle
//!   endpoint (proxyless: the Workload API sources' bundles; Envoy: each sidecar's
//!   validation context in its admin `/certs`);
//! - [`checks::NEIGHBOUR`]: another workload of `client.local` — federated, its certificate
//!   verifies — is refused for its SPIFFE ID (authorizer / `ssl.fail_verify_san`);
//! - [`checks::UNFEDERATED`]: a workload of `intruder.local`, valid SVID of a domain nobody
//!   federates with, is refused as of an unknown CA (`unknown_ca` / `ssl.fail_verify_error`).

mod domains;
mod run;

pub use self::{
    domains::{BOOKSTORE_ENDPOINT_ID, Caller, FEDERATION_REFRESH_HINT, FederatedDomains},
    run::run_federated,
};
#[cfg(doc)]
use super::checks;
