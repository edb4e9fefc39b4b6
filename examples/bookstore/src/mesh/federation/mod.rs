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
//!   federates with, is refused as of an unknown CA (`unknown_ca` / `ssl.fail_verify_error`);
//! - [`checks::CA_ROTATION`]: while calls run on both paths, `bookstore.local` rotates its
//!   CA (`Agent::rotate_ca`: the new root joins the bundle first, SVIDs from the new CA only
//!   after [`CA_ACTIVATION_DELAY`]); the new root reaches `client.local` (its agent, the
//!   client's Workload API source, the client sidecar) within one refresh hint and before
//!   the switch, the bookstore then serves SVIDs of the new CA, and no call fails
//!   ([`CaRotation`]).

mod domains;
mod rotation;
mod run;

pub use self::{
    domains::{
        BOOKSTORE_ENDPOINT_ID, BookstoreCaller, CA_ACTIVATION_DELAY, FEDERATION_REFRESH_HINT,
        FETCH_SLACK, FederatedDomains,
    },
    rotation::CaRotation,
    run::run_federated,
};
#[cfg(doc)]
use super::checks;
