//! The whole mesh on one machine, as `bookstore-mesh` runs it: a throwaway PKI and JWT
//! issuer, an in-process DNS server, three replicas on 127.0.0.2–4, the proxyless path,
//! then (with an Envoy binary) the same through Envoy sidecars, and the refusals on both.
//!
//! The pieces are public so other programs (benches, the agent demo) can assemble their
//! own mesh: [`Replicas`], [`Sidecars`], [`proxyless_channel`], [`envoy_channel`].
//!
//! With [`MeshOptions::agent`] the identities come from an in-process `mtls-agent`
//! ([`AgentIdentities`]); [`run_with`] takes any [`WorkloadIdentities`], and when they
//! rotate it checks the SVIDs in use (check [`checks::AGENT_IDENTITIES`]), runs each path's
//! scenario in two halves around `rotate_now()`, and records a [`Rotation`] (check
//! [`checks::ROTATION`]).

macro_rules! say {
    ($options:expr, $($arg:tt)*) => {
        if $options.verbose {
            println!($($arg)*);
        }
    };
}

mod assess;
mod channels;
pub mod checks;
pub mod federation;
mod options;
mod outcome;
mod print;
mod replicas;
mod restart;
mod retries;
mod run;
mod sidecars;
mod stats;

pub use self::{
    channels::{envoy_channel, proxyless_channel, proxyless_channel_builder, wait_ready},
    federation::{
        BOOKSTORE_ENDPOINT_ID, BookstoreCaller, CA_ACTIVATION_DELAY, CaRotation,
        FEDERATION_REFRESH_HINT, FETCH_SLACK, FederatedDomains, run_federated,
    },
    options::{ENVOY_HINT, EnvoyChoice, MeshOptions},
    outcome::{Check, MeshOutcome, PathKind},
    replicas::{REPLICA_IPS, Replicas, bind_shared_port},
    restart::RollingRestart,
    retries::{RETRIED_CALLS, RETRY_ATTEMPTS},
    run::{run, run_with},
    sidecars::Sidecars,
    stats::StatRow,
};
pub use crate::rotation::{Rotation, SeenSerial, same_serial};
#[cfg(doc)]
use crate::{AgentIdentities, identity::WorkloadIdentities};
