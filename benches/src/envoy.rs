//! Envoy for the benchmarks: where the binary is, and bookstore's Envoy runner with the
//! process's role, for the per-process (PID) measurements.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bookstore::envoy::{EnvoyOptions, EnvoyProcess};

use crate::child::{Measured, Role};
use crate::error::{Error, Result};

static EXPLICIT_ENVOY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Uses `path` as the Envoy binary from now on (`loadgen --envoy PATH`); the first call
/// wins. Returns whether this call set it.
pub fn use_envoy(path: PathBuf) -> bool {
    EXPLICIT_ENVOY.set(path).is_ok()
}

/// The Envoy binary: the one given to [`use_envoy`], else found as the bookstore example
/// finds it (`$MTLS_ENVOY`, `envoy` on `PATH`, the project's `.venv/bin/envoy` from
/// `./scripts/install-test-tools.sh`); when there is none, the `.venv` path, for the error
/// message.
pub fn envoy_path() -> PathBuf {
    if let Some(path) = EXPLICIT_ENVOY.get() {
        return path.clone();
    }
    bookstore::envoy::find_envoy(None).unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"))
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_owned()
}

/// The Envoy binary if it is installed, or [`Error::EnvoyMissing`] naming what needs it
/// (`"the envoy scenario"`).
pub fn require_envoy(scenario: &str) -> Result<PathBuf> {
    let path = envoy_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::EnvoyMissing {
            path,
            scenario: scenario.to_owned(),
        })
    }
}

/// `envoy --version`, e.g. `1.40.0/Clean/RELEASE/BoringSSL`.
pub fn envoy_version() -> Option<String> {
    let out = Command::new(envoy_path()).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("version:"))?;
    let v = line.split("version:").nth(1)?.trim();
    // "<sha>/1.40.0/Clean/RELEASE/BoringSSL": drop the commit hash.
    Some(v.split_once('/').map_or(v, |(_, rest)| rest).to_owned())
}

/// A running Envoy, measured by PID: bookstore's [`EnvoyProcess`] (killed by PID on drop)
/// with its role in the scenario.
#[derive(Debug)]
pub struct Envoy {
    process: EnvoyProcess,
    role: Role,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` written to `dir/<name>.json`, `concurrency` worker
    /// threads, hot restart disabled, logs at `warning` in `dir/<name>.log`, the admin port
    /// chosen by the kernel; waits until `/ready` answers (bookstore's
    /// [`EnvoyProcess::start_with`]).
    pub async fn start(
        name: &str,
        role: Role,
        dir: &Path,
        bootstrap: &serde_json::Value,
        concurrency: usize,
    ) -> Result<Self> {
        let binary = require_envoy(&format!("Envoy process {name}"))?;
        let options = EnvoyOptions::default().concurrency(concurrency);
        let process = EnvoyProcess::start_with(&binary, name, bootstrap, dir, &options)
            .await
            .map_err(|e| Error::Child {
                role: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self { process, role })
    }

    /// This Envoy as a measured process.
    pub fn measured(&self) -> Measured {
        Measured {
            name: self.process.name().to_owned(),
            role: self.role,
            pid: self.process.pid(),
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.process.admin()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        self.process.log_path()
    }

    /// The address of the listener `name` (given port 0 in its bootstrap: the kernel picks
    /// the port as Envoy binds it); bookstore's [`EnvoyProcess::listener_addr`].
    pub async fn listener_addr(&self, name: &str) -> Result<SocketAddr> {
        self.process
            .listener_addr(name)
            .await
            .map_err(|e| Error::Child {
                role: self.process.name().to_owned(),
                reason: e.to_string(),
            })
    }

    /// Every counter and gauge from `/stats`, by name (e.g.
    /// `listener.127.0.0.1_4000.ssl.handshake`).
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        self.process.stats().await.map_err(|e| Error::Child {
            role: self.process.name().to_owned(),
            reason: e.to_string(),
        })
    }
}
