//! `BalancedChannel`: the handle, introspection and its `Service` impl.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::task::JoinHandle;
use tonic::body::Body;
use tower::buffer::Buffer;
use tower_service::Service;

use super::dial::{Connector, Dialer};
use super::{
    Backoff, BalancedChannelBuilder, BalancedEndpoint, ChannelState, Discovery, EndpointInfo,
    LoadPolicy, OutlierDetection, ResolutionState, ServiceConfig,
    builder::Source,
    call::ResponseFuture,
    ctx::{CallDefaults, CallSettings, Ctx, EndpointSettings, Http2Settings},
    discovery::DnsSettings,
    gate::BoxFuture,
    limit::Gate,
    source::StaticList,
};
use crate::Result;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Stops discovery and drains every endpoint when the last channel handle (or call) is
/// dropped; holds the buffer handle calls clone to re-dispatch.
pub(crate) struct Tasks {
    pub(super) discovery: JoinHandle<()>,
    pub(super) outliers: JoinHandle<()>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) buffer: Buffer<http::Request<Body>, BoxFuture>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.discovery.abort();
        self.outliers.abort();
        for endpoint in self.ctx.all() {
            endpoint.remove();
        }
    }
}

/// A gRPC channel over every address a DNS name resolves to, with one mTLS HTTP/2
/// connection per address and load-aware picking among the ready ones.
///
/// It is what Envoy's STRICT_DNS cluster does for a sidecar, in-process:
///
/// - resolves all A/AAAA records with hickory (system configuration or
///   [`BalancedChannelBuilder::nameserver`]) and re-resolves at the TTL within a floor and a
///   ceiling, with jitter; a failed connection triggers an early (rate-limited) re-resolution;
///   DNS failures keep the last good set, while an authoritative "no records" empties it
///   ([`BalancedChannel::resolution`] tells the two apart);
/// - dials every address through the [`MtlsConnector`](crate::client::MtlsConnector) with
///   the *service name* as TLS server name (or through any other
///   [`Connector`](crate::balance::Connector)), and counts an endpoint ready only once the server has sent its first HTTP/2 frame
///   (so an endpoint that rejected our certificate is never picked);
/// - reconnects with gRPC's backoff (1 s × 1.6, jitter, cap) per endpoint;
/// - picks with p2c over calls in flight (or peak EWMA, or round robin), only among
///   ready (and, with [`BalancedChannelBuilder::health_check`], SERVING) endpoints. With
///   the default p2c each call picks in its own task from a lock-free snapshot of the ready
///   endpoints, as grpc-go's picker does (no hop through a balancer task); peak EWMA and
///   round robin run tower's balancer behind a buffer;
/// - fails fast like gRPC: while every endpoint has failed its latest attempt (or DNS names
///   none) a call fails UNAVAILABLE at once, naming each endpoint's state, last error and the
///   DNS state; while endpoints are still connecting it waits up to
///   [`BalancedChannelBuilder::ready_timeout`]; with wait-for-ready (per call with
///   [`WaitForReady`](crate::balance::WaitForReady), or [`BalancedChannelBuilder::wait_for_ready`]) it
///   waits until its deadline, and DEADLINE_EXCEEDED carries the same explanation;
/// - re-dispatches transparently a call that never reached a server (not yet written, queued
///   on a connection that closed, refused after a GOAWAY or with REFUSED_STREAM): rolling
///   restarts and server-side connection recycling lose no call. Request bodies complete at
///   once (unary and buffered client-streaming calls, up to 256 KiB) are replayable; a
///   streaming call whose body is still being produced is retried only when hyper hands it
///   back unsent;
/// - drains removed endpoints: no new calls, in-flight calls finish;
/// - reports every change as a `tracing` event and in [`BalancedChannel::endpoints`].
///
/// Cloning is cheap; all clones share the connections. Use it wherever tonic takes a
/// transport, e.g. `HealthClient::new(channel)`.
///
/// ```no_run
/// # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use mtls_tonic::{balance::BalancedChannel, client::MtlsConnector};
/// let channel = BalancedChannel::builder(
///     "bookstore.default.svc.cluster.local:50051",
///     MtlsConnector::new(client_config),
/// )
/// .ready_timeout(Duration::from_secs(2))
/// .build()?;
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
/// for endpoint in channel.endpoints() {
///     println!("{} {} in flight: {}", endpoint.addr, endpoint.state, endpoint.in_flight);
/// }
/// # Ok(()) }
/// ```
pub struct BalancedChannel {
    pub(super) buffer: Buffer<http::Request<Body>, BoxFuture>,
    /// Whether `buffer` holds a slot reserved by `poll_ready` for the next `call`.
    pub(super) reserved: bool,
    pub(super) ctx: Arc<Ctx>,
    pub(super) tasks: Arc<Tasks>,
    /// Concurrency and rate limits (`None` when neither is set).
    pub(super) gate: Option<Gate>,
}

impl Clone for BalancedChannel {
    /// Another handle on the same connections (with no buffer slot of its own reserved).
    fn clone(&self) -> Self {
        Self {
            buffer: self.buffer.clone(),
            reserved: false,
            ctx: self.ctx.clone(),
            tasks: self.tasks.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("target", &self.ctx.target.to_string())
            .field("endpoints", &self.ctx.endpoints())
            .field("state", &self.ctx.state())
            .field("resolution", &self.ctx.resolution())
            .finish_non_exhaustive()
    }
}

impl BalancedChannel {
    /// A builder for a channel to `target` (`host:port`, `dns:///host:port`, or an IP
    /// literal with port for a single endpoint), dialing through `connector`. Unless the
    /// connector has a server name, the target's host is the TLS server name.
    ///
    /// `connector` is an [`MtlsConnector`](crate::client::MtlsConnector) or any other
    /// [`Connector`] (a `Service<Uri>`, as tonic's `Endpoint::connect_with_connector` takes),
    /// e.g. plain TCP to an h2c server:
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use mtls_tonic::balance::BalancedChannel;
    /// let plain = tower::service_fn(|uri: http::Uri| async move {
    ///     let addr = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    ///     tokio::net::TcpStream::connect(addr).await.map(hyper_util::rt::TokioIo::new)
    /// });
    /// let channel = BalancedChannel::builder("127.0.0.1:50051", plain).build()?;
    /// # let _ = channel; Ok(()) }
    /// ```
    pub fn builder(target: impl Into<String>, connector: impl Connector) -> BalancedChannelBuilder {
        Self::builder_from(target.into(), Dialer::new(connector), None)
    }

    /// A builder for a channel over a fixed list of endpoints, without DNS (tonic's
    /// `Channel::balance_list`). `service` (`host:port`) is the HTTP/2 `:authority` and,
    /// unless the connector or an endpoint has its own, the TLS server name. Every
    /// endpoint gets what DNS endpoints get: its own mTLS connection, health, drain,
    /// fail-fast, outlier ejection and retries.
    ///
    /// ```no_run
    /// # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// use mtls_tonic::{balance::{BalancedChannel, BalancedEndpoint}, client::MtlsConnector};
    /// let channel = BalancedChannel::static_list(
    ///     "bookstore.test:50051",
    ///     [
    ///         BalancedEndpoint::new("127.0.0.2:50051".parse()?),
    ///         BalancedEndpoint::new("127.0.0.3:50051".parse()?),
    ///     ],
    ///     MtlsConnector::new(client_config),
    /// )
    /// .build()?;
    /// let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    /// # Ok(()) }
    /// ```
    pub fn static_list(
        service: impl Into<String>,
        endpoints: impl IntoIterator<Item = BalancedEndpoint>,
        connector: impl Connector,
    ) -> BalancedChannelBuilder {
        let list = StaticList(endpoints.into_iter().collect());
        Self::builder_from(service.into(), Dialer::new(connector), Some(Box::new(list)))
    }

    /// A builder for a channel whose endpoints come from `discovery`: a push handle
    /// ([`endpoint_channel`](crate::balance::endpoint_channel)) or a user's own [`Discovery`]
    /// (Kubernetes EndpointSlices, Consul, xDS EDS, a test fixture). `service` as for
    /// [`BalancedChannel::static_list`].
    pub fn discovery(
        service: impl Into<String>,
        discovery: impl Discovery,
        connector: impl Connector,
    ) -> BalancedChannelBuilder {
        Self::builder_from(
            service.into(),
            Dialer::new(connector),
            Some(Box::new(discovery)),
        )
    }

    fn builder_from(
        target: String,
        connector: Dialer,
        source: Option<Box<dyn Discovery>>,
    ) -> BalancedChannelBuilder {
        BalancedChannelBuilder {
            source: Source(source),
            target,
            connector,
            dns: DnsSettings {
                nameserver: None,
                timeout: super::DnsTimeout::default().timeout,
                attempts: super::DnsTimeout::default().attempts,
                refresh_floor: super::Refresh::default().floor,
                refresh_ceiling: super::Refresh::default().ceiling,
                refresh_jitter: super::Refresh::default().jitter,
                reresolve_min_interval: Duration::from_secs(5),
                failure_backoff: Backoff::default(),
                empty_answer_grace: Duration::from_secs(60),
            },
            endpoint: EndpointSettings {
                backoff: Backoff::default(),
                connect_timeout: Duration::from_secs(20),
                keepalive: Some(crate::Keepalive::default()),
                health_service: None,
                drain_timeout: Duration::from_secs(30),
                http2: Http2Settings::default(),
            },
            policy: LoadPolicy::default(),
            calls: CallSettings {
                ready_timeout: Some(Duration::from_secs(10)),
                wait_for_ready: false,
                defaults: CallDefaults::default(),
            },
            outlier: OutlierDetection::default(),
            service_config: ServiceConfig::default(),
            buffer: 1024,
        }
    }

    /// The current endpoints (including draining ones), sorted by address.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.ctx.endpoints()
    }

    /// The channel's connectivity, aggregated over its endpoints as gRPC does.
    pub fn state(&self) -> ChannelState {
        self.ctx.state()
    }

    /// The outcome of the latest DNS resolution.
    pub fn resolution(&self) -> ResolutionState {
        self.ctx.resolution()
    }

    /// Asks for a DNS re-resolution now (subject to the minimum re-resolution interval).
    pub fn reresolve(&self) {
        self.ctx.reresolve.notify_one();
    }
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(gate) = self.gate.as_mut() {
            std::task::ready!(gate.poll_ready(cx));
        }
        // A ready endpoint: the call picks it itself, no buffer slot needed (if it is gone
        // by then, the call waits in its own future).
        if self.reserved || self.ctx.has_ready() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.buffer.poll_ready(cx))?;
        self.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> ResponseFuture {
        self.ctx.calls.defaults.apply(&mut request);
        let permit = self.gate.as_mut().and_then(Gate::take);
        let buffer = std::mem::take(&mut self.reserved).then_some(&mut self.buffer);
        ResponseFuture::start(&self.tasks, buffer, request).holding(permit)
    }
}
