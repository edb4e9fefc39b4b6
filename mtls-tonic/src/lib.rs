//! mTLS for tonic, in process: an mTLS server incoming that exposes the verified peer,
//! SPIFFE/SAN and JWT authorization layers, an mTLS client connector, and
//! [`balance::BalancedChannel`] — a DNS load-balanced channel that does for a gRPC client what an
//! Envoy sidecar with a STRICT_DNS cluster does, without the sidecar.
//!
//! # Why
//! gRPC keeps one long-lived HTTP/2 connection, so a Kubernetes Service (L4) pins every
//! client to one replica. tonic's own `balance_channel` cannot take a custom connector (no
//! SPIFFE verification), reports failed endpoints as ready, and hangs when it has no
//! endpoint. This crate builds the missing pieces on tower and hickory, using the rustls
//! configurations of [`mtls_core`].
//!
//! # Data flow
//! ```text
//! client:  BalancedChannel ── hickory: bookstore.test -> {127.0.0.2, .3, .4}:port (TTL-driven)
//!            └─ tower Buffer -> fail-fast gate -> tower p2c (pending requests) over READY endpoints
//!                 └─ per endpoint: MtlsConnector (TCP, rustls ClientConfig, SNI = service name)
//!                      -> hyper HTTP/2 connection (keepalive), reconnect with backoff
//! server:  TcpListener -> MtlsIncoming (accept never pauses; handshakes bounded in time,
//!            overall and per source IP, oldest shed; rustls ServerConfig; PING/SETTINGS budget)
//!            -> tonic Server (ServerOptions' HTTP/2 limits): MtlsConnectInfo in request extensions (request.peer_identity())
//!            -> AuthzLayer (method -> allowed SPIFFE IDs / SANs) -> JwtLayer (bearer) -> service
//! ```
//!
//! # Quick start
//! A server that requires client certificates from `example.org`, lets any member call
//! health checks and only `spiffe://example.org/web` call the bookstore, and a client that
//! balances over every replica DNS returns:
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use mtls_core::{Authorize, ClientConfigBuilder, Identity, ServerConfigBuilder, TrustBundle};
//! use mtls_tonic::{
//!     authz::{AuthzLayer, MethodPolicy},
//!     balance::BalancedChannel,
//!     client::MtlsConnector,
//!     server::{MtlsIncoming, ServerOptions},
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Arc::new(Identity::from_pem_files("svid.pem", "svid-key.pem")?);
//! let trust = Arc::new(TrustBundle::spiffe().add_domain_pem(
//!     "example.org".parse()?,
//!     std::fs::read("bundle.pem")?,
//! )?);
//!
//! // Server.
//! let server_config = ServerConfigBuilder::new(identity.clone(), trust.clone())
//!     .authorize(Authorize::member_of("example.org".parse()?))
//!     .build()?;
//! // Every accept-path and HTTP/2 limit, set on purpose (see ServerOptions).
//! let options = ServerOptions::default();
//! let listener = options.bind("0.0.0.0:50051".parse()?)?;
//! let policy = MethodPolicy::deny_by_default()
//!     .allow("grpc.health.v1.Health/*", Authorize::any())?
//!     .allow("bookstore.Bookstore/*", Authorize::exact("spiffe://example.org/web".parse()?))?;
//! let (_health_reporter, health) = tonic_health::server::health_reporter();
//! tokio::spawn(
//!     options
//!         .server()
//!         .layer(AuthzLayer::new(policy))
//!         .add_service(health)
//!         .serve_with_incoming(MtlsIncoming::configured(listener, server_config, options.clone())),
//! );
//!
//! // Client: one connection per replica of a headless Service, p2c over the ready ones.
//! let client_config = ClientConfigBuilder::new(identity, trust)
//!     .authorize(Authorize::exact("spiffe://example.org/bookstore".parse()?))
//!     .build()?;
//! let channel = BalancedChannel::builder(
//!     "bookstore.default.svc.cluster.local:50051",
//!     MtlsConnector::new(client_config),
//! )
//! .ready_timeout(Duration::from_secs(2))
//! .build()?;
//! let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
//! health.check(tonic_health::pb::HealthCheckRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Without DNS, the same channel over a fixed list (tonic's `balance_list`), or over
//! changes pushed at run time ([`balance::endpoint_channel`]) or read from your own registry (a
//! [`balance::Discovery`] implementation):
//!
//! ```no_run
//! # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use mtls_tonic::{balance::{BalancedChannel, BalancedEndpoint}, client::MtlsConnector};
//! let channel = BalancedChannel::static_list(
//!     "bookstore.test:50051", // :authority and TLS server name
//!     ["127.0.0.2:50051", "127.0.0.3:50051"]
//!         .map(|a| a.parse().map(BalancedEndpoint::new))
//!         .into_iter()
//!         .collect::<Result<Vec<_>, _>>()?,
//!     MtlsConnector::new(client_config),
//! )
//! .build()?;
//! # let _ = channel; Ok(()) }
//! ```
//!
//! In a handler, the caller's identity is one call away:
//!
//! ```
//! use mtls_tonic::PeerIdentityExt;
//! fn caller(request: &tonic::Request<()>) -> Option<String> {
//!     request.peer_identity()?.spiffe_id().map(|id| id.to_string())
//! }
//! ```
//!
//! # Modules
//! Tower style: one public module per concern (as `tower::balance`, `tonic::transport`).
//! The root holds only the crate-wide vocabulary, as tower's root holds `Service` and
//! `ServiceExt` and tonic's `Request` and `Status`: [`Error`], [`Result`],
//! [`MethodPattern`] (what [`authz`] and [`jwt`] rules are keyed by),
//! [`PeerIdentityExt`] (every handler uses it) and the [`tonic`] we build on. Each
//! middleware module has the tower anatomy: service, layer, `ResponseFuture`, error.
//! - [`server`]: [`server::MtlsIncoming`], [`server::ServerOptions`] (every limit a peer
//!   meets: listen backlog, handshake timeout, incomplete handshakes overall and per source
//!   IP with the oldest shed when full, HTTP/2 streams, header list, rapid-reset and
//!   local-reset budgets, windows, frame size, keepalive, PING/SETTINGS flood budget),
//!   [`server::MtlsStream`], [`server::MtlsConnectInfo`], [`PeerIdentityExt`].
//! - [`authz`]: [`authz::AuthzLayer`] / [`authz::AuthzService`] over a
//!   [`authz::MethodPolicy`] ([`authz::AuthzError`]).
//! - [`jwt`]: [`jwt::JwtLayer`] / [`jwt::JwtService`] over a [`jwt::TokenValidator`] and
//!   [`jwt::JwtRules`] ([`jwt::JwtError`]).
//! - [`client`]: [`client::MtlsConnector`] (also a connector for
//!   `tonic::transport::Endpoint`), [`client::BearerInterceptor`] over a
//!   [`client::TokenSource`] ([`client::StaticToken`], [`client::FileToken`], any
//!   `Source<String>` of the family's rotation model [`mtls_identity::source`], closures).
//! - [`balance`]: [`balance::BalancedChannel`] / [`balance::BalancedChannelBuilder`].
//!   Endpoints from DNS ([`balance::BalancedChannel::builder`]), a static list
//!   ([`balance::BalancedChannel::static_list`] of [`balance::BalancedEndpoint`]s, each
//!   with its own server name or connector if needed), pushed changes
//!   ([`balance::endpoint_channel`]: [`balance::EndpointSender`],
//!   [`balance::EndpointReceiver`]), or your own [`balance::Discovery`] of
//!   [`balance::EndpointChange`]s ([`balance::BalancedChannel::discovery`]);
//!   [`balance::LoadPolicy`], [`balance::Backoff`], per-call [`balance::WaitForReady`],
//!   introspection with [`balance::EndpointInfo`], [`balance::EndpointState`],
//!   [`balance::ChannelState`], [`balance::ResolutionState`]; which endpoint served a call:
//!   the [`balance::ServedBy`] response extension.
//! - [`metrics`]: the metric names; [`testing`]: a loopback DNS server for tests.
//!
//! # Features
//! - `balance` (on by default): the client side, [`balance::BalancedChannel`] and its builder,
//!   policies and states. It brings `hickory-resolver` (DNS with TTLs), tower's `balance`,
//!   `buffer`, `discover`, `load` and `ready-cache` parts, `tonic-health` (endpoint health
//!   checks), `serde`/`serde_json` (gRPC service configs) and `futures-util`.
//! - `jwt` (on by default): [`jwt::JwtLayer`] / [`jwt::JwtService`] over a [`jwt::TokenValidator`], with
//!   `mtls_jwt::Validator` plugged in. It brings `mtls-jwt` (without its `remote` feature:
//!   enable `mtls-jwt/remote` for a JWKS URL).
//! - `testing` (off by default; implies `balance`): [`testing::LoopbackDns`], a real authoritative DNS server
//!   on loopback (hickory-server, in process) whose records change at run time, for tests
//!   of a DNS-balanced channel (NXDOMAIN, NODATA, changing sets). Our own tests and the
//!   bookstore example use it.
//!
//! With `default-features = false` the crate is the server side — [`server::MtlsIncoming`],
//! [`server::ServerOptions`], [`authz::AuthzLayer`], [`PeerIdentityExt`] — plus [`client::MtlsConnector`] and
//! [`client::BearerInterceptor`], in about 120 crates instead of 175 (the table is in the
//! repository's README).
//! - `metrics` (off by default): records through the `metrics` facade (the application
//!   installs the exporter): every TLS handshake [`server::MtlsIncoming`] accepts and
//!   [`client::MtlsConnector`] makes, by result (`grpc.{server,client}.tls.handshakes`, see
//!   `mtls_core::metrics`); gRFC A66's per-call metrics of every [`balance::BalancedChannel`] call
//!   and attempt, and of servers wrapped in `metrics::CallMetricsLayer`; authorization,
//!   balancer, retry and DNS counters. The repository's METRICS.md lists every name.
//! - `workload-api` (off by default): SPIFFE Workload API identities. `WorkloadJwtToken`
//!   is a [`client::TokenSource`] of JWT-SVIDs from `FetchJWTSVID`, cached and refreshed at half of
//!   the remaining lifetime; and `mtls_core::WorkloadApiSource` (enabled with it) is the
//!   identity and trust source for [`server::MtlsIncoming`] / [`client::MtlsConnector`] /
//!   [`balance::BalancedChannel`] configs, so servers and channels rotate with the agent.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! # #[cfg(feature = "workload-api")] {
//! use mtls_core::{Authorize, ServerConfigBuilder, WorkloadApiSource};
//! use mtls_tonic::client::{BearerInterceptor, WorkloadJwtToken};
//! let source = WorkloadApiSource::builder().connect().await?; // $SPIFFE_ENDPOINT_SOCKET
//! let server_config = ServerConfigBuilder::new(source.clone(), source.clone())
//!     .authorize(Authorize::member_of("bookstore.local".parse()?))
//!     .build()?;
//! let bearer = BearerInterceptor::new(WorkloadJwtToken::builder(["bookstore"]).connect().await?);
//! # }
//! # Ok(()) }
//! ```
//!
//! # Status codes
//! Rejected client certificate: the handshake fails (no gRPC status). Method not allowed for
//! the peer: PERMISSION_DENIED naming peer and method. Missing/invalid/expired token:
//! UNAUTHENTICATED ("Jwt is missing", "Jwt verification fails: …"). Audience not allowed,
//! or token subject ≠ peer SPIFFE ID with binding on: PERMISSION_DENIED. No ready endpoint
//! in a [`balance::BalancedChannel`] within the bound: UNAVAILABLE naming each endpoint's state and
//! the DNS state; a transport failure of a call in flight: UNAVAILABLE.
//!
//! A refused caller is told who was refused for what and Envoy's failure name, never the
//! policy: not the identities a method allows, not the audiences or issuers a token must
//! have (`peer spiffe://…/sa/intruder may not call /pkg.Svc/Method`,
//! `Audiences in Jwt are not allowed: presented ["other"]`). The server's log has the
//! whole expected-vs-presented detail at `warn`, a few lines per second at most;
//! `detailed_denials(true)` on [`authz::AuthzLayer`] / [`jwt::JwtLayer`] sends it to callers too, for
//! development.
//!
//! # Design notes
//! - Endpoints are tower services that are ready only while their HTTP/2 connection is up
//!   *and the server has sent its first HTTP/2 frame*: with TLS 1.3 the client finishes its
//!   handshake before the server has checked the client certificate, so "TLS done" alone
//!   would briefly route calls to a server that is about to reject us.
//! - An endpoint's `poll_ready` never fails (tower's balancer would drop it for good); it
//!   stays pending while its task reconnects with backoff, and wakes the balancer on change.
//! - Endpoint tasks connect eagerly and discovery runs in its own task, so new endpoints are
//!   connected and removed ones drained whether or not calls are flowing.
//! - Fail-fast as gRPC: the channel's state ([`balance::ChannelState`]) is READY when any endpoint
//!   is, TRANSIENT_FAILURE when none is and every endpoint has failed since it was last ready
//!   (or DNS names none), CONNECTING otherwise. In TRANSIENT_FAILURE a call fails UNAVAILABLE
//!   at once — also a new channel's first call, once its first attempts failed; while
//!   CONNECTING it waits up to [`balance::BalancedChannelBuilder::ready_timeout`]. Wait-for-ready is
//!   per call ([`balance::WaitForReady`]) or per channel ([`balance::BalancedChannelBuilder::wait_for_ready`]),
//!   bounded by the call's `grpc-timeout`; DEADLINE_EXCEEDED then names each endpoint's state
//!   and last error like UNAVAILABLE does.
//! - Transparent retry (gRFC A6): a call that never reached a server application — handed
//!   back unsent by hyper, refused by h2 after a GOAWAY, above the GOAWAY's last-stream-id,
//!   or answered REFUSED_STREAM — is re-dispatched to a ready endpoint without the caller
//!   seeing it. A call that may have reached the application is never retried implicitly.
//!   Bodies complete at once (unary, buffered client streaming, ≤ 256 KiB) are replayable;
//!   a streaming body still being produced is retried only when hyper hands it back unsent.
//! - DNS: a failure (timeout, refused, SERVFAIL) keeps the last good set. "No records"
//!   (NXDOMAIN/NODATA) after a good answer keeps READY endpoints for a grace
//!   ([`balance::BalancedChannelBuilder::empty_answer_grace`], default 60 s; shown as "not in DNS
//!   since …") and drops the others; [`balance::BalancedChannelBuilder::strict_empty_answer`] drops
//!   everything at once.
//!
//! # Rotation reaches live connections: recycling
//! Certificates are checked at the handshake, so an HTTP/2 connection keeps the identities
//! it started with. A rotated server or client certificate reaches long-lived connections
//! when servers recycle them, as grpc-go's `MaxConnectionAge` does:
//!
//! ```no_run
//! # async fn run(config: rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use mtls_tonic::server::{ConnectionAge, MtlsIncoming, ServerOptions};
//! // GOAWAY after ~5 min (± 10 %), in-flight calls get 30 s more, then the connection closes.
//! let options = ServerOptions::default().max_connection_age(Some(ConnectionAge::new(
//!     Duration::from_secs(300),
//!     Duration::from_secs(30),
//! )));
//! let listener = options.bind("0.0.0.0:50051".parse()?)?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! options
//!     .server() // the HTTP/2 limits and the GOAWAY at the connection's age
//!     .add_service(health)
//!     .serve_with_incoming(MtlsIncoming::configured(listener, config, options.clone()))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! With identities from a rotating source (`mtls_core::IdentityHandle`, the Workload API,
//! files), every connection made after a rotation uses the new certificates; recycling
//! bounds how long an old one lives. A [`balance::BalancedChannel`] loses no call to it: calls the
//! GOAWAY refused are re-dispatched, the draining connection gets no new call, and the
//! endpoint reconnects at once. A server that shuts down (a rolling update) does the same
//! with `serve_with_incoming_shutdown`: GOAWAY, drain, exit.
//!
//! # Performance
//! `benches/balanced.rs` (loopback, 2 cores shared by client and replicas, 32 concurrent
//! unary calls, same TLS): `BalancedChannel` over 3 replicas ≈ 45k calls/s vs a plain tonic
//! `Channel` to one replica ≈ 41k calls/s (interleaved ratio 1.09); over the same single
//! replica the balanced channel is within noise of the plain one (≈ 0.98×).
//!
//! # Dependencies
//! - `mtls-jwt`: the JWT validator; `mtls_jwt::Validator` is a [`jwt::TokenValidator`], so
//!   `JwtLayer::new(validator, rules)` is all a server needs (any other validator plugs in
//!   through the same trait).
//! - `mtls-core`: rustls configurations, SPIFFE authorizers, SAN matchers, `PeerIdentity`.
//! - `rustls`, `rustls-pki-types`, `tokio-rustls`: the TLS handshakes (aws-lc-rs provider).
//! - `tokio`: runtime, sockets, timers, sync.
//! - `tonic`, `tonic-health`: gRPC server/client types, `grpc.health.v1` for endpoint health;
//!   tonic is re-exported ([`mtls_tonic::tonic`](crate::tonic)) so an application uses the
//!   version our types are built on (rustls likewise as `mtls_core::rustls`).
//! - `tower`, `tower-layer`, `tower-service`: p2c balancer, ready cache, buffer, load metrics,
//!   and the middleware traits.
//! - `hyper`, `hyper-util`, `http`, `http-body`, `bytes`: one HTTP/2 connection per endpoint.
//! - `hickory-resolver`: A/AAAA resolution with TTLs and a configurable nameserver
//!   (DNS-over-TLS/HTTPS features off).
//! - `hickory-server`, `hickory-proto` (feature `testing` only): the loopback DNS server.
//! - `tokio-stream`, `futures-util`, `pin-project-lite`: stream and future plumbing.
//! - `fastrand`: jitter for backoff and refresh.
//! - `socket2`: TCP keepalive time on the connector's sockets
//!   ([`client::MtlsConnector::tcp_keepalive`]; tokio sets only on or off).
//! - `thiserror`, `tracing`: errors and events.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the items of every feature (docs.rs builds with all of them); a
// build with fewer features has nothing to link to.
#![cfg_attr(
    not(all(
        feature = "balance",
        feature = "jwt",
        feature = "testing",
        feature = "workload-api",
        feature = "metrics"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

/// `get_ref`, `get_mut` and `into_inner` (tower's accessor trio) for a middleware service
/// whose wrapped service is its `inner: S` field: written once for the crate's services.
macro_rules! inner_service_accessors {
    ($service:ident<S $(, $param:ident)*>) => {
        impl<S $(, $param)*> $service<S $(, $param)*> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
pub(crate) use inner_service_accessors;

// Public modules, tower style (`tower::balance`, `tonic::transport`): one per concern.
// The root keeps the crate-wide vocabulary only, as tower keeps `Service`/`ServiceExt`
// and tonic `Request`/`Status`: `Error`, `Result`, `MethodPattern`, `Keepalive` (server and
// balancer), `PeerIdentityExt`, `tonic`.
pub mod authz;
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub mod balance;
pub mod client;
mod denial;
mod error;
mod frames;
mod inner_or_ready;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
mod keepalive;
mod method;
pub mod metrics;
pub mod server;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use error::{Error, Result};
pub use keepalive::Keepalive;
pub use method::MethodPattern;
pub use server::PeerIdentityExt;

/// The tonic our servers, layers and channels are built for: generate and call services
/// with this one (or pin the same version) so `tonic::Request`, `Status` and the transport
/// types always match. The rustls of our configs is `mtls_core::rustls`.
///
/// ```
/// let status: mtls_tonic::tonic::Status = mtls_tonic::tonic::Status::permission_denied("no");
/// assert_eq!(status.code(), mtls_tonic::tonic::Code::PermissionDenied);
/// ```
pub use tonic;
