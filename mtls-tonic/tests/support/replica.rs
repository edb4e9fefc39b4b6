//! tonic replicas, each on its own runtime and thread so a "kill" really closes every socket.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicI32, AtomicU64, Ordering},
    },
    time::Duration,
};

use mtls_tonic::{PeerIdentityExt, server::MtlsIncoming};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_check_response::ServingStatus,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService, WatchStream},
};

/// `grpc.health.v1.Health` that names the replica (`x-replica`), the caller's SPIFFE ID
/// (`x-peer`, read with `request.peer_identity()`) and the caller's port (`x-peer-port`: one
/// per connection) in response metadata. A `check` for
/// service `slow:<ms>` answers after `<ms>` milliseconds. `watch` is tonic-health's.
pub struct Probe {
    pub name: String,
    pub inner: HealthService,
    /// While non-zero, every `check` answers with this gRPC status code at once.
    pub fail_with: Arc<AtomicI32>,
    /// `check` calls received.
    pub checks: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Health for Probe {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let code = self.fail_with.load(Ordering::Relaxed);
        if code != 0 {
            return Err(Status::new(
                tonic::Code::from_i32(code),
                format!("replica {} failing", self.name),
            ));
        }
        let peer = request
            .peer_identity()
            .and_then(|p| p.spiffe_id())
            .map(|id| id.to_string());
        let serial = request
            .peer_identity()
            .and_then(|p| p.serial())
            .map(ToString::to_string);
        let port = request
            .mtls_connect_info()
            .map(|info| info.remote_addr().port());
        if let Some(ms) = request.get_ref().service.strip_prefix("slow:") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
        }
        let mut response = Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        });
        response
            .metadata_mut()
            .insert("x-replica", self.name.parse().unwrap());
        if let Some(peer) = peer {
            response
                .metadata_mut()
                .insert("x-peer", peer.parse().unwrap());
        }
        if let Some(serial) = serial {
            response
                .metadata_mut()
                .insert("x-peer-serial", serial.parse().unwrap());
        }
        if let Some(port) = port {
            response
                .metadata_mut()
                .insert("x-peer-port", port.to_string().parse().unwrap());
        }
        Ok(response)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.inner.watch(request).await
    }
}

pub fn probe(name: &str) -> (HealthReporter, HealthServer<Probe>) {
    probe_failing(name, Arc::default(), Arc::default())
}

/// [`probe`], answering with status `fail_with` while it is non-zero, counting checks.
pub fn probe_failing(
    name: &str,
    fail_with: Arc<AtomicI32>,
    checks: Arc<AtomicU64>,
) -> (HealthReporter, HealthServer<Probe>) {
    let reporter = HealthReporter::new();
    let inner = HealthService::from_health_reporter(reporter.clone());
    (
        reporter,
        HealthServer::new(Probe {
            name: name.to_owned(),
            inner,
            fail_with,
            checks,
        }),
    )
}

/// Binds every address in `ips` on one common port (DNS A records carry no port).
pub fn bind_shared_port(ips: &[Ipv4Addr]) -> (u16, Vec<TcpListener>) {
    for _ in 0..100 {
        let Ok(first) = TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == ips.len() {
            return (port, listeners);
        }
    }
    panic!("no common free port on {ips:?}");
}

pub struct Replica {
    pub addr: SocketAddr,
    pub name: String,
    pub reporter: HealthReporter,
    pub fail_with: Arc<AtomicI32>,
    pub checks: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Serves `Probe` named after the listener's IP with mTLS on `listener`.
    pub fn start(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(listener, config, |builder| builder)
    }

    /// Like [`Replica::start`], with the tonic server builder adjusted by `tune` (e.g.
    /// `max_connection_age`).
    pub fn start_with(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        tune: impl FnOnce(tonic::transport::Server) -> tonic::transport::Server + Send + 'static,
    ) -> Self {
        Self::start_with_options(
            listener,
            config,
            mtls_tonic::server::ServerOptions::default(),
            tune,
        )
    }

    /// Like [`Replica::start_with`], with `options` on the accept path (`tune` still gets
    /// the plain tonic builder; use `options.apply` in it for the HTTP/2 side).
    pub fn start_with_options(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        options: mtls_tonic::server::ServerOptions,
        tune: impl FnOnce(tonic::transport::Server) -> tonic::transport::Server + Send + 'static,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let name = addr.ip().to_string();
        let fail_with = Arc::new(AtomicI32::new(0));
        let checks = Arc::new(AtomicU64::new(0));
        let (reporter, service) = probe_failing(&name, fail_with.clone(), checks.clone());
        // `true`: graceful shutdown (GOAWAY, drain); `false` or dropped: kill.
        let (stop, stopped) = oneshot::channel::<bool>();
        listener.set_nonblocking(true).unwrap();
        let thread = std::thread::Builder::new()
            .name(format!("replica-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let incoming = MtlsIncoming::configured(listener, config, options);
                    let (drain, drained) = oneshot::channel::<()>();
                    let serve = tune(tonic::transport::Server::builder())
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = drained.await;
                        });
                    tokio::pin!(serve);
                    tokio::select! {
                        _ = &mut serve => {}
                        stop = stopped => if stop == Ok(true) {
                            let _ = drain.send(());
                            // GOAWAY to every connection; in-flight calls finish (bounded).
                            let _ = tokio::time::timeout(Duration::from_secs(10), serve).await;
                        }
                    }
                });
                // Dropping the runtime drops every connection task: sockets close at once.
                rt.shutdown_background();
            })
            .unwrap();
        Self {
            addr,
            name,
            reporter,
            fail_with,
            checks,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Rebinds `addr` (after a kill) and serves again.
    pub fn restart(addr: SocketAddr, config: Arc<rustls::ServerConfig>) -> Self {
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(addr) {
                return Self::start(listener, config);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cannot rebind {addr}");
    }

    /// Stops the replica abruptly: listener and every connection closed.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops the replica as Kubernetes does: the listener closes, every connection gets an
    /// HTTP/2 GOAWAY and in-flight calls finish (at most 10 s), then everything closes.
    pub fn shutdown_gracefully(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Answer every check with `code` (`Code::Ok`: answer normally again).
    pub fn answer_with(&self, code: tonic::Code) {
        self.fail_with.store(code as i32, Ordering::Relaxed);
    }

    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
