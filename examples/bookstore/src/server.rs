//! Serving the bookstore: mTLS with per-method SPIFFE authorization and JWT validation
//! (proxyless), or plaintext on loopback behind an Envoy sidecar; `grpc.health.v1` either way.

use std::{net::SocketAddr, sync::Arc};

use mtls_jwt::Validator;
use mtls_tonic::{
    authz::{AuthzLayer, MethodPolicy},
    jwt::{JwtLayer, JwtRules},
    metrics::CallMetricsLayer,
    server::{MtlsIncoming, ServerOptions},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;

use crate::{BookstoreService, Error, Result, proto::bookstore_server::BookstoreServer};

/// How a server accepts calls.
#[derive(Debug)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per server, never copied around"
)]
pub enum Security {
    /// Mutual TLS; callers authorized per method; tokens validated when `jwt` is set.
    Mtls {
        /// The rustls configuration (client certificates required).
        tls: Arc<rustls::ServerConfig>,
        /// Which SPIFFE IDs may call which methods.
        policy: MethodPolicy,
        /// Token validation, if any.
        jwt: Option<(Validator, JwtRules)>,
    },
    /// Plaintext, for a loopback address behind a sidecar that does mTLS and JWT.
    Plaintext,
}

/// Binds `addr` (listen backlog from [`ServerOptions::default`]) with an error that names the
/// address and the reason ("address already in use"). With `loopback_only`, refuses any
/// address that is not loopback.
pub async fn bind(addr: SocketAddr, loopback_only: bool) -> Result<TcpListener> {
    if loopback_only && !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--plaintext serves without TLS, so it binds loopback addresses only \
             (127.0.0.0/8 or ::1), not {addr}"
        )));
    }
    ServerOptions::default()
        .bind(addr)
        .map_err(|e| Error::Bind {
            addr,
            reason: match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "address already in use (another server on this port?)".to_owned()
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "address not available on this machine".to_owned()
                }
                _ => e.to_string(),
            },
        })
}

/// A running bookstore server. Dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    replica: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The replica name it answers with.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Waits until the server stops (it runs until stopped or failed).
    pub async fn wait(mut self) -> Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Serve {
                addr: self.addr,
                reason: e.to_string(),
            })?,
            None => Ok(()),
        }
    }

    /// Stops accepting, lets calls in flight finish (bounded), and waits.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let addr = self.addr;
        match self.task.take() {
            Some(mut task) => {
                match tokio::time::timeout(std::time::Duration::from_secs(2), &mut task).await {
                    Ok(joined) => joined.map_err(|e| Error::Serve {
                        addr,
                        reason: e.to_string(),
                    })?,
                    Err(_) => {
                        task.abort();
                        Ok(())
                    }
                }
            }
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `service` (and `grpc.health.v1`) on `listener` in a task of the current runtime,
/// with mtls-tonic's [`ServerOptions`] (HTTP/2 limits; accept-path limits with mTLS).
///
/// ```no_run
/// # async fn f() -> Result<(), bookstore::Error> {
/// use bookstore::{BookstoreService, Security, Store, server};
/// let listener = server::bind("127.0.0.1:0".parse().unwrap(), true).await?;
/// let handle = server::spawn(listener, BookstoreService::new(Store::seeded(), "r1")?, Security::Plaintext)?;
/// println!("serving on {}", handle.addr());
/// handle.wait().await
/// # }
/// ```
pub fn spawn(
    listener: TcpListener,
    service: BookstoreService,
    security: Security,
) -> Result<ServerHandle> {
    spawn_with(listener, service, security, ServerOptions::default())
}

/// The label naming the replica (its [`BookstoreService::replica`] name) on the server's
/// gRFC A66 metrics (`grpc.server.call.started`, `grpc.server.call.duration`).
///
/// ```
/// assert_eq!(bookstore::server::REPLICA_LABEL, "replica");
/// ```
pub const REPLICA_LABEL: &str = "replica";

/// [`spawn`] with `options` instead of the defaults, e.g. connection recycling
/// ([`ServerOptions::max_connection_age`]) for the load generator's recycling scenario.
///
/// ```no_run
/// # async fn f() -> Result<(), bookstore::Error> {
/// use std::time::Duration;
/// use bookstore::{BookstoreService, Security, Store, server};
/// let listener = server::bind("127.0.0.1:0".parse().unwrap(), true).await?;
/// use mtls_tonic::server::{ConnectionAge, ServerOptions};
/// let options = ServerOptions::default()
///     .max_connection_age(Some(ConnectionAge::new(Duration::from_secs(2), Duration::from_secs(10))));
/// let service = BookstoreService::new(Store::seeded(), "r1")?;
/// let handle = server::spawn_with(listener, service, Security::Plaintext, options)?;
/// handle.wait().await
/// # }
/// ```
pub fn spawn_with(
    listener: TcpListener,
    service: BookstoreService,
    security: Security,
    options: ServerOptions,
) -> Result<ServerHandle> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listener's address", e))?;
    let replica = service.replica().to_owned();
    let metrics = call_metrics(&replica);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    let bookstore = BookstoreServer::new(service);
    let task = tokio::spawn(async move {
        reporter
            .set_serving::<BookstoreServer<BookstoreService>>()
            .await;
        let result = match security {
            Security::Plaintext => {
                options
                    .server()
                    .layer(metrics)
                    .add_service(health)
                    .add_service(bookstore)
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
                    .await
            }
            Security::Mtls { tls, policy, jwt } => {
                // Tokens, when validated, after the caller's SPIFFE ID.
                let jwt = jwt.map(|(validator, rules)| JwtLayer::new(validator, rules));
                options
                    .server()
                    .layer(metrics)
                    .layer(AuthzLayer::new(policy))
                    .layer(tower::util::option_layer(jwt))
                    .add_service(health)
                    .add_service(bookstore)
                    .serve_with_incoming_shutdown(
                        MtlsIncoming::configured(listener, tls, options.clone()),
                        signal,
                    )
                    .await
            }
        };
        result.map_err(|e| Error::Serve {
            addr,
            reason: e.to_string(),
        })
    });
    Ok(ServerHandle {
        addr,
        replica,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

/// gRFC A66's server metrics, outermost (the calls authorization and JWT refuse are timed
/// too), with the bookstore's and the health service's methods by name, any other path as
/// `other`, and [`REPLICA_LABEL`] naming the replica (the mesh runs three in one process).
fn call_metrics(replica: &str) -> CallMetricsLayer {
    CallMetricsLayer::new()
        .label(REPLICA_LABEL, replica)
        .service(BookstoreServer::<BookstoreService>::NAME)
        .service(tonic_health::pb::health_server::HealthServer::<tonic_health::server::HealthService>::NAME)
}
