//! Envoy as a child process: started with a generated bootstrap, ready when its admin
//! interface says so, stats read from the admin interface, killed (by PID) when dropped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Result};

/// Finds an Envoy binary: `explicit` if given, else `$MTLS_ENVOY`, else `envoy` on `PATH`,
/// else the project's venv ([`project_venv`](super::project_venv): `$MTLS_VENV`, or the
/// checkout's `.venv` that `./scripts/install-test-tools.sh` and the mesh's own install
/// fill), else a `.venv/bin/envoy` from the current directory upwards (not with
/// `$MTLS_VENV` set).
///
/// ```
/// let explicit = std::path::Path::new("/opt/envoy/bin/envoy");
/// assert_eq!(bookstore::envoy::find_envoy(Some(explicit)).as_deref(), Some(explicit));
/// ```
pub fn find_envoy(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("MTLS_ENVOY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("envoy");
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    let venv = super::project_venv().join("bin/envoy");
    if is_executable(&venv) {
        return Some(venv);
    }
    if std::env::var_os("MTLS_VENV").is_some_and(|d| !d.is_empty()) {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|root| root.join(".venv/bin/envoy"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// How [`EnvoyProcess::start_with`] runs Envoy. The default is what
/// [`EnvoyProcess::start`] does: one worker thread.
///
/// ```
/// let options = bookstore::envoy::EnvoyOptions::default().concurrency(4);
/// assert_eq!(options.worker_threads(), 4);
/// assert_eq!(bookstore::envoy::EnvoyOptions::default().worker_threads(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvoyOptions {
    concurrency: usize,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self { concurrency: 1 }
    }
}

impl EnvoyOptions {
    /// Sets the number of worker threads (Envoy's `--concurrency`; 0 is taken as 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// The number of worker threads.
    pub fn worker_threads(&self) -> usize {
        self.concurrency
    }
}

/// A running Envoy. Dropping it kills the process (by its PID) and reaps it.
#[derive(Debug)]
pub struct EnvoyProcess {
    name: String,
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    config: PathBuf,
}

impl EnvoyProcess {
    /// Writes `bootstrap` to `dir/<name>.json` and starts `binary` on it
    /// (`--disable-hot-restart`, one worker thread, log level warning, log in
    /// `dir/<name>.log`), then waits (up to 30 s) until the admin interface reports ready.
    pub async fn start(binary: &Path, name: &str, bootstrap: &Value, dir: &Path) -> Result<Self> {
        Self::start_with(binary, name, bootstrap, dir, &EnvoyOptions::default()).await
    }

    /// As [`EnvoyProcess::start`], with `options` (e.g. more worker threads).
    pub async fn start_with(
        binary: &Path,
        name: &str,
        bootstrap: &Value,
        dir: &Path,
        options: &EnvoyOptions,
    ) -> Result<Self> {
        let file_name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let config = dir.join(format!("{file_name}.json"));
        let admin_path = dir.join(format!("{file_name}.admin"));
        let log = dir.join(format!("{file_name}.log"));
        let pretty = serde_json::to_string_pretty(bootstrap)
            .map_err(|e| Error::envoy(name, format!("serializing the bootstrap: {e}")))?;
        std::fs::write(&config, pretty)
            .map_err(|e| Error::file("writing Envoy config", &config, e))?;
        let _ = std::fs::remove_file(&admin_path);
        let log_file =
            std::fs::File::create(&log).map_err(|e| Error::file("creating Envoy log", &log, e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| Error::file("creating Envoy log", &log, e))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--concurrency")
            .arg(options.concurrency.to_string())
            .args(["-l", "warning"])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::envoy(name, format!("starting {}: {e}", binary.display())))?;
        let mut process = Self {
            name: name.to_owned(),
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            config,
        };
        process
            .wait_ready(&admin_path, Duration::from_secs(30))
            .await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::envoy(
                    &self.name,
                    format!(
                        "exited with {status} while starting:\n{}",
                        self.log_tail(20)
                    ),
                ));
            }
            let admin = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok());
            if let Some(admin) = admin {
                self.admin = admin;
                if let Ok((200, _)) = self.admin_get("/ready").await {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::envoy(
                    &self.name,
                    format!("not ready after {timeout:?}:\n{}", self.log_tail(20)),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin interface's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The bootstrap file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Envoy's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET path` on the admin interface: status code and body.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        let io = |e: std::io::Error| Error::envoy(&self.name, format!("admin GET {path}: {e}"));
        let fut = async {
            let mut tcp = tokio::net::TcpStream::connect(self.admin)
                .await
                .map_err(io)?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.map_err(io)?;
            let mut response = Vec::new();
            tcp.read_to_end(&mut response).await.map_err(io)?;
            Ok::<_, Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| Error::envoy(&self.name, format!("admin GET {path}: timed out")))??;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::envoy(
                    &self.name,
                    format!("admin GET {path}: bad response {head:?}"),
                )
            })?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }

    /// Every counter and gauge from `/stats` (`name: value` lines; histograms skipped).
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let (_, body) = self.admin_get("/stats").await?;
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// The address Envoy's listener `name` is bound to (`GET /listeners?format=json`): for a
    /// listener given port 0, so the kernel picks its port as Envoy binds it and nothing can
    /// take it in between.
    ///
    /// ```no_run
    /// # async fn doc(envoy: &bookstore::envoy::EnvoyProcess) -> bookstore::Result<()> {
    /// let addr = envoy.listener_addr("handshake").await?;
    /// assert_ne!(addr.port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn listener_addr(&self, name: &str) -> Result<SocketAddr> {
        let (_, body) = self.admin_get("/listeners?format=json").await?;
        let json: Value = serde_json::from_str(&body).map_err(|e| {
            Error::envoy(
                &self.name,
                format!("expected JSON from /listeners?format=json, got {e}: {body}"),
            )
        })?;
        json["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["name"] == name)
            .find_map(|l| {
                let socket = &l["local_address"]["socket_address"];
                let ip: std::net::IpAddr = socket["address"].as_str()?.parse().ok()?;
                let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
                (port != 0).then_some(SocketAddr::new(ip, port))
            })
            .ok_or_else(|| {
                Error::envoy(
                    &self.name,
                    format!("expected a bound listener {name:?} in /listeners, got {body}"),
                )
            })
    }

    /// The sum of the counters whose name ends with `suffix` (e.g. `ssl.fail_verify_san`
    /// matches `listener.127.0.0.2_8443.ssl.fail_verify_san`).
    pub async fn counter(&self, suffix: &str) -> Result<u64> {
        Ok(self
            .stats()
            .await?
            .iter()
            .filter(|(name, _)| name.ends_with(suffix))
            .map(|(_, v)| v)
            .sum())
    }

    /// The hosts of `cluster` (from `/clusters`), e.g. `127.0.0.2:8443`.
    pub async fn cluster_hosts(&self, cluster: &str) -> Result<Vec<String>> {
        let (_, body) = self.admin_get("/clusters").await?;
        let prefix = format!("{cluster}::");
        let mut hosts: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (host, field) = rest.split_once("::")?;
                (field.starts_with("cx_active") && host.contains(':')).then(|| host.to_owned())
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        Ok(hosts)
    }

    /// The serials of the certificates Envoy presents (`/certs`: every TLS context's
    /// `cert_chain`, leaf first), as Envoy prints them (hex without colons). With SDS, the
    /// list changes when the agent pushes a rotation.
    pub async fn cert_serials(&self) -> Result<Vec<String>> {
        let (status, body) = self.admin_get("/certs").await?;
        let certs: Value = serde_json::from_str(&body).map_err(|e| {
            Error::envoy(
                &self.name,
                format!("admin /certs (status {status}): {e}; expected JSON, got {body:?}"),
            )
        })?;
        Ok(certs["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|context| context["cert_chain"].as_array()?.first())
            .filter_map(|leaf| leaf["serial_number"].as_str().map(str::to_owned))
            .collect())
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
