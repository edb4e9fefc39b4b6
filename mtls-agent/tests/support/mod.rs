//! mtls-agent's own test helpers (in-process and binary agents, attackers as other uids);
//! the shared ones come from mtls-test-support.
// Tests may panic: a failed setup step should stop the test with its message; each test
// file uses a different subset of these helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#![allow(unused_imports)] // the shared helpers re-exported here: each test uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mtls_agent::{Agent, AgentConfig, Registration};
use tempfile::TempDir;

// The helpers every crate's tests share: the child-process guard, the test peers (Python
// with py-spiffe if there is one, Envoy with MTLS_REQUIRE_ENVOY=1 making a missing one a
// failure), loopback helpers and polling with a deadline.
pub use mtls_test_support::peers::{envoy_binary, envoy_or_skip, python_if_present as python};
pub use mtls_test_support::{ChildGuard, envoy_ports, eventually, http_get};

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

    /// A workload of this agent: its Workload API source, and a client config on that source
    /// that accepts only the server `server_id`.
    pub async fn client(
        &self,
        server_id: &str,
    ) -> (
        mtls_core::WorkloadApiSource,
        std::sync::Arc<rustls::ClientConfig>,
    ) {
        let source = mtls_core::WorkloadApiSource::builder()
            .endpoint(self.endpoint())
            .connect()
            .await
            .unwrap();
        let config = mtls_core::ClientConfigBuilder::new(source.clone(), source.clone())
            .authorize(mtls_core::Authorize::exact(server_id.parse().unwrap()))
            .build()
            .unwrap();
        (source, std::sync::Arc::new(config))
    }
}

/// A registration giving our uid the web identity.
pub fn web_for_me() -> String {
    format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {} }}\n",
        my_uid()
    )
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
