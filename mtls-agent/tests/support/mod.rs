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
pub use mtls_test_support::{ChildGuard, EnvoyPorts, envoy_ports, eventually, http_get};

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

    /// A server workload of this agent: its Workload API source (the first SVID within
    /// 5 s), and a server config on that source that admits the members of our trust domain.
    pub async fn server(&self) -> (mtls_core::WorkloadApiSource, rustls::ServerConfig) {
        let source = mtls_core::WorkloadApiSource::builder()
            .endpoint(self.endpoint())
            .startup_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let config = mtls_core::ServerConfigBuilder::new(source.clone(), source.clone())
            .authorize(mtls_core::Authorize::member_of(TD.parse().unwrap()))
            .build()
            .unwrap();
        (source, config)
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

/// The spiffe crate's `X509Source` on the Workload API at `endpoint`, synced (5 s at most).
pub async fn x509_source(endpoint: &str) -> spiffe::X509Source {
    spiffe::X509Source::builder()
        .endpoint(endpoint)
        .initial_sync_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
}

/// The serial of the X509-SVID `source` holds now.
pub fn svid_serial(source: &spiffe::X509Source) -> String {
    serial_of_der(source.svid().unwrap().leaf().as_bytes())
}

/// Waits (5 s at most) for the next update on `updates` (taken before the change); `what`
/// names the update in the failure.
pub async fn next_update(updates: &mut spiffe::X509SourceUpdates, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap_or_else(|_| panic!("expected {what} within 5 s, saw none"))
        .unwrap();
}

/// The certificate a server at `addr` presents to a new handshake made with `config` (server
/// name `bookstore.local`).
pub async fn presented_certificate(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> rustls_pki_types::CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("bookstore.local").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// gRPC health checks over mTLS until [`HealthLoad::finish`], each through `interceptor`:
/// the even-numbered callers keep one channel (made with the SVIDs of when it connected),
/// the odd-numbered ones make a new connection (a new handshake) for every call.
pub struct HealthLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl HealthLoad {
    pub fn start<I>(
        callers: u64,
        connector: &mtls_tonic::client::MtlsConnector,
        endpoint: &tonic::transport::Endpoint,
        interceptor: I,
    ) -> Self
    where
        I: tonic::service::Interceptor + Clone + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let load = Self {
            stop: Default::default(),
            ok: Default::default(),
            failures: Default::default(),
            workers: Vec::new(),
        };
        let workers = (0..callers)
            .map(|w| {
                let (stop, ok, failures) =
                    (load.stop.clone(), load.ok.clone(), load.failures.clone());
                let (connector, endpoint, interceptor) =
                    (connector.clone(), endpoint.clone(), interceptor.clone());
                tokio::spawn(async move {
                    let fresh_each_call = w % 2 == 1;
                    let mut channel = None;
                    while !stop.load(Ordering::Relaxed) {
                        if channel.is_none() || fresh_each_call {
                            match endpoint.connect_with_connector(connector.clone()).await {
                                Ok(c) => channel = Some(c),
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("connect: {e:?}"));
                                    continue;
                                }
                            }
                        }
                        let Some(c) = channel.clone() else { continue };
                        let mut client = HealthClient::with_interceptor(c, interceptor.clone());
                        match client.check(HealthCheckRequest::default()).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) => failures.lock().unwrap().push(format!("{status:?}")),
                        }
                    }
                })
            })
            .collect();
        Self { workers, ..load }
    }

    /// Calls that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (20 s at most) for `n` more calls to succeed; `what` names them in the failure.
    pub async fn calls(&self, n: u64, what: &str) {
        let at = self.ok();
        eventually(Duration::from_secs(20), what, || {
            (self.ok() >= at + n).then_some(())
        })
        .await;
    }

    /// Stops the callers and waits for them: the calls that succeeded and the failures.
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), failures)
    }
}

/// An interceptor that passes every request on unchanged (for [`HealthLoad`] without one).
pub fn no_interceptor(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    Ok(request)
}

/// `client.local`, the trust domain of the agent the federation tests federate with.
pub const FOREIGN: &str = "client.local";
/// The SPIFFE ID of `client.local`'s bundle endpoint (`https_spiffe`).
pub const FOREIGN_ENDPOINT_ID: &str = "spiffe://client.local/bundle-endpoint";

/// `client.local`'s agent (workload socket `dir/client.sock`) serving its bundle endpoint on
/// a loopback port with `profile` and a 1 s refresh hint.
pub async fn foreign_agent(dir: &Path, profile: mtls_agent::ServeProfile) -> Agent {
    let registration = Registration::from_yaml(&format!(
        "entries:\n  - spiffe_id: spiffe://client.local/app\n    selectors: {{ uid: {} }}\n",
        my_uid()
    ))
    .unwrap();
    Agent::start(
        AgentConfig::new(
            FOREIGN.parse().unwrap(),
            dir.join("client.sock"),
            registration,
        )
        .serve_bundle_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            profile,
            Duration::from_secs(1),
        ),
    )
    .await
    .unwrap()
}

/// `foreign`'s bundle endpoint as `https_spiffe`, expecting the endpoint SPIFFE ID `id`,
/// starting from `foreign`'s bundle.
pub fn https_spiffe_endpoint(foreign: &Agent, id: &str) -> mtls_core::BundleEndpoint {
    let initial = mtls_core::SpiffeBundle::new(FOREIGN.parse().unwrap())
        .add_x509_authorities_pem(foreign.bundle_pem())
        .unwrap();
    mtls_core::BundleEndpoint::https_spiffe(
        FOREIGN.parse().unwrap(),
        &format!("https://{}/", foreign.bundle_endpoint_addr().unwrap()),
        id.parse().unwrap(),
        initial,
    )
    .unwrap()
}

/// A Workload API request carrying `message` and the security header
/// (`workload.spiffe.io: true`) the API requires.
pub fn workload_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// An SDS request for the secrets `names`, from the Envoy node `node` (cluster `c`).
pub fn sds_request(
    node: &str,
    names: &[&str],
) -> pb::envoy::service::discovery::v3::DiscoveryRequest {
    pb::envoy::service::discovery::v3::DiscoveryRequest {
        node: Some(pb::envoy::config::core::v3::Node {
            id: node.to_owned(),
            cluster: "c".to_owned(),
        }),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        type_url: mtls_agent::SECRET_TYPE_URL.to_owned(),
        ..Default::default()
    }
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
