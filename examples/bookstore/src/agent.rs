//! The mesh's identities from an identity agent: an in-process `mtls-agent` serving the
//! SPIFFE Workload API (to the replicas, the client and the intruder, all in this process)
//! and Envoy SDS (to the sidecars), issuing short-lived SVIDs from its own CA and rotating
//! them with no restart.
//!
//! ## Who gets which SPIFFE ID
//! The agent attests callers by their Unix peer credentials (uid, gid, executable) and, on
//! SDS, Envoy's `node.id`. In this demo the replicas, the client and the intruder are tasks
//! of *one* process — one PID, uid and executable — so peer credentials cannot tell them
//! apart. The registration therefore entitles this process (its uid **and** executable) to
//! all three IDs, and each in-process workload asks for its own one
//! ([`WorkloadApiSource`]'s `spiffe_id`: the Workload API hands an entitled caller every
//! SVID it may use; the first entry is the default). In a real deployment each workload is
//! its own process with its own entry; the bookstore's policy is the same either way.
//!
//! The **intruder** is registered like any workload of the trust domain: it gets a valid
//! SVID from the agent's CA with [`INTRUDER_ID`], exactly what a
//! compromised or misconfigured neighbour would hold. It is refused because the bookstore's
//! policy does not allow that ID (handshake authorizer, Envoy's SAN match), not because its
//! certificate is foreign — the case worth demonstrating.
//!
//! The **sidecars** are selected by `node.id` (and this uid): the three server sidecars
//! share [`SERVER_SIDECAR_NODE_ID`] — as the pods of one Deployment share one SPIRE entry —
//! and the client sidecar has [`CLIENT_SIDECAR_NODE_ID`]. Their bootstraps name the secrets
//! as SPIRE does: the SPIFFE ID for the certificate, `spiffe://<trust domain>` for the
//! validation context.
//!
//! Bearer tokens stay the mesh's ES256 tokens ([`MeshPki::token`](crate::MeshPki::token)):
//! the bookstore checks `iss` and `aud` on both paths, which JWT-SVIDs do not carry in the
//! same shape.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mtls_agent::{Agent, AgentConfig, Entry, Registration, Selectors};
use mtls_core::{IdentitySource, SpiffeId, TrustSource, WorkloadApiSource};

use crate::{
    Error, INTRUDER_ID, MeshPolicy, Result,
    envoy::CertSource,
    identity::{Workload, WorkloadIdentities},
};

/// Envoy `node.id` of the server sidecars, registered for the bookstore's SPIFFE ID.
pub const SERVER_SIDECAR_NODE_ID: &str = "bookstore-sidecar";
/// Envoy `node.id` of the client sidecar, registered for the client's SPIFFE ID.
pub const CLIENT_SIDECAR_NODE_ID: &str = "bookstore-client-sidecar";
/// Lifetime of the agent's SVIDs in the mesh: rotated at half of it, or when asked.
pub const MESH_SVID_TTL: Duration = Duration::from_secs(600);

/// The mesh's [`WorkloadIdentities`] from an in-process `mtls-agent`: one
/// [`WorkloadApiSource`] per workload (each rotates with the agent), SDS for the sidecars.
/// Dropping it stops the agent and removes its sockets.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bookstore::{AgentIdentities, MeshPolicy, Workload, WorkloadIdentities};
/// let dir = tempfile::tempdir()?;
/// let ids = AgentIdentities::start(dir.path(), &MeshPolicy::bookstore()).await?;
/// // Each in-process workload holds its own SVID, issued by the agent.
/// let source = ids.identity(Workload::Client)?;
/// assert_eq!(source.current().spiffe_id().unwrap().to_string(), bookstore::CLIENT_ID);
/// let before = ids.issued_serial(Workload::Client).unwrap();
/// assert_eq!(source.current().serial().to_string(), before);
///
/// ids.rotate_now()?; // new SVIDs, pushed on every Workload API and SDS stream
/// let after = ids.issued_serial(Workload::Client).unwrap();
/// assert_ne!(before, after);
/// let pushed = async {
///     while source.current().serial().to_string() != after {
///         tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///     }
/// };
/// tokio::time::timeout(std::time::Duration::from_secs(5), pushed).await?;
/// # Ok(()) }
/// ```
pub struct AgentIdentities {
    // Sources first: they are dropped (streams closed) before the agent.
    server: WorkloadApiSource,
    client: WorkloadApiSource,
    intruder: WorkloadApiSource,
    agent: Agent,
    policy: MeshPolicy,
    intruder_id: SpiffeId,
    dir: PathBuf,
}

impl AgentIdentities {
    /// Starts an agent in `dir` (sockets `workload.sock`, `sds.sock`; CA and JWT key in
    /// `state/`) for `policy`'s trust domain, registers this process and the sidecars (see
    /// the module docs), and connects one Workload API source per workload.
    pub async fn start(dir: impl AsRef<Path>, policy: &MeshPolicy) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let state = dir.join("state");
        private_dir(&state)?;
        let intruder_id = SpiffeId::new(INTRUDER_ID)
            .map_err(|e| Error::Config(format!("intruder ID {INTRUDER_ID}: {e}")))?;
        let registration = registration(policy, &intruder_id, &state)?;
        let agent = Agent::start(
            AgentConfig::new(
                policy.trust_domain.clone(),
                dir.join("workload.sock"),
                registration,
            )
            .sds_socket(dir.join("sds.sock"))
            .state_dir(&state)
            .svid_ttl(MESH_SVID_TTL),
        )
        .await
        .map_err(|e| Error::agent(format!("starting mtls-agent in {}", dir.display()), e))?;
        let endpoint = agent.workload_endpoint();
        let connect = |id: SpiffeId| {
            WorkloadApiSource::builder()
                .endpoint(endpoint.clone())
                .spiffe_id(id.clone())
                .startup_timeout(Duration::from_secs(5))
                .connect()
        };
        let sources = tokio::try_join!(
            connect(policy.server_id.clone()),
            connect(client_id(policy)?),
            connect(intruder_id.clone()),
        );
        let (server, client, intruder) =
            sources.map_err(|e| Error::tls("an SVID from the agent's Workload API", e))?;
        Ok(Self {
            server,
            client,
            intruder,
            agent,
            policy: policy.clone(),
            intruder_id,
            dir,
        })
    }

    /// The running agent (its CA, generation, serials; `rotate_now`).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The Workload API source `workload` uses.
    pub fn source(&self, workload: Workload) -> &WorkloadApiSource {
        match workload {
            Workload::Bookstore => &self.server,
            Workload::Client => &self.client,
            Workload::Intruder => &self.intruder,
        }
    }

    /// The SPIFFE ID `workload` holds.
    pub fn spiffe_id(&self, workload: Workload) -> Result<SpiffeId> {
        Ok(match workload {
            Workload::Bookstore => self.policy.server_id.clone(),
            Workload::Client => client_id(&self.policy)?,
            Workload::Intruder => self.intruder_id.clone(),
        })
    }

    /// The agent's directory (sockets and state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for AgentIdentities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentities")
            .field("agent", &self.agent)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentities for AgentIdentities {
    fn identity(&self, workload: Workload) -> Result<Arc<dyn IdentitySource>> {
        let source: Arc<dyn IdentitySource> = Arc::new(self.source(workload).clone());
        Ok(source)
    }

    fn trust(&self) -> Result<Arc<dyn TrustSource>> {
        // Every source streams the same bundle set (the agent's trust domain).
        let trust: Arc<dyn TrustSource> = Arc::new(self.server.clone());
        Ok(trust)
    }

    fn envoy_certs(&self, workload: Workload) -> Result<CertSource> {
        let node_id = match workload {
            Workload::Bookstore => SERVER_SIDECAR_NODE_ID,
            Workload::Client => CLIENT_SIDECAR_NODE_ID,
            Workload::Intruder => {
                return Err(Error::Config(
                    "the intruder has no sidecar registered with the agent".into(),
                ));
            }
        };
        let socket = self
            .agent
            .sds_socket()
            .ok_or_else(|| Error::Config("the agent serves no SDS socket".into()))?;
        Ok(CertSource::Sds {
            socket: socket.to_path_buf(),
            node_id: node_id.to_owned(),
            certificate: self.spiffe_id(workload)?.to_string(),
            validation: format!("spiffe://{}", self.policy.trust_domain),
        })
    }

    fn describe(&self) -> String {
        format!(
            "mtls-agent in process: Workload API {}, SDS {}; CA {:?}, SVIDs for {:?}, generation {}",
            self.agent.workload_endpoint(),
            self.agent
                .sds_socket()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.agent.ca().subject(),
            MESH_SVID_TTL,
            self.agent.generation(),
        )
    }

    fn rotates(&self) -> bool {
        true
    }

    fn rotate_now(&self) -> Result<Option<u64>> {
        self.agent
            .rotate_now()
            .map(Some)
            .map_err(|e| Error::agent("rotating the agent's SVIDs", e))
    }

    fn issued_serial(&self, workload: Workload) -> Option<String> {
        self.agent.serial_of(&self.spiffe_id(workload).ok()?)
    }
}

fn client_id(policy: &MeshPolicy) -> Result<SpiffeId> {
    policy
        .allowed_clients
        .first()
        .cloned()
        .ok_or_else(|| Error::Config("the policy allows no client".into()))
}

/// This process (uid + executable) may hold the bookstore's, the client's and the
/// intruder's IDs (server first: the default SVID); the sidecars are selected by node id.
fn registration(policy: &MeshPolicy, intruder: &SpiffeId, owned: &Path) -> Result<Registration> {
    let (uid, process) = this_process(owned)?;
    let client = client_id(policy)?;
    Ok(Registration::new([
        Entry::new(policy.server_id.clone(), process.clone()),
        Entry::new(client.clone(), process.clone()),
        Entry::new(intruder.clone(), process),
        Entry::new(
            policy.server_id.clone(),
            Selectors::default()
                .sds_node_id(SERVER_SIDECAR_NODE_ID)
                .uid(uid),
        ),
        Entry::new(
            client,
            Selectors::default()
                .sds_node_id(CLIENT_SIDECAR_NODE_ID)
                .uid(uid),
        ),
    ]))
}

/// Our effective uid and the selectors of this process (uid and, where there is a /proc,
/// executable), read from `owned`, a directory we just created (no libc needed).
pub(crate) fn this_process(owned: &Path) -> Result<(u32, Selectors)> {
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(owned)
            .map_err(|e| Error::file("reading the owner of", owned, e))?
            .uid()
    };
    let s = Selectors::default().uid(uid);
    // What the agent reads for a caller (`/proc/<pid>/exe`), where there is a /proc.
    let process = match std::fs::read_link("/proc/self/exe") {
        Ok(exe) => s.exe(exe),
        Err(_) => s,
    };
    Ok((uid, process))
}

/// Creates `dir` (and parents) mode 0700: an agent trusts only a state directory of its
/// own that nobody else can write.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::file("creating the agent's directory", dir, e))
}
