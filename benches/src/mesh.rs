//! The bookstore scenarios: `plain-tonic`, `proxyless` and `envoy`, each calling
//! `GetBook(shelf 1, book 1)` on replicas that are separate processes (this executable's
//! `serve-bookstore` subcommand), built from the bookstore example's pieces: [`MeshPki`],
//! [`MeshPolicy`], [`MeshDns`], `server::spawn`, and the Envoy sidecar bootstraps.
//!
//! Points are interleaved so that each pair compared in BENCHMARKS.md is measured back to
//! back: for each replica count, both meshes are up and, at each concurrency, `proxyless`
//! then `envoy` (then `plain-tonic`, at 3 replicas or the first count) are measured.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore::envoy::{CertSource, ClientSidecar, ServerSidecar};
use bookstore::proto::GetBookRequest;
use bookstore::proto::bookstore_client::BookstoreClient;
use bookstore::{AUDIENCE, MeshDns, MeshPki, MeshPolicy};
use mtls_tonic::{balance::BalancedChannel, client::MtlsConnector};
use tonic::metadata::{Ascii, MetadataValue};

use crate::child::{ChildProcess, Measured, Role};
use crate::driver::{CallFn, PointLabel, measure};
use crate::envoy::Envoy;
use crate::error::{Error, Result};
use crate::result::PointResult;
use crate::scenario::{RunOptions, Scenario};

/// How a replica process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum ReplicaMode {
    /// mtls-tonic: mTLS (client certificate required, SPIFFE authorization), per-method
    /// authorization and JWT validation — `bookstore::server::spawn` with `Security::Mtls`.
    Mtls,
    /// Plaintext on loopback, behind an Envoy sidecar (`Security::Plaintext`).
    Plaintext,
    /// tonic's own TLS (`ServerTlsConfig`, server authentication only), no JWT.
    TonicTls,
    /// tonic's own TLS with client certificates required, and a hand-written interceptor
    /// checking the caller and its token ([`crate::handrolled`]).
    TonicMtls,
    /// `MtlsIncoming` alone: no `AuthzLayer`, no `JwtLayer` (the per-layer harness).
    MtlsBare,
    /// `MtlsIncoming` + `JwtLayer`, no `AuthzLayer` (the per-layer harness).
    MtlsJwt,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn bs(e: bookstore::Error) -> Error {
    Error::Pki(e.to_string())
}

/// Serves one replica named `name` on `listen` until killed (the `serve-bookstore`
/// subcommand). Prints `READY <addr>` once listening. With `max_connection_age` (mode
/// `mtls` only), every connection is recycled at that age (GOAWAY, then a 10 s grace).
pub async fn serve_replica(
    dir: &Path,
    mode: ReplicaMode,
    listen: SocketAddr,
    name: &str,
    max_connection_age: Option<Duration>,
) -> Result<()> {
    use std::io::Write;
    let policy = MeshPolicy::bookstore();
    // The mesh's PKI, as the load generator's `MeshPki::create` wrote it.
    let pki = MeshPki::open(dir, &policy).map_err(bs)?;
    // Every scenario's replicas answer the same bytes: no caller/TLS echo (the demo's), which
    // only the mTLS transports could fill in.
    let service = bookstore::BookstoreService::new(bookstore::Store::seeded(), name)
        .map_err(bs)?
        .echo_caller(false);
    let listener = bookstore::server::bind(listen, mode == ReplicaMode::Plaintext)
        .await
        .map_err(bs)?;
    let addr = listener.local_addr().map_err(Error::io("local_addr"))?;
    let ready = || {
        println!("READY {addr}");
        let _ = std::io::stdout().flush();
    };
    match mode {
        ReplicaMode::Mtls | ReplicaMode::Plaintext => {
            let security = if mode == ReplicaMode::Mtls {
                let validator = policy
                    .validator(mtls_jwt::JwksSource::inline(pki.jwks_json().to_owned()))
                    .map_err(bs)?;
                bookstore::Security::Mtls {
                    tls: Arc::new(pki.server_config().map_err(bs)?),
                    policy: policy.method_policy().map_err(bs)?,
                    jwt: Some((validator, policy.jwt_rules().map_err(bs)?)),
                }
            } else {
                bookstore::Security::Plaintext
            };
            let mut options = mtls_tonic::server::ServerOptions::default();
            if let Some(age) = max_connection_age {
                options = options.max_connection_age(Some(mtls_tonic::server::ConnectionAge::new(
                    age,
                    RECYCLE_GRACE,
                )));
            }
            let handle =
                bookstore::server::spawn_with(listener, service, security, options).map_err(bs)?;
            ready();
            handle.wait().await.map_err(bs)
        }
        ReplicaMode::MtlsBare | ReplicaMode::MtlsJwt => {
            use mtls_tonic::{
                jwt::JwtLayer,
                server::{MtlsIncoming, ServerOptions},
            };
            let options = ServerOptions::default();
            let tls = Arc::new(pki.server_config().map_err(bs)?);
            let incoming = MtlsIncoming::configured(listener, tls, options.clone());
            let bookstore = bookstore::proto::bookstore_server::BookstoreServer::new(service);
            ready();
            let served = if mode == ReplicaMode::MtlsJwt {
                let validator = policy
                    .validator(mtls_jwt::JwksSource::inline(pki.jwks_json().to_owned()))
                    .map_err(bs)?;
                options
                    .server()
                    .layer(call_metrics())
                    .layer(JwtLayer::new(validator, policy.jwt_rules().map_err(bs)?))
                    .add_service(bookstore)
                    .serve_with_incoming(incoming)
                    .await
            } else {
                options
                    .server()
                    .layer(call_metrics())
                    .add_service(bookstore)
                    .serve_with_incoming(incoming)
                    .await
            };
            served.map_err(|e| Error::Io {
                context: format!("serving {addr}"),
                source: std::io::Error::other(e),
            })
        }
        ReplicaMode::TonicTls | ReplicaMode::TonicMtls => {
            let identity = tonic::transport::Identity::from_pem(
                read(&pki.server().cert)?,
                read(&pki.server().key)?,
            );
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
            if mode == ReplicaMode::TonicMtls {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
                    pki.bundle_path(),
                )?));
            }
            let mut server = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| Error::Pki(format!("tonic TLS: {e}")))?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = if mode == ReplicaMode::TonicMtls {
                let check = crate::handrolled::Interceptor::new(
                    pki.jwks_json(),
                    &policy.issuer,
                    &policy.audience,
                    policy
                        .allowed_clients
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                )?;
                ready();
                server
                    .add_service(
                        bookstore::proto::bookstore_server::BookstoreServer::with_interceptor(
                            service,
                            move |r| check.check(r),
                        ),
                    )
                    .serve_with_incoming(incoming)
                    .await
            } else {
                ready();
                server
                    .add_service(bookstore::proto::bookstore_server::BookstoreServer::new(
                        service,
                    ))
                    .serve_with_incoming(incoming)
                    .await
            };
            served.map_err(|e| Error::Io {
                context: format!("serving {addr}"),
                source: std::io::Error::other(e),
            })
        }
    }
}

/// `GetBook(1, 1)` over `client`, with `token` as a bearer token when given.
pub(crate) fn get_book<T>(client: BookstoreClient<T>, token: Option<MetadataValue<Ascii>>) -> CallFn
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::Future: Send,
{
    Arc::new(move |_worker| {
        let mut client = client.clone();
        let token = token.clone();
        Box::pin(async move {
            let mut request = tonic::Request::new(GetBookRequest { shelf: 1, book: 1 });
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", token);
            }
            client
                .get_book(request)
                .await
                .map(|_| ())
                .map_err(|s| format!("GetBook: {:?}: {}", s.code(), s.message()))
        })
    })
}

/// Calls until one succeeds (replicas and proxies up, every connection made), or fails
/// after `timeout` with the last error.
pub(crate) async fn wait_until_serving(call: &CallFn, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match call(0).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(Error::Child {
                    role: what.to_owned(),
                    reason: format!("no successful call within {timeout:?}; last error: {e}"),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A port that is free on every address in `ips` at once (DNS A records carry no port, so
/// all replicas of a service share one).
pub fn shared_free_port(ips: &[Ipv4Addr]) -> Result<u16> {
    for _ in 0..100 {
        let Ok(first) = std::net::TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        let all_free = ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok());
        if all_free {
            return Ok(port);
        }
    }
    Err(Error::Io {
        context: format!("finding a port free on all of {ips:?}"),
        source: std::io::Error::other("none found in 100 tries"),
    })
}

/// Replica addresses 127.0.0.2, .3, ...
pub(crate) fn replica_ips(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).unwrap_or(u8::MAX - 2)))
        .collect()
}

/// The grace after a recycling GOAWAY, on both paths (calls here last milliseconds).
const RECYCLE_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn spawn_replica(
    opts: &RunOptions,
    mode: ReplicaMode,
    listen: SocketAddr,
    name: &str,
) -> Result<ChildProcess> {
    spawn_replica_with(opts, mode, listen, name, None)
}

/// [`spawn_replica`], recycling every connection at `max_connection_age` when set.
pub(crate) fn spawn_replica_with(
    opts: &RunOptions,
    mode: ReplicaMode,
    listen: SocketAddr,
    name: &str,
    max_connection_age: Option<Duration>,
) -> Result<ChildProcess> {
    let mut command = Command::new(&opts.server_exe);
    command
        .arg("serve-bookstore")
        .arg("--dir")
        .arg(opts.dir.join("mesh"))
        .arg("--mode")
        .arg(match mode {
            ReplicaMode::Mtls => "mtls",
            ReplicaMode::Plaintext => "plaintext",
            ReplicaMode::TonicTls => "tonic-tls",
            ReplicaMode::TonicMtls => "tonic-mtls",
            ReplicaMode::MtlsBare => "mtls-bare",
            ReplicaMode::MtlsJwt => "mtls-jwt",
        })
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--name")
        .arg(name)
        .arg("--threads")
        .arg(opts.server_threads.to_string());
    if let Some(age) = max_connection_age {
        command
            .arg("--max-connection-age")
            .arg(format!("{}ms", age.as_millis()));
    }
    let (child, _) =
        ChildProcess::spawn_ready(name, Role::Server, command, Duration::from_secs(30))?;
    Ok(child)
}

/// The processes of one `envoy` mesh: replicas, their sidecars, the client sidecar.
struct EnvoyMesh {
    replicas: Vec<ChildProcess>,
    sidecars: Vec<Envoy>,
    client_sidecar: Envoy,
    call: CallFn,
}

impl EnvoyMesh {
    fn measured(&self) -> Vec<Measured> {
        let mut out = vec![self.client_sidecar.measured()];
        out.extend(self.sidecars.iter().map(Envoy::measured));
        out.extend(self.replicas.iter().map(ChildProcess::measured));
        out
    }
}

/// The processes of one `proxyless` mesh: replicas and the client's channel.
struct ProxylessMesh {
    replicas: Vec<ChildProcess>,
    call: CallFn,
}

impl ProxylessMesh {
    fn measured(&self) -> Vec<Measured> {
        self.replicas.iter().map(ChildProcess::measured).collect()
    }
}

pub(crate) struct Mesh<'a> {
    pub(crate) opts: &'a RunOptions,
    pub(crate) pki: MeshPki,
    pub(crate) policy: MeshPolicy,
    pub(crate) dns: MeshDns,
    pub(crate) token: MetadataValue<Ascii>,
    ports: Ports,
}

/// One port per role, each free on every replica address.
struct Ports {
    proxyless: u16,
    sidecar: u16,
    backend: u16,
    plain: u16,
    plain_mtls: u16,
}

/// The processes of one `plain-tonic` or `plain-tonic-mtls` mesh.
struct PlainMesh {
    replicas: Vec<ChildProcess>,
    call: CallFn,
}

impl PlainMesh {
    fn measured(&self) -> Vec<Measured> {
        self.replicas.iter().map(ChildProcess::measured).collect()
    }
}

impl Mesh<'_> {
    /// `recycle`: the replicas recycle every connection at that age.
    async fn proxyless(&self, replicas: usize, recycle: Option<Duration>) -> Result<ProxylessMesh> {
        let ips = replica_ips(replicas);
        let mut children = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            children.push(spawn_replica_with(
                self.opts,
                ReplicaMode::Mtls,
                SocketAddr::from((*ip, self.ports.proxyless)),
                &format!("replica-{}", i + 1),
                recycle,
            )?);
        }
        let connector = MtlsConnector::new(self.pki.client_config(self.pki.client()).map_err(bs)?)
            .server_name(&self.policy.service_name)
            .map_err(|e| Error::Pki(e.to_string()))?;
        let channel = BalancedChannel::builder(
            format!("{}:{}", self.policy.service_name, self.ports.proxyless),
            connector,
        )
        .nameserver(self.dns.addr())
        .build()
        .map_err(|e| Error::Pki(e.to_string()))?;
        let call = get_book(
            BookstoreClient::new(channel.clone()),
            Some(self.token.clone()),
        );
        wait_until_serving(&call, "proxyless client", Duration::from_secs(20)).await?;
        // Every endpoint connected before the first point.
        let deadline = Instant::now() + Duration::from_secs(20);
        while channel
            .endpoints()
            .iter()
            .filter(|e| e.state.is_ready())
            .count()
            < replicas
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ProxylessMesh {
            replicas: children,
            call,
        })
    }

    /// `recycle`: the server sidecars recycle every downstream (mTLS) connection at that
    /// age (`max_connection_duration`: GOAWAY, then drain), as the proxyless replicas do.
    async fn envoy(&self, replicas: usize, recycle: Option<Duration>) -> Result<EnvoyMesh> {
        let ips = replica_ips(replicas);
        let dir = self.opts.dir.join("mesh");
        let mut children = Vec::new();
        let mut sidecars = Vec::new();
        let server_certs = CertSource::Files {
            chain: self.pki.server().cert.clone(),
            key: self.pki.server().key.clone(),
            bundle: self.pki.bundle_path().to_owned(),
        };
        for (i, ip) in ips.iter().enumerate() {
            let backend = SocketAddr::from((*ip, self.ports.backend));
            children.push(spawn_replica(
                self.opts,
                ReplicaMode::Plaintext,
                backend,
                &format!("replica-{}", i + 1),
            )?);
            let sidecar = ServerSidecar::new(
                SocketAddr::from((*ip, self.ports.sidecar)),
                backend,
                self.pki.jwks_json().to_owned(),
                server_certs.clone(),
            );
            let mut bootstrap = sidecar.bootstrap(&self.policy);
            if let Some(age) = recycle {
                let hcm = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
                    [0]["typed_config"];
                hcm["common_http_protocol_options"]["max_connection_duration"] =
                    format!("{:.3}s", age.as_secs_f64()).into();
                hcm["drain_timeout"] = format!("{}s", RECYCLE_GRACE.as_secs()).into();
            }
            sidecars.push(
                Envoy::start(
                    &format!("envoy-server-{}", i + 1),
                    Role::ServerProxy,
                    &dir,
                    &bootstrap,
                    self.opts.server_threads,
                )
                .await?,
            );
        }
        // Port 0: the kernel picks the client sidecar's port as Envoy binds it.
        let mut client = ClientSidecar::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.ports.sidecar,
            CertSource::Files {
                chain: self.pki.client().cert.clone(),
                key: self.pki.client().key.clone(),
                bundle: self.pki.bundle_path().to_owned(),
            },
        );
        client.dns = Some(self.dns.addr());
        let client_sidecar = Envoy::start(
            "envoy-client",
            Role::ClientProxy,
            &dir,
            &client.bootstrap(&self.policy),
            self.opts.server_threads,
        )
        .await?;
        let listen = client_sidecar
            .listener_addr(bookstore::envoy::STAT_PREFIX_OUTBOUND)
            .await?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
            .map_err(|e| Error::Pki(e.to_string()))?
            .connect_lazy();
        let call = get_book(BookstoreClient::new(channel), Some(self.token.clone()));
        wait_until_serving(&call, "envoy client", Duration::from_secs(30)).await?;
        // The client Envoy connects to each upstream lazily: warm every one.
        for _ in 0..replicas * 4 {
            let _ = call(0).await;
        }
        Ok(EnvoyMesh {
            replicas: children,
            sidecars,
            client_sidecar,
            call,
        })
    }

    /// `plain-tonic` (`mtls` false) or `plain-tonic-mtls` over `replicas` replicas: a tonic
    /// `Channel` to one, `Channel::balance_list` over more.
    async fn plain(&self, replicas: usize, mtls: bool) -> Result<PlainMesh> {
        let (mode, port, what) = if mtls {
            (
                ReplicaMode::TonicMtls,
                self.ports.plain_mtls,
                "plain-tonic-mtls client",
            )
        } else {
            (
                ReplicaMode::TonicTls,
                self.ports.plain,
                "plain-tonic client",
            )
        };
        let mut children = Vec::new();
        let mut endpoints = Vec::new();
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(
                self.pki.bundle_path(),
            )?))
            .domain_name(&self.policy.service_name);
        if mtls {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(&self.pki.client().cert)?,
                read(&self.pki.client().key)?,
            ));
        }
        for (i, ip) in replica_ips(replicas).iter().enumerate() {
            let addr = SocketAddr::from((*ip, port));
            children.push(spawn_replica(
                self.opts,
                mode,
                addr,
                &format!("replica-{}", i + 1),
            )?);
            endpoints.push(
                tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                    .map_err(|e| Error::Pki(e.to_string()))?
                    .tls_config(tls.clone())
                    .map_err(|e| Error::Pki(format!("tonic client TLS: {e}")))?,
            );
        }
        let channel = if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            tonic::transport::Channel::balance_list(endpoints.into_iter())
        };
        let token = mtls.then(|| self.token.clone());
        let call = get_book(BookstoreClient::new(channel), token);
        wait_until_serving(&call, what, Duration::from_secs(20)).await?;
        // balance_list connects to each endpoint as it is discovered: call until every
        // replica has answered once is not observable here, so warm with a few calls each.
        for _ in 0..replicas * 4 {
            let _ = call(0).await;
        }
        Ok(PlainMesh {
            replicas: children,
            call,
        })
    }
}

/// The mesh's PKI, token, DNS (pointing at the first replica) and ports, for up to
/// `max_replicas` replicas.
pub(crate) async fn mesh_for(opts: &RunOptions, max_replicas: usize) -> Result<Mesh<'_>> {
    let policy = MeshPolicy::bookstore();
    let pki = MeshPki::create(opts.dir.join("mesh"), &policy).map_err(bs)?;
    let token: MetadataValue<Ascii> = format!("Bearer {}", pki.token(AUDIENCE).map_err(bs)?)
        .parse()
        .map_err(|_| Error::Pki("the token is not a valid header value".into()))?;
    let all_ips = replica_ips(max_replicas.max(1));
    let ports = Ports {
        proxyless: shared_free_port(&all_ips)?,
        sidecar: shared_free_port(&all_ips)?,
        backend: shared_free_port(&all_ips)?,
        plain: shared_free_port(&all_ips)?,
        plain_mtls: shared_free_port(&all_ips)?,
    };
    let dns = MeshDns::start(&policy.service_name, &all_ips[..1], 30)
        .await
        .map_err(bs)?;
    Ok(Mesh {
        opts,
        pki,
        policy,
        dns,
        token,
        ports,
    })
}

/// Soak: the `proxyless` mesh of `replicas` replicas driven at `concurrency` for
/// `opts.duration` (after `opts.warmup`), with RSS and open fds of every process (replicas
/// and this load generator) sampled every `every`; slopes from the samples after the
/// first minute (or after the warm-up, if the soak is shorter than two minutes).
pub async fn run_soak(
    opts: &RunOptions,
    replicas: usize,
    concurrency: usize,
    every: Duration,
) -> Result<crate::soak::SoakResult> {
    let conditions = crate::result::Conditions::now("");
    let mesh = mesh_for(opts, replicas).await?;
    mesh.dns
        .set_addrs(&replica_ips(replicas))
        .await
        .map_err(bs)?;
    let proxyless = mesh.proxyless(replicas, None).await?;
    let mut processes = vec![crate::driver::this_process()];
    processes.extend(proxyless.measured());
    let since = Instant::now();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(crate::soak::sample_until(
        processes,
        every,
        since,
        async move {
            let _ = done_rx.await;
        },
    ));
    let label = PointLabel {
        scenario: "soak-proxyless".into(),
        variant: String::new(),
        replicas,
    };
    let point = measure(
        opts.spec(concurrency),
        label,
        &proxyless.measured(),
        proxyless.call.clone(),
    )
    .await;
    let _ = done_tx.send(());
    let samples = sampler.await.map_err(|e| Error::Io {
        context: "soak sampler".into(),
        source: std::io::Error::other(e),
    })?;
    let total = opts.warmup + opts.duration;
    let from = if total >= Duration::from_secs(120) {
        60.0
    } else {
        opts.warmup.as_secs_f64()
    };
    let trends = crate::soak::trends(&samples, from);
    drop(proxyless);
    Ok(crate::soak::SoakResult {
        point,
        sample_every_s: every.as_secs_f64(),
        slopes_from_s: from,
        samples,
        trends,
        conditions,
    })
}

/// A scenario's mesh that is up: what to measure, how to call, and the processes (kept
/// alive until dropped).
type UpScenario = (Scenario, Vec<Measured>, CallFn, Box<dyn std::any::Any>);

/// Runs the bookstore scenarios among `scenarios` (`plain-tonic`, `plain-tonic-mtls`,
/// `proxyless`, `envoy`): for each replica count, every scenario's mesh over that many
/// replicas is up and, at each concurrency, the scenarios are measured back to back in
/// that order, so every ratio in the report compares points of one block.
pub async fn run_mesh(opts: &RunOptions, scenarios: &[Scenario]) -> Result<Vec<PointResult>> {
    let has = |s| scenarios.contains(&s);
    if has(Scenario::Envoy) {
        crate::envoy::require_envoy("the envoy scenario")?;
    }
    if has(Scenario::Recycling) {
        crate::envoy::require_envoy("the recycling scenario (proxyless vs Envoy)")?;
    }
    let max_replicas = opts.replicas.iter().copied().max().unwrap_or(1).max(1);
    let mesh = mesh_for(opts, max_replicas).await?;
    let mut out = Vec::new();
    for &n in &opts.replicas {
        mesh.dns.set_addrs(&replica_ips(n)).await.map_err(bs)?;
        let mut up: Vec<UpScenario> = Vec::new();
        if has(Scenario::Proxyless) {
            let m = mesh.proxyless(n, None).await?;
            up.push((
                Scenario::Proxyless,
                m.measured(),
                m.call.clone(),
                Box::new(m),
            ));
        }
        if has(Scenario::Envoy) {
            let m = mesh.envoy(n, None).await?;
            up.push((Scenario::Envoy, m.measured(), m.call.clone(), Box::new(m)));
        }
        for (scenario, mtls) in [
            (Scenario::PlainTonic, false),
            (Scenario::PlainTonicMtls, true),
        ] {
            if has(scenario) {
                let m = mesh.plain(n, mtls).await?;
                up.push((scenario, m.measured(), m.call.clone(), Box::new(m)));
            }
        }
        for &c in &opts.concurrency {
            for (scenario, measured, call, _) in &up {
                let label = PointLabel {
                    scenario: scenario.as_str().into(),
                    variant: String::new(),
                    replicas: n,
                };
                let r = measure(opts.spec(c), label, measured, call.clone()).await;
                opts.progress(&r);
                out.push(r);
            }
        }
        // Every process of this block stops before the next block starts.
        drop(up);
    }
    if has(Scenario::Recycling) {
        out.extend(run_recycling(opts, &mesh, max_replicas).await?);
    }
    Ok(out)
}

/// The `recycling` scenario: both paths over 3 replicas (or the most asked for, if fewer)
/// while every server-side connection is recycled every `opts.recycle_every` — the
/// proxyless replicas (`ServerOptions::max_connection_age`) and the Envoy server sidecars
/// (`max_connection_duration`) send GOAWAY and drain, clients reconnect. Failed calls and
/// p99 per path, measured back to back at each concurrency.
async fn run_recycling(
    opts: &RunOptions,
    mesh: &Mesh<'_>,
    max_replicas: usize,
) -> Result<Vec<PointResult>> {
    let n = max_replicas.min(3);
    let every = opts.recycle_every;
    mesh.dns.set_addrs(&replica_ips(n)).await.map_err(bs)?;
    let proxyless = mesh.proxyless(n, Some(every)).await?;
    let envoy = mesh.envoy(n, Some(every)).await?;
    let up = [
        ("proxyless", proxyless.measured(), proxyless.call.clone()),
        ("envoy", envoy.measured(), envoy.call.clone()),
    ];
    let mut out = Vec::new();
    for &c in &opts.concurrency {
        for (variant, measured, call) in &up {
            let label = PointLabel {
                scenario: Scenario::Recycling.as_str().into(),
                variant: (*variant).into(),
                replicas: n,
            };
            let mut r = measure(opts.spec(c), label, measured, call.clone()).await;
            r.recycle_every_s = Some(every.as_secs_f64());
            opts.progress(&r);
            out.push(r);
        }
    }
    drop((proxyless, envoy));
    Ok(out)
}

/// One target of `loadgen abuse`: where to connect and which processes to account for.
struct AbuseTarget {
    name: &'static str,
    addr: SocketAddr,
    measured: Vec<Measured>,
}

impl Mesh<'_> {
    pub(crate) fn connector(&self) -> Result<MtlsConnector> {
        MtlsConnector::new(self.pki.client_config(self.pki.client()).map_err(bs)?)
            .server_name(&self.policy.service_name)
            .map_err(|e| Error::Pki(e.to_string()))
    }

    /// A new connection to `addr` and one `GetBook`; milliseconds (5000 when it failed).
    async fn connect_and_call(&self, addr: SocketAddr) -> f64 {
        let started = Instant::now();
        let Ok(connector) = self.connector() else {
            return 5000.0;
        };
        let token = self.token.clone();
        let call = async move {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?;
            let channel = endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| e.to_string())?;
            let mut request = tonic::Request::new(GetBookRequest { shelf: 1, book: 1 });
            request.metadata_mut().insert("authorization", token);
            BookstoreClient::new(channel)
                .get_book(request)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(())) => started.elapsed().as_secs_f64() * 1000.0,
            _ => 5000.0,
        }
    }

    async fn abuse_target(
        &self,
        target: &AbuseTarget,
        plan: &crate::abuse::Plan,
    ) -> Result<crate::abuse::TargetResult> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let _ = self.connect_and_call(target.addr).await;
        let mut connect_baseline_ms = Vec::new();
        for _ in 0..plan.trials {
            connect_baseline_ms.push(self.connect_and_call(target.addr).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = crate::abuse::open_flood(plan, target.addr).await;
        let flood_connections = held.len();
        let mut connect_flooded_ms = Vec::new();
        for _ in 0..plan.trials {
            connect_flooded_ms.push(self.connect_and_call(target.addr).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(held);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Handshake flood from 127.0.0.50; honest calls from 127.0.0.1 on an established
        // connection.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", target.addr))
            .map_err(|e| Error::Pki(e.to_string()))?
            .connect_with_connector(self.connector()?)
            .await
            .map_err(|e| Error::Pki(format!("connecting to {}: {e}", target.name)))?;
        let call = get_book(BookstoreClient::new(channel), Some(self.token.clone()));
        let spec = crate::driver::LoadSpec {
            concurrency: 4,
            warmup: Duration::from_millis(500),
            duration: plan.flood_duration,
        };
        let label = |variant: &str| PointLabel {
            scenario: format!("abuse-{}", target.name),
            variant: variant.into(),
            replicas: 1,
        };
        let calls_baseline = measure(spec, label("no flood"), &target.measured, call.clone()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let server_name = rustls_pki_types::ServerName::try_from(self.policy.service_name.clone())
            .map_err(|e| Error::Pki(e.to_string()))?;
        let flood = tokio::spawn(crate::abuse::handshake_flood(
            target.addr,
            self.pki.client_config(self.pki.client()).map_err(bs)?,
            server_name,
            plan.flood_workers,
            stop.clone(),
        ));
        let flood_started = Instant::now();
        let calls_flooded = measure(
            spec,
            label("handshake flood"),
            &target.measured,
            call.clone(),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let handshakes = flood.await.unwrap_or(0);
        let flood_handshakes_per_s = handshakes as f64 / flood_started.elapsed().as_secs_f64();
        if self.opts.verbose {
            eprintln!(
                "abuse {}: connect+call {:?} ms -> flooded {:?} ms; calls p99 {:.0} µs -> {:.0} µs under {:.0} handshakes/s",
                target.name,
                connect_baseline_ms,
                connect_flooded_ms,
                calls_baseline.latency.p99_us,
                calls_flooded.latency.p99_us,
                flood_handshakes_per_s
            );
        }
        Ok(crate::abuse::TargetResult {
            target: target.name.into(),
            connect_baseline_ms,
            connect_flooded_ms,
            flood_connections,
            calls_baseline,
            calls_flooded,
            flood_handshakes_per_s,
        })
    }
}

/// `loadgen abuse`: the same hostile load against one mtls-tonic replica (127.0.0.2) and one
/// Envoy 1.40 listener with the same certificates in front of a plaintext replica
/// (127.0.0.3), one after the other.
pub async fn run_abuse(
    opts: &RunOptions,
    plan: &crate::abuse::Plan,
) -> Result<crate::abuse::AbuseResult> {
    crate::envoy::require_envoy("the abuse comparison")?;
    let conditions = crate::result::Conditions::now("");
    let mesh = mesh_for(opts, 2).await?;
    let ours_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), mesh.ports.proxyless));
    let ours = spawn_replica(opts, ReplicaMode::Mtls, ours_addr, "replica-1")?;
    let ours_target = AbuseTarget {
        name: "proxyless",
        addr: ours_addr,
        measured: vec![ours.measured()],
    };
    let mut targets = vec![mesh.abuse_target(&ours_target, plan).await?];
    drop(ours);

    let ip = Ipv4Addr::new(127, 0, 0, 3);
    let backend = SocketAddr::from((ip, mesh.ports.backend));
    let replica = spawn_replica(opts, ReplicaMode::Plaintext, backend, "replica-1")?;
    let listen = SocketAddr::from((ip, mesh.ports.sidecar));
    let sidecar = ServerSidecar::new(
        listen,
        backend,
        mesh.pki.jwks_json().to_owned(),
        CertSource::Files {
            chain: mesh.pki.server().cert.clone(),
            key: mesh.pki.server().key.clone(),
            bundle: mesh.pki.bundle_path().to_owned(),
        },
    );
    let envoy = Envoy::start(
        "envoy-server-1",
        Role::ServerProxy,
        &opts.dir.join("mesh"),
        &sidecar.bootstrap(&mesh.policy),
        opts.server_threads,
    )
    .await?;
    let envoy_target = AbuseTarget {
        name: "envoy",
        addr: listen,
        measured: vec![envoy.measured(), replica.measured()],
    };
    targets.push(mesh.abuse_target(&envoy_target, plan).await?);
    drop(envoy);
    drop(replica);
    Ok(crate::abuse::AbuseResult {
        targets,
        conditions,
    })
}

/// gRFC A66's server metrics of the proxyless replicas (recorded into the process's
/// recorder when `MTLS_BENCH_METRICS=1` installed one, into the facade's no-op otherwise).
fn call_metrics() -> mtls_tonic::metrics::CallMetricsLayer {
    use tonic::server::NamedService;
    mtls_tonic::metrics::CallMetricsLayer::new().service(
        bookstore::proto::bookstore_server::BookstoreServer::<bookstore::BookstoreService>::NAME,
    )
}
