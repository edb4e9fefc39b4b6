//! [`FederatedDomains`]: three trust domains, each its own in-process `mtls-agent` with
//! its own CA; two of them federate.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use mtls_agent::{Agent, AgentConfig, Entry, Registration, Selectors, ServeProfile};
use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
use mtls_core::{
    BundleEndpoint, ClientConfigBuilder, IdentitySource, SpiffeBundle, SpiffeId, TrustBundle,
    TrustDomain, TrustSource, WorkloadApiSource,
};

use crate::{
    CLIENT_TRUST_DOMAIN, Error, FEDERATED_NEIGHBOUR_ID, MeshPolicy, Result, UNFEDERATED_ID,
    UNFEDERATED_TRUST_DOMAIN,
    agent::{
        CLIENT_SIDECAR_NODE_ID, MESH_SVID_TTL, SERVER_SIDECAR_NODE_ID, private_dir, this_process,
    },
    envoy::CertSource,
    identity::{Workload, WorkloadIdentities},
};

/// The SPIFFE ID `bookstore.local`'s bundle endpoint proves (`https_spiffe`): what
/// `client.local`'s agent is configured to expect.
pub const BOOKSTORE_ENDPOINT_ID: &str = "spiffe://bookstore.local/bundle-endpoint";
/// The refresh hint both bundle endpoints serve in the demo (SPIFFE's default is 5 min;
/// short here so that a CA rotation crosses over within the run).
pub const FEDERATION_REFRESH_HINT: Duration = Duration::from_secs(2);
/// What "within one refresh hint" allows on top of the hint: the fetch itself and the push
/// to the workloads (loopback, milliseconds; generous for a loaded machine).
pub const FETCH_SLACK: Duration = Duration::from_secs(1);
/// How long after `Agent::rotate_ca` bookstore.local's agent starts issuing from the new
/// CA, with [`FEDERATION_REFRESH_HINT`]: one refresh hint and [`FETCH_SLACK`], so that
/// client.local, polling at the hint, holds the new root before any SVID chains to it.
pub const CA_ACTIVATION_DELAY: Duration =
    Duration::from_secs(FEDERATION_REFRESH_HINT.as_secs() + FETCH_SLACK.as_secs());

/// Who calls the bookstore in the federation scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BookstoreCaller {
    /// [`FEDERATED_CLIENT_ID`](crate::FEDERATED_CLIENT_ID): the one foreign ID the
    /// bookstore's policy admits.
    Client,
    /// [`FEDERATED_NEIGHBOUR_ID`]: of the federated domain, not in the policy.
    Neighbour,
    /// [`UNFEDERATED_ID`]: of a domain nobody federates with.
    Unfederated,
}

impl fmt::Display for BookstoreCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BookstoreCaller::Client => "client",
            BookstoreCaller::Neighbour => "neighbour",
            BookstoreCaller::Unfederated => "unfederated",
        })
    }
}

/// `bookstore-mesh --federation`'s identities: three trust domains, each with its own
/// in-process `mtls-agent` and CA.
///
/// - `bookstore.local` (the replicas and their sidecars) serves its bundle endpoint with the
///   `https_spiffe` profile (an SVID for [`BOOKSTORE_ENDPOINT_ID`]) and federates with
///   `client.local`;
/// - `client.local` (the client, its sidecar, and a neighbour workload the bookstore does
///   not admit) serves its bundle endpoint with `https_web` (a certificate from a web CA
///   made here) and federates with `bookstore.local`, starting from its initial bundle;
/// - `intruder.local` federates with nobody; its workload holds a valid SVID of its own CA.
///
/// Both endpoints tell peers to refresh every `refresh_hint`; a CA rotation in
/// `bookstore.local` ([`Agent::rotate_ca`]) activates the new CA one refresh hint and
/// [`FETCH_SLACK`] after publishing its root. Each agent hands the other
/// domain's bundle to its workloads (Workload API `federated_bundles`: the in-process
/// sources trust their own domain and the federated one, each with its own roots) and to
/// its Envoy sidecars (SDS validation context `spiffe://<other domain>`, SPIRE's naming).
/// As a [`WorkloadIdentities`], [`Workload::Bookstore`] and [`Workload::Client`] are the
/// two federated workloads, [`Workload::Intruder`] the unfederated one, and
/// [`trust`](WorkloadIdentities::trust) is the bookstore's. Dropping it stops the agents.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bookstore::{MeshPolicy, Workload, WorkloadIdentities, mesh::FederatedDomains};
/// let dir = tempfile::tempdir()?;
/// let policy = MeshPolicy::federated();
/// let domains = FederatedDomains::start(dir.path(), &policy, std::time::Duration::from_secs(2)).await?;
/// let client = domains.identity(Workload::Client)?.current();
/// assert_eq!(client.spiffe_id().unwrap().to_string(), bookstore::FEDERATED_CLIENT_ID);
/// // The bookstore trusts its own domain and the federated client.local, each with its roots.
/// let trust = domains.trust()?.current();
/// let domains_trusted: Vec<String> = trust.trust_domains().map(|td| td.to_string()).collect();
/// assert_eq!(domains_trusted, ["bookstore.local", "client.local"]);
/// # Ok(()) }
/// ```
pub struct FederatedDomains {
    // Sources first: they are dropped (streams closed) before the agents.
    server: WorkloadApiSource,
    client: WorkloadApiSource,
    neighbour: WorkloadApiSource,
    intruder: WorkloadApiSource,
    bookstore_agent: Agent,
    client_agent: Agent,
    intruder_agent: Agent,
    policy: MeshPolicy,
    client_id: SpiffeId,
    neighbour_id: SpiffeId,
    intruder_id: SpiffeId,
    refresh_hint: Duration,
    dir: PathBuf,
}

impl FederatedDomains {
    /// Starts the three agents in `dir` (`bookstore/`, `client/`, `intruder/`: sockets and
    /// state), the two bundle endpoints on loopback, and waits (≤ 20 s) until each
    /// federated agent has fetched the other's bundle; then connects one Workload API
    /// source per workload. `policy` is [`MeshPolicy::federated`] (its first allowed client
    /// is the client of `client.local`).
    pub async fn start(
        dir: impl AsRef<Path>,
        policy: &MeshPolicy,
        refresh_hint: Duration,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let id = |s: &str| SpiffeId::new(s).map_err(|e| Error::Config(format!("{s}: {e}")));
        let td = |s: &str| TrustDomain::new(s).map_err(|e| Error::Config(format!("{s}: {e}")));
        let client_td = td(CLIENT_TRUST_DOMAIN)?;
        let client_id = policy
            .allowed_clients
            .first()
            .cloned()
            .ok_or_else(|| Error::Config("the policy allows no client".into()))?;
        if client_id.trust_domain() != &client_td {
            return Err(Error::Config(format!(
                "the federation scenario's client must be of {client_td}, the policy allows {client_id}"
            )));
        }
        let neighbour_id = id(FEDERATED_NEIGHBOUR_ID)?;
        let intruder_id = id(UNFEDERATED_ID)?;
        let endpoint_id = id(BOOKSTORE_ENDPOINT_ID)?;

        let state = |name: &str| -> Result<PathBuf> {
            let state = dir.join(name).join("state");
            private_dir(&state)?;
            Ok(state)
        };
        let (bookstore_state, client_state, intruder_state) =
            (state("bookstore")?, state("client")?, state("intruder")?);
        let (uid, process) = this_process(&bookstore_state)?;

        // client.local's endpoint is https_web: a site certificate for 127.0.0.1 from a web
        // CA that bookstore.local's agent is told to trust for that URL.
        let web_ca = CertificateAuthority::new_root(&CaParams::new("client.local web CA"))
            .map_err(|e| Error::pki("the web CA of client.local's bundle endpoint", e))?;
        let site = web_ca
            .issue(&LeafParams::server(["127.0.0.1"]))
            .map_err(|e| Error::pki("client.local's bundle endpoint certificate", e))?;
        // Each agent needs the other's URL at start: client.local's port is chosen first.
        let client_endpoint = free_loopback_port()?;

        let bookstore_agent = Agent::start(
            AgentConfig::new(
                policy.trust_domain.clone(),
                dir.join("bookstore/workload.sock"),
                Registration::new([
                    Entry::new(policy.server_id.clone(), process.clone()),
                    Entry::new(
                        policy.server_id.clone(),
                        Selectors::default()
                            .sds_node_id(SERVER_SIDECAR_NODE_ID)
                            .uid(uid),
                    ),
                ]),
            )
            .sds_socket(dir.join("bookstore/sds.sock"))
            .state_dir(&bookstore_state)
            .svid_ttl(MESH_SVID_TTL)
            // SVIDs from a new CA only once client.local, polling at the hint, has its root.
            .ca_activation_delay(refresh_hint + FETCH_SLACK)
            .serve_bundle_endpoint(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                ServeProfile::HttpsSpiffe {
                    endpoint_id: endpoint_id.clone(),
                },
                refresh_hint,
            )
            .federate_with(
                BundleEndpoint::https_web(
                    client_td.clone(),
                    &format!("https://{client_endpoint}/"),
                    web_ca.cert_pem(),
                )
                .map_err(|e| Error::tls("client.local's bundle endpoint", e))?,
            ),
        )
        .await
        .map_err(|e| Error::agent("starting bookstore.local's mtls-agent", e))?;
        let bookstore_endpoint = bookstore_agent.bundle_endpoint_addr().ok_or_else(|| {
            Error::Config("bookstore.local's agent serves no bundle endpoint".into())
        })?;
        let initial = SpiffeBundle::new(policy.trust_domain.clone())
            .add_x509_authorities_pem(bookstore_agent.bundle_pem())
            .map_err(|e| Error::tls("bookstore.local's initial bundle", e))?;

        let client_agent = Agent::start(
            AgentConfig::new(
                client_td.clone(),
                dir.join("client/workload.sock"),
                Registration::new([
                    Entry::new(client_id.clone(), process.clone()),
                    Entry::new(neighbour_id.clone(), process.clone()),
                    Entry::new(
                        client_id.clone(),
                        Selectors::default()
                            .sds_node_id(CLIENT_SIDECAR_NODE_ID)
                            .uid(uid),
                    ),
                ]),
            )
            .sds_socket(dir.join("client/sds.sock"))
            .state_dir(&client_state)
            .svid_ttl(MESH_SVID_TTL)
            .serve_bundle_endpoint(
                client_endpoint,
                ServeProfile::HttpsWeb {
                    chain_pem: site.chain_pem(),
                    key_pem: site.key_pem(),
                },
                refresh_hint,
            )
            .federate_with(
                BundleEndpoint::https_spiffe(
                    policy.trust_domain.clone(),
                    &format!("https://{bookstore_endpoint}/"),
                    endpoint_id,
                    initial,
                )
                .map_err(|e| Error::tls("bookstore.local's bundle endpoint", e))?,
            ),
        )
        .await
        .map_err(|e| Error::agent("starting client.local's mtls-agent", e))?;

        let intruder_agent = Agent::start(
            AgentConfig::new(
                td(UNFEDERATED_TRUST_DOMAIN)?,
                dir.join("intruder/workload.sock"),
                Registration::new([Entry::new(intruder_id.clone(), process)]),
            )
            .state_dir(&intruder_state)
            .svid_ttl(MESH_SVID_TTL),
        )
        .await
        .map_err(|e| Error::agent("starting intruder.local's mtls-agent", e))?;

        // Each side has fetched the other's bundle (the initial one has no sequence).
        wait_fetched(&bookstore_agent, &client_td, Duration::from_secs(20)).await?;
        wait_fetched(&client_agent, &policy.trust_domain, Duration::from_secs(20)).await?;

        let connect = |agent: &Agent, id: &SpiffeId| {
            WorkloadApiSource::builder()
                .endpoint(agent.workload_endpoint())
                .spiffe_id(id.clone())
                .startup_timeout(Duration::from_secs(5))
                .connect()
        };
        let sources = tokio::try_join!(
            connect(&bookstore_agent, &policy.server_id),
            connect(&client_agent, &client_id),
            connect(&client_agent, &neighbour_id),
            connect(&intruder_agent, &intruder_id),
        );
        let (server, client, neighbour, intruder) =
            sources.map_err(|e| Error::tls("an SVID from an agent's Workload API", e))?;
        Ok(Self {
            server,
            client,
            neighbour,
            intruder,
            bookstore_agent,
            client_agent,
            intruder_agent,
            policy: policy.clone(),
            client_id,
            neighbour_id,
            intruder_id,
            refresh_hint,
            dir,
        })
    }

    /// `bookstore.local`'s agent (the replicas' and server sidecars' SVIDs, its CA).
    pub fn bookstore_agent(&self) -> &Agent {
        &self.bookstore_agent
    }

    /// `client.local`'s agent (the client's, its sidecar's and the neighbour's SVIDs).
    pub fn client_agent(&self) -> &Agent {
        &self.client_agent
    }

    /// `intruder.local`'s agent (federated with nobody).
    pub fn intruder_agent(&self) -> &Agent {
        &self.intruder_agent
    }

    /// The refresh hint both bundle endpoints serve.
    pub fn refresh_hint(&self) -> Duration {
        self.refresh_hint
    }

    /// The SPIFFE ID `caller` holds.
    pub fn caller_id(&self, caller: BookstoreCaller) -> &SpiffeId {
        match caller {
            BookstoreCaller::Client => &self.client_id,
            BookstoreCaller::Neighbour => &self.neighbour_id,
            BookstoreCaller::Unfederated => &self.intruder_id,
        }
    }

    /// The Workload API source `caller` uses for its SVID (and, but for the unfederated
    /// caller, its trust: own domain + federated).
    pub fn caller_source(&self, caller: BookstoreCaller) -> &WorkloadApiSource {
        match caller {
            BookstoreCaller::Client => &self.client,
            BookstoreCaller::Neighbour => &self.neighbour,
            BookstoreCaller::Unfederated => &self.intruder,
        }
    }

    /// `caller`'s client configuration towards the bookstore (server ID checked): its SVID
    /// from its agent; trust from its agent too (own and federated bundles), except for the
    /// unfederated caller, which is handed `bookstore.local`'s bundle as it is now — it
    /// accepts the bookstore, so only the bookstore's refusal can stop it.
    pub fn caller_tls(&self, caller: BookstoreCaller) -> Result<rustls::ClientConfig> {
        let source = self.caller_source(caller).clone();
        let trust: Arc<dyn TrustSource> = match caller {
            BookstoreCaller::Unfederated => Arc::new(Arc::new(
                TrustBundle::spiffe()
                    .add_domain_pem(
                        self.policy.trust_domain.clone(),
                        self.bookstore_agent.bundle_pem(),
                    )
                    .map_err(|e| Error::tls("bookstore.local's bundle", e))?,
            )),
            BookstoreCaller::Client | BookstoreCaller::Neighbour => Arc::new(source.clone()),
        };
        ClientConfigBuilder::new(source, trust)
            .authorize(self.policy.client_authorizer())
            .tls_policy(self.policy.tls.clone())
            .build()
            .map_err(|e| Error::tls(format!("building the {caller}'s TLS configuration"), e))
    }

    /// The directory of the agents' sockets and state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for FederatedDomains {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedDomains")
            .field("bookstore_agent", &self.bookstore_agent)
            .field("client_agent", &self.client_agent)
            .field("intruder_agent", &self.intruder_agent)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentities for FederatedDomains {
    fn identity(&self, workload: Workload) -> Result<Arc<dyn IdentitySource>> {
        let source = match workload {
            Workload::Bookstore => &self.server,
            Workload::Client => &self.client,
            Workload::Intruder => &self.intruder,
        };
        let source: Arc<dyn IdentitySource> = Arc::new(source.clone());
        Ok(source)
    }

    fn trust(&self) -> Result<Arc<dyn TrustSource>> {
        // The replicas': bookstore.local and the federated client.local.
        let trust: Arc<dyn TrustSource> = Arc::new(self.server.clone());
        Ok(trust)
    }

    fn envoy_certs(&self, workload: Workload) -> Result<CertSource> {
        // Each sidecar validates its peer with the *other* domain's bundle, pushed over SDS
        // by its own agent as `spiffe://<other domain>`.
        let (agent, node_id, certificate, peer_domain) = match workload {
            Workload::Bookstore => (
                &self.bookstore_agent,
                SERVER_SIDECAR_NODE_ID,
                &self.policy.server_id,
                self.client_id.trust_domain(),
            ),
            Workload::Client => (
                &self.client_agent,
                CLIENT_SIDECAR_NODE_ID,
                &self.client_id,
                &self.policy.trust_domain,
            ),
            Workload::Intruder => {
                return Err(Error::Config(
                    "the unfederated workload has no sidecar registered with an agent".into(),
                ));
            }
        };
        let socket = agent.sds_socket().ok_or_else(|| {
            Error::Config(format!("{}'s agent serves no SDS", agent.trust_domain()))
        })?;
        Ok(CertSource::Sds {
            socket: socket.to_path_buf(),
            node_id: node_id.to_owned(),
            certificate: certificate.to_string(),
            validation: format!("spiffe://{peer_domain}"),
        })
    }

    fn describe(&self) -> String {
        let endpoint = |agent: &Agent| {
            agent
                .bundle_endpoint_addr()
                .map(|a| format!("https://{a}/"))
                .unwrap_or_default()
        };
        format!(
            "three mtls-agents in process in {}, one CA each: {} (bundle endpoint {} https_spiffe as {BOOKSTORE_ENDPOINT_ID}) \
             <-> {} (bundle endpoint {} https_web), refresh hint {:?}; {} federated with nobody",
            self.dir.display(),
            self.bookstore_agent.trust_domain(),
            endpoint(&self.bookstore_agent),
            self.client_agent.trust_domain(),
            endpoint(&self.client_agent),
            self.refresh_hint,
            self.intruder_agent.trust_domain(),
        )
    }

    fn issued_serial(&self, workload: Workload) -> Option<String> {
        match workload {
            Workload::Bookstore => self.bookstore_agent.serial_of(&self.policy.server_id),
            Workload::Client => self.client_agent.serial_of(&self.client_id),
            Workload::Intruder => self.intruder_agent.serial_of(&self.intruder_id),
        }
    }
}

/// A loopback port free now (the agent binds it a moment later).
fn free_loopback_port() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| Error::io("finding a free loopback port", e))?;
    probe
        .local_addr()
        .map_err(|e| Error::io("reading a listener's address", e))
}

/// Waits until `agent` has installed a bundle of `td` fetched from its endpoint.
async fn wait_fetched(agent: &Agent, td: &TrustDomain, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let fetched = agent
            .federated_bundles()
            .get(td)
            .is_some_and(|b| b.sequence().is_some());
        if fetched {
            return Ok(());
        }
        if Instant::now() > deadline {
            let status = agent.federation_status(td);
            let why = match status.as_ref().and_then(|s| s.last_error.as_deref()) {
                Some(error) => format!("the last attempt failed: {error}"),
                None if status.is_some() => "fetched, nothing installed".to_owned(),
                None => "no attempt finished".to_owned(),
            };
            return Err(Error::Config(format!(
                "{}'s agent fetched no bundle of {td} within {timeout:?}, expected one from its bundle endpoint; {why}",
                agent.trust_domain(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
