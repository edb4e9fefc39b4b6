//! Configuration, start-up and the running agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls_certs::CertificateAuthority;
use mtls_identity::{SpiffeId, TrustDomain};
use mtls_jwt::{Algorithm, SigningKey};
use tokio::task::JoinHandle;

use crate::conn::{self, Admission, Socket, TrackCallsLayer};
use crate::error::{Error, Result};
use crate::files::BoundSocket;
use crate::issuer::{self, Issuer};
use crate::limits::{Limits, MAX_LOCAL_ERROR_RESETS, MAX_PENDING_ACCEPT_RESETS, RECEIVE_WINDOW};
use crate::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use crate::pb::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::registration::Registration;
use crate::sds::Sds;
use crate::workload::WorkloadApi;

/// Default X509-SVID lifetime (SPIRE's default): rotated at half of it.
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default JWT-SVID lifetime.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// What the agent serves and with which keys.
///
/// ```
/// use mtls_agent::{AgentConfig, Registration};
/// let config = AgentConfig::new(
///     "example.org".parse()?,
///     "/run/mtls-agent/workload.sock",
///     Registration::from_yaml("entries: [{spiffe_id: 'spiffe://example.org/web', selectors: {uid: 1000}}]")?,
/// )
/// .sds_socket("/run/mtls-agent/sds.sock")
/// .state_dir("/var/lib/mtls-agent")
/// .svid_ttl(std::time::Duration::from_secs(600));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AgentConfig {
    trust_domain: TrustDomain,
    workload_socket: PathBuf,
    sds_socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    ca: Option<CertificateAuthority>,
    jwt_key: Option<SigningKey>,
    svid_ttl: Duration,
    jwt_ttl: Duration,
    registration: Registration,
    registration_file: Option<PathBuf>,
    limits: Limits,
    deliveries: Vec<crate::delivery::Delivery>,
    serve_bundle: Option<crate::bundle_endpoint::ServeConfig>,
    federate: Vec<mtls_core::BundleEndpoint>,
    ca_activation_delay: Option<Duration>,
    rotate_ca_every: Option<Duration>,
}

impl AgentConfig {
    /// Serve the Workload API for `trust_domain` on `workload_socket`, granting identities
    /// per `registration`. Without a CA or state directory, a fresh in-memory CA is made.
    pub fn new(
        trust_domain: TrustDomain,
        workload_socket: impl Into<PathBuf>,
        registration: Registration,
    ) -> Self {
        Self {
            trust_domain,
            workload_socket: workload_socket.into(),
            sds_socket: None,
            state_dir: None,
            ca: None,
            jwt_key: None,
            svid_ttl: DEFAULT_SVID_TTL,
            jwt_ttl: DEFAULT_JWT_TTL,
            registration,
            registration_file: None,
            limits: Limits::default(),
            deliveries: Vec::new(),
            serve_bundle: None,
            federate: Vec::new(),
            ca_activation_delay: None,
            rotate_ca_every: None,
        }
    }

    /// Also serve Envoy SDS on this Unix socket.
    pub fn sds_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.sds_socket = Some(path.into());
        self
    }

    /// Keep the CA (`ca.pem`, `ca-key.pem`) and JWT key (`jwt-key.pem`) here, created on
    /// first run (keys mode 0600) and reused after.
    ///
    /// The directory must be the agent's own: owned by its effective uid, not writable by
    /// group or others, under parents only root or the agent can change (sticky ones such as
    /// `/tmp` are fine). Otherwise [`Agent::start`] refuses with
    /// [`Error::InsecurePath`](crate::Error::InsecurePath) naming the path and the fix —
    /// another user's directory could hold *their* CA. A missing directory is created 0700.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Issue from this CA (takes precedence over the state directory's).
    pub fn ca(mut self, ca: CertificateAuthority) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Sign JWT-SVIDs with this key (takes precedence over the state directory's).
    pub fn jwt_key(mut self, key: SigningKey) -> Self {
        self.jwt_key = Some(key);
        self
    }

    /// X509-SVID lifetime (default 1 h); rotation happens at half of it.
    pub fn svid_ttl(mut self, ttl: Duration) -> Self {
        self.svid_ttl = ttl;
        self
    }

    /// JWT-SVID lifetime (default 5 min).
    pub fn jwt_ttl(mut self, ttl: Duration) -> Self {
        self.jwt_ttl = ttl;
        self
    }

    /// Bounds on connections, HTTP/2, requests and audiences (see [`Limits`] for every one
    /// and its default).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Also write `delivery`'s SVID and the trust bundles as files (SPIFFE Filesystem
    /// Delivery), rewritten atomically on every rotation; see [`Delivery`](crate::Delivery).
    /// The first files are written before [`Agent::start`] returns.
    pub fn deliver(mut self, delivery: crate::delivery::Delivery) -> Self {
        self.deliveries.push(delivery);
        self
    }

    /// Serve our trust domain's SPIFFE bundle endpoint on `addr` (TCP; port 0 picks one,
    /// see [`Agent::bundle_endpoint_addr`]) with `profile`, telling clients to refresh every
    /// `refresh_hint`.
    pub fn serve_bundle_endpoint(
        mut self,
        addr: std::net::SocketAddr,
        profile: crate::bundle_endpoint::ServeProfile,
        refresh_hint: Duration,
    ) -> Self {
        self.serve_bundle = Some(crate::bundle_endpoint::ServeConfig {
            addr,
            profile,
            refresh_hint,
        });
        self
    }

    /// Federate with a foreign trust domain: fetch its bundle from `endpoint` (kept current
    /// by `mtls_core::FederatedTrustSource`) and hand it to workloads (Workload API
    /// `federated_bundles`, X.509 and JWT bundles), to Envoy (SDS `spiffe://<td>`) and to
    /// delivered files.
    pub fn federate_with(mut self, endpoint: mtls_core::BundleEndpoint) -> Self {
        self.federate.push(endpoint);
        self
    }

    /// How long a new CA is only *in the bundle* before it issues SVIDs, on every
    /// [`Agent::rotate_ca`] (SPIRE's "prepared" phase: peers fetch the new root first).
    ///
    /// Default: the refresh hint of the served bundle endpoint
    /// ([`serve_bundle_endpoint`](Self::serve_bundle_endpoint)), so every federated peer
    /// polling at the hint has the new root before any SVID chains to it; zero without a
    /// bundle endpoint (the Workload API, SDS and delivered files get the new bundle pushed
    /// in the same instant). `Duration::ZERO` activates at once.
    ///
    /// ```
    /// # let registration = mtls_agent::Registration::from_yaml("entries: []")?;
    /// let config = mtls_agent::AgentConfig::new("example.org".parse()?, "/tmp/a.sock", registration)
    ///     .ca_activation_delay(std::time::Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ca_activation_delay(mut self, delay: Duration) -> Self {
        self.ca_activation_delay = Some(delay);
        self
    }

    /// Rotate the CA ([`Agent::rotate_ca`]) every `every` (off by default; the binary's
    /// `--rotate-ca-every`). Must be longer than the
    /// [activation delay](Self::ca_activation_delay).
    ///
    /// ```
    /// # let registration = mtls_agent::Registration::from_yaml("entries: []")?;
    /// let config = mtls_agent::AgentConfig::new("example.org".parse()?, "/tmp/a.sock", registration)
    ///     .rotate_ca_every(std::time::Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rotate_ca_every(mut self, every: Duration) -> Self {
        self.rotate_ca_every = Some(every);
        self
    }

    /// The file the registration came from, re-read by [`Agent::reload_registration`].
    pub fn registration_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.registration_file = Some(path.into());
        self
    }
}

/// A running agent. Dropping it stops serving and removes its socket files (only if the
/// paths still name the sockets it bound).
///
/// Each socket's directory must be the agent's own, like the
/// [state directory](AgentConfig::state_dir) (a missing one is created 0755, so that every
/// local user can reach the socket); a socket path another process is serving makes
/// [`Agent::start`] fail instead of taking it over.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use mtls_agent::{Agent, AgentConfig, Registration};
/// let registration = Registration::from_file("registration.yaml")?;
/// let agent = Agent::start(
///     AgentConfig::new("example.org".parse()?, "/tmp/agent/workload.sock", registration)
///         .sds_socket("/tmp/agent/sds.sock"),
/// )
/// .await?;
/// // workloads: SPIFFE_ENDPOINT_SOCKET=unix:///tmp/agent/workload.sock
/// agent.rotate_now()?; // every open stream gets the new SVIDs
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Agent {
    issuer: Arc<Issuer>,
    workload_socket: BoundSocket,
    sds_socket: Option<BoundSocket>,
    registration_file: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    bundle_endpoint: Option<std::net::SocketAddr>,
    federation: Option<mtls_core::FederatedTrustSource>,
    ca_activation_delay: Duration,
}

impl Agent {
    /// Loads or creates the CA, issues the first SVIDs, binds the sockets and serves.
    /// Needs a tokio runtime.
    pub async fn start(config: AgentConfig) -> Result<Self> {
        let started = Instant::now();
        if config.svid_ttl < Duration::from_secs(2) {
            return Err(Error::Config {
                reason: format!(
                    "svid_ttl {:?} is too short; expected at least 2 s",
                    config.svid_ttl
                ),
            });
        }
        let ca_activation_delay = config.ca_activation_delay.unwrap_or_else(|| {
            config
                .serve_bundle
                .as_ref()
                .map_or(Duration::ZERO, |s| s.refresh_hint)
        });
        if let Some(every) = config.rotate_ca_every
            && every <= ca_activation_delay
        {
            return Err(Error::Config {
                reason: format!(
                    "rotate_ca_every {every:?} is not longer than the CA activation delay \
                     {ca_activation_delay:?}; expected a longer interval (or a shorter delay)"
                ),
            });
        }
        let (state_ca, state_key) = match &config.state_dir {
            Some(dir) => {
                let (ca, key) = issuer::load_or_create_state(dir, &config.trust_domain)?;
                (Some(ca), Some(key))
            }
            None => (None, None),
        };
        // A CA given in code is not stored: a rotation stores the new one only over the
        // state directory's own.
        let store_rotated = if config.ca.is_none() {
            config.state_dir.clone()
        } else {
            None
        };
        let ca = match config.ca.or(state_ca) {
            Some(ca) => ca,
            None => {
                tracing::warn!(
                    "no CA and no state directory given: using an in-memory CA for this run"
                );
                issuer::new_ca(&config.trust_domain)?
            }
        };
        let jwt_key = match config.jwt_key.or(state_key) {
            Some(k) => k,
            None => SigningKey::generate(Algorithm::ES256)?,
        };
        let issuer = Issuer::new(
            ca,
            jwt_key,
            config.trust_domain.clone(),
            config.svid_ttl,
            config.jwt_ttl,
            config.registration,
            store_rotated,
        )?;

        // The first files before anything is served or bound: a failure leaves nothing running.
        for delivery in &config.deliveries {
            crate::delivery::first_delivery(&issuer, delivery)?;
        }

        // Bind both sockets before serving either: a failed start leaves no socket behind
        // (the guards remove what was bound).
        let (listener, workload_socket) =
            crate::files::bind(&config.workload_socket, "the Workload API socket")?;
        let sds_bound = match &config.sds_socket {
            Some(path) => Some(crate::files::bind(path, "the SDS socket")?),
            None => None,
        };
        let mut tasks = Vec::new();
        let limits = Arc::new(config.limits);
        let admission = Admission::new(&limits);
        let workload = SpiffeWorkloadApiServer::new(WorkloadApi {
            issuer: Arc::clone(&issuer),
            limits: Arc::clone(&limits),
        })
        .max_decoding_message_size(limits.max_request_size);
        // Workload API connections go through the :authority rewriter (gRPC C-core, Java
        // and Swift clients send the socket path there; see authority.rs).
        tasks.push(serve(
            server_builder(&limits).add_service(workload),
            conn::incoming(
                listener,
                Socket {
                    what: "Workload API",
                    rewrite_authority: true,
                },
                Arc::clone(&admission),
                Arc::clone(&limits),
            ),
            "Workload API",
        ));
        let sds_socket = match sds_bound {
            Some((listener, bound)) => {
                let sds = SecretDiscoveryServiceServer::new(Sds {
                    issuer: Arc::clone(&issuer),
                    limits: Arc::clone(&limits),
                })
                .max_decoding_message_size(limits.max_sds_request_size);
                tasks.push(serve(
                    server_builder(&limits).add_service(sds),
                    conn::incoming(
                        listener,
                        Socket {
                            what: "SDS",
                            rewrite_authority: false,
                        },
                        Arc::clone(&admission),
                        Arc::clone(&limits),
                    ),
                    "SDS",
                ));
                Some(bound)
            }
            None => None,
        };
        for delivery in config.deliveries {
            tasks.push(tokio::spawn(crate::delivery::delivery_task(
                Arc::clone(&issuer),
                delivery,
            )));
        }
        let bundle_endpoint = match config.serve_bundle {
            Some(serve) => {
                let (addr, task) =
                    crate::bundle_endpoint::start(Arc::clone(&issuer), serve).await?;
                tasks.push(task);
                Some(addr)
            }
            None => None,
        };
        let federation = if config.federate.is_empty() {
            None
        } else {
            let mut builder = mtls_core::FederatedTrustSource::builder();
            for endpoint in config.federate {
                builder = builder.endpoint(endpoint);
            }
            let source = builder.start().map_err(|e| Error::Config {
                reason: format!("federation: {e}"),
            })?;
            let mut rx = source.subscribe_bundles();
            let to = Arc::clone(&issuer);
            tasks.push(tokio::spawn(async move {
                loop {
                    let set = rx.borrow_and_update().clone();
                    to.set_federated(&set);
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }));
            Some(source)
        };
        tasks.push(tokio::spawn(issuer::rotation_task(Arc::clone(&issuer))));
        tasks.push(tokio::spawn(issuer::ca_task(
            Arc::clone(&issuer),
            config.rotate_ca_every,
            ca_activation_delay,
        )));
        tracing::info!(
            trust_domain = %config.trust_domain,
            workload_api = %config.workload_socket.display(),
            sds = ?config.sds_socket,
            svid_ttl = ?config.svid_ttl,
            ca = %issuer.ca().subject(),
            startup = ?started.elapsed(),
            "mtls-agent ready"
        );
        Ok(Self {
            issuer,
            workload_socket,
            sds_socket,
            registration_file: config.registration_file,
            tasks,
            bundle_endpoint,
            federation,
            ca_activation_delay,
        })
    }

    /// Rotates the CA the way SPIRE does: *prepared*, *active*, *retired*.
    ///
    /// 1. A new CA is made for the same trust domain with the same key algorithm, and
    ///    our bundle — old and new roots — is published at once with `spiffe_sequence` + 1
    ///    to every consumer: the Workload API (`X509SVIDResponse.bundle`,
    ///    FetchX509Bundles), SDS (`spiffe://<td>`, `ROOTCA`, `ALL`), delivered trust-bundle
    ///    files and the bundle endpoint (federated peers take it at their next poll). The
    ///    old CA keeps issuing.
    /// 2. After the [activation delay](AgentConfig::ca_activation_delay) (at once, before
    ///    this returns, if it is zero) the new CA becomes active: every SVID is reissued from
    ///    it and pushed. With a [state directory](AgentConfig::state_dir) (and no CA given
    ///    in code), the new CA replaces `ca.pem`/`ca-key.pem` first.
    /// 3. The old root stays in the bundle until every SVID it issued has expired (one
    ///    `svid_ttl` after activation), then leaves it (`spiffe_sequence` + 1 again);
    ///    [`retire_old_cas`](Self::retire_old_cas) does that at once.
    ///
    /// A rotation still prepared when this is called is activated first. The JWT-SVID key
    /// is not rotated. The bundle endpoint's own `https_spiffe` SVID is issued by the
    /// *oldest* CA in the bundle, so a peer that has not fetched the new root yet can still
    /// authenticate the endpoint.
    ///
    /// Returns the `spiffe_sequence` of the bundle carrying the new root. Fails if the CA is
    /// an intermediate of an upstream CA (the agent cannot mint its successor).
    ///
    /// ```no_run
    /// # async fn f(agent: mtls_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// let before = agent.bundle_sequence();
    /// let sequence = agent.rotate_ca()?;
    /// assert!(sequence > before);
    /// assert_eq!(agent.bundle_roots_pem().len(), 2); // old and new, during the overlap
    /// # Ok(()) }
    /// ```
    pub fn rotate_ca(&self) -> Result<u64> {
        self.issuer.rotate_ca(self.ca_activation_delay)
    }

    /// Activates the CA [`rotate_ca`](Self::rotate_ca) prepared now, without waiting for
    /// the [activation delay](AgentConfig::ca_activation_delay) (e.g. once every peer is
    /// known to have the new root). Returns whether there was one.
    ///
    /// ```no_run
    /// # async fn f(agent: mtls_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// let old = agent.ca().subject().to_owned();
    /// agent.rotate_ca()?;
    /// agent.activate_prepared_ca()?;
    /// assert_ne!(agent.ca().subject(), old);
    /// # Ok(()) }
    /// ```
    pub fn activate_prepared_ca(&self) -> Result<bool> {
        self.issuer.activate_now()
    }

    /// Removes every former CA's root from the bundle now, without waiting for its SVIDs to
    /// expire (peers then refuse SVIDs it issued that are still alive). Returns the new
    /// `spiffe_sequence`, or `None` if there was nothing to retire. A prepared CA stays.
    ///
    /// ```no_run
    /// # async fn f(agent: mtls_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// agent.rotate_ca()?;
    /// agent.retire_old_cas();
    /// assert_eq!(agent.bundle_roots_pem().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn retire_old_cas(&self) -> Option<u64> {
        self.issuer.retire(true)
    }

    /// The `spiffe_sequence` of our bundle now: the start time (Unix seconds) at start,
    /// +1 on every change ([`rotate_ca`](Self::rotate_ca), retirement).
    pub fn bundle_sequence(&self) -> u64 {
        self.issuer.current().bundle_sequence
    }

    /// The roots of our bundle now, PEM, one per CA, oldest first: one outside a CA
    /// rotation, two (or more) during one.
    pub fn bundle_roots_pem(&self) -> Vec<String> {
        self.issuer.current().bundle_root_pems.clone()
    }

    /// Issues new SVIDs for every registered ID now and pushes them on every open
    /// Workload API and SDS stream. Returns the new generation (also the SDS version).
    pub fn rotate_now(&self) -> Result<u64> {
        self.issuer.rotate("requested")
    }

    /// Re-reads the registration file (if one was configured) and reissues.
    pub fn reload_registration(&self) -> Result<u64> {
        match &self.registration_file {
            Some(path) => self.issuer.set_registration(Registration::from_file(path)?),
            None => self.rotate_now(),
        }
    }

    /// The generation of the current SVID set (starts at 1, +1 per rotation).
    pub fn generation(&self) -> u64 {
        self.issuer.current().generation
    }

    /// Serial (colon-separated hex) of the current SVID of `id`.
    pub fn serial_of(&self, id: &SpiffeId) -> Option<String> {
        self.issuer.current().svid(id).map(|s| s.serial_hex.clone())
    }

    /// Waits until the generation is at least `generation`.
    pub async fn wait_for_generation(&self, generation: u64) {
        let mut rx = self.issuer.subscribe();
        let _ = rx.wait_for(|s| s.generation >= generation).await;
    }

    /// The trust bundle (our trust domain's roots: two during a CA rotation), PEM.
    pub fn bundle_pem(&self) -> String {
        self.issuer.current().bundle_pem.clone()
    }

    /// The address of our bundle endpoint, if one is served.
    pub fn bundle_endpoint_addr(&self) -> Option<std::net::SocketAddr> {
        self.bundle_endpoint
    }

    /// What the federation knows of `trust_domain`'s bundle endpoint: the last fetch, the
    /// last failure (the last good bundle stays in use) and failures in a row; `None` before
    /// the first attempt, or if we do not federate with that domain.
    pub fn federation_status(
        &self,
        trust_domain: &TrustDomain,
    ) -> Option<mtls_core::EndpointStatus> {
        self.federation.as_ref()?.status(trust_domain)
    }

    /// The federated trust domains' bundles now (empty without federation).
    pub fn federated_bundles(&self) -> mtls_core::BundleSet {
        self.federation
            .as_ref()
            .map(|f| {
                f.bundles()
                    .iter()
                    .filter(|b| b.trust_domain() != self.trust_domain())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The trust domain served.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.issuer.trust_domain()
    }

    /// The CA issuing SVIDs now (a new one after [`rotate_ca`](Self::rotate_ca) activates).
    pub fn ca(&self) -> Arc<CertificateAuthority> {
        self.issuer.ca()
    }

    /// The Workload API endpoint as workloads spell it: `unix:///path`.
    pub fn workload_endpoint(&self) -> String {
        format!("unix://{}", absolute(self.workload_socket.path()).display())
    }

    /// The Workload API socket path.
    pub fn workload_socket(&self) -> &Path {
        self.workload_socket.path()
    }

    /// The SDS socket path, if SDS is served.
    pub fn sds_socket(&self) -> Option<&Path> {
        self.sds_socket.as_ref().map(BoundSocket::path)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // The BoundSocket fields remove their files when dropped after this.
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_owned(), |d| d.join(p))
    }
}

/// A tonic server with every HTTP/2 limit set on purpose (see [`Limits`]).
fn server_builder(
    limits: &Limits,
) -> tonic::transport::Server<tower_layer::Stack<TrackCallsLayer, tower_layer::Identity>> {
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_size)
        .max_frame_size(crate::authority::MAX_FRAME_SIZE as u32)
        .initial_connection_window_size(RECEIVE_WINDOW)
        .initial_stream_window_size(RECEIVE_WINDOW)
        // tonic passes "no limit" to hyper unless told (RUSTSEC-2024-0003 class: streams the
        // client makes us reset); these are h2's own defaults, set on purpose.
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .layer(TrackCallsLayer)
}

fn serve(
    router: tonic::transport::server::Router<
        tower_layer::Stack<TrackCallsLayer, tower_layer::Identity>,
    >,
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<conn::PeerConn>>,
    what: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "{what} server stopped");
        }
    })
}
