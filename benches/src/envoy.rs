//! Envoy for the benchmarks: where the binary is, and a runner that starts it with a
//! bootstrap file and waits until its admin endpoint says `LIVE`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::{ChildProcess, Measured, Role};
use crate::error::{Error, Result};

/// The Envoy binary, found as the bookstore example finds it (`$MTLS_ENVOY`, `envoy` on
/// `PATH`, the project's `.venv/bin/envoy` from `./scripts/install-test-tools.sh`); when
/// there is none, the `.venv` path, for the error message.
pub fn envoy_path() -> PathBuf {
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

/// A running Envoy; killed by PID on drop.
#[derive(Debug)]
pub struct Envoy {
    process: ChildProcess,
    admin: SocketAddr,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (YAML) written to `dir/<name>.yaml`, `concurrency`
    /// worker threads, hot restart disabled, logs at `warning` in `dir/<name>.log`, the
    /// admin port chosen by the kernel; waits until `/ready` answers `LIVE`.
    pub fn start(
        name: &str,
        role: Role,
        dir: &Path,
        bootstrap: &str,
        concurrency: usize,
    ) -> Result<Self> {
        let binary = require_envoy(&format!("Envoy process {name}"))?;
        let config = dir.join(format!("{name}.yaml"));
        let admin_path = dir.join(format!("{name}.admin"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&config, bootstrap).map_err(Error::io(format!("write {config:?}")))?;
        let _ = std::fs::remove_file(&admin_path);
        let log_file = std::fs::File::create(&log).map_err(Error::io(format!("create {log:?}")))?;
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&config)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--log-level")
            .arg("warning")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stderr(Stdio::from(log_file));
        let mut process = ChildProcess::spawn(name, role, command)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let fail = |process: &mut ChildProcess, why: String| {
            process.kill();
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            Error::Child {
                role: name.to_owned(),
                reason: format!(
                    "{why}; last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            }
        };
        let admin = loop {
            if let Some(status) = process.exited() {
                return Err(fail(&mut process, format!("exited with {status}")));
            }
            if let Some(addr) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                && http_get(addr, "/ready").is_some_and(|body| body.contains("LIVE"))
            {
                break addr;
            }
            if Instant::now() > deadline {
                return Err(fail(&mut process, "not LIVE after 30 s".to_owned()));
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Ok(Self {
            process,
            admin,
            log,
        })
    }

    /// This Envoy as a measured process.
    pub fn measured(&self) -> Measured {
        self.process.measured()
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// One counter from `/stats` (e.g. `listener.127.0.0.1_4000.ssl.handshake`).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = http_get(self.admin, &format!("/stats?filter=^{name}$"))?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Envoy {
    /// Every stat whose name matches the regex `filter`, as Envoy prints them.
    pub fn stats_matching(&self, filter: &str) -> Option<String> {
        http_get(self.admin, &format!("/stats?filter={filter}"))
    }
}

/// A tiny HTTP/1.1 GET (Connection: close) against Envoy's admin port; the body on 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
