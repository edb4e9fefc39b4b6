//! `BalancedChannel`: the handle, its builder and its `Service` impl.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Status, body::Body};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PeakEwma},
};
use tower_service::Service;

use super::{
    Backoff, EndpointInfo, ResolutionState,
    ctx::{Ctx, EndpointSettings},
    discovery::{self, DnsSettings},
    endpoint::Subchannel,
    gate::{BoxFuture, ReadyGate},
    round_robin::RoundRobin,
    target::Target,
};
use crate::{MtlsConnector, Result, client::parse_server_name_pub};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a call picks among the ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadPolicy {
    /// Power of two choices comparing calls in flight (tower `p2c` + pending requests).
    #[default]
    PendingRequests,
    /// Power of two choices comparing a peak-EWMA of response latency (tower `PeakEwma`).
    PeakEwma,
    /// Each call to the next ready endpoint in turn.
    RoundRobin,
}

/// Builder for [`BalancedChannel`]; see [`BalancedChannel::builder`].
#[derive(Debug)]
#[must_use]
pub struct BalancedChannelBuilder {
    target: String,
    connector: MtlsConnector,
    dns: DnsSettings,
    endpoint: EndpointSettings,
    policy: LoadPolicy,
    ready_timeout: Option<Duration>,
    buffer: usize,
}

impl BalancedChannelBuilder {
    /// Ask this DNS server (UDP and TCP) instead of the system's resolvers.
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.dns.nameserver = Some(addr);
        self
    }

    /// Per-query DNS timeout (default 5 s) and attempts (default 2).
    pub fn dns_timeout(mut self, timeout: Duration, attempts: usize) -> Self {
        self.dns.timeout = timeout;
        self.dns.attempts = attempts;
        self
    }

    /// Re-resolve at the records' TTL, but no sooner than `floor` and no later than
    /// `ceiling` (defaults 5 s and 30 s), spread by `± jitter` (default 0.1).
    pub fn refresh(mut self, floor: Duration, ceiling: Duration, jitter: f64) -> Self {
        self.dns.refresh_floor = floor.min(ceiling);
        self.dns.refresh_ceiling = ceiling.max(floor);
        self.dns.refresh_jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// A failed connection triggers a re-resolution at once, but at most once per `interval`
    /// after the previous one (default 5 s).
    pub fn reresolve_min_interval(mut self, interval: Duration) -> Self {
        self.dns.reresolve_min_interval = interval;
        self
    }

    /// Retry schedule while DNS is unreachable (default 1 s × 1.6, capped by the refresh ceiling).
    pub fn dns_failure_backoff(mut self, backoff: Backoff) -> Self {
        self.dns.failure_backoff = backoff;
        self
    }

    /// Per-endpoint reconnect backoff (default gRPC's: 1 s × 1.6, jitter 0.2, cap 120 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.endpoint.backoff = backoff;
        self
    }

    /// Bound on TCP + TLS + the server's first HTTP/2 frame per attempt (default 20 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.connect_timeout = timeout;
        self.connector = self.connector.connect_timeout(timeout);
        self
    }

    /// HTTP/2 keepalive PING every `interval`, connection dropped when a PING is not answered
    /// within `timeout` (default 20 s / 10 s). `None` turns keepalive off.
    pub fn keepalive(mut self, keepalive: Option<(Duration, Duration)>) -> Self {
        self.endpoint.keepalive = keepalive;
        self
    }

    /// Watch `grpc.health.v1` for `service` ("" = the whole server) on every endpoint; only
    /// SERVING endpoints are picked. Off by default.
    pub fn health_check(mut self, service: impl Into<String>) -> Self {
        self.endpoint.health_service = Some(service.into());
        self
    }

    /// How long a removed endpoint may keep serving its in-flight calls (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.drain_timeout = timeout;
        self
    }

    /// How calls pick among ready endpoints (default p2c over pending requests).
    pub fn load_policy(mut self, policy: LoadPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// With no ready endpoint, calls fail UNAVAILABLE after waiting `timeout` (default 10 s);
    /// while the channel stays without a ready endpoint, later calls fail at once.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Calls wait for a ready endpoint without the fail-fast bound, until their own deadline
    /// (`grpc-timeout`, e.g. [`tonic::Request::set_timeout`]) fails them DEADLINE_EXCEEDED.
    pub fn wait_for_ready(mut self) -> Self {
        self.ready_timeout = None;
        self
    }

    /// Calls that may queue in front of the balancer (default 1024).
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer = size.max(1);
        self
    }

    /// Starts the channel: DNS discovery and one connection task per endpoint. Must be
    /// called within a tokio runtime.
    pub fn build(self) -> Result<BalancedChannel> {
        let target = Target::parse(&self.target)?;
        let authority: http::uri::Authority =
            target
                .authority()
                .parse()
                .map_err(|_| crate::Error::InvalidTarget {
                    target: self.target.clone(),
                    expected: "host:port, dns:///host:port or [ipv6]:port",
                })?;
        let sni = match self.connector.server_name_value() {
            Some(name) => name.clone(),
            None => parse_server_name_pub(&target.host)?,
        };
        let resolver = match target.ip {
            Some(_) => None,
            None => Some(discovery::build_resolver(&self.dns)?),
        };
        let ctx = Arc::new(Ctx::new(
            target,
            self.connector,
            sni,
            authority,
            self.endpoint,
        ));
        let (tx, rx) = mpsc::unbounded_channel::<Change<SocketAddr, Subchannel>>();
        let changes = UnboundedReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
        let service: ReadyGate<BoxedBalancer> = ReadyGate::new(
            match self.policy {
                LoadPolicy::PendingRequests => BoxedBalancer::new(Balance::new(changes)),
                LoadPolicy::PeakEwma => BoxedBalancer::new(Balance::new(changes.map(|change| {
                    change.map(|change| match change {
                        Change::Insert(key, svc) => Change::Insert(
                            key,
                            PeakEwma::new(
                                svc,
                                Duration::from_millis(30),
                                10e9,
                                CompleteOnResponse::default(),
                            ),
                        ),
                        Change::Remove(key) => Change::Remove(key),
                    })
                }))),
                LoadPolicy::RoundRobin => BoxedBalancer::new(RoundRobin::new(changes)),
            },
            ctx.clone(),
            self.ready_timeout,
        );
        let buffer = Buffer::new(service, self.buffer);
        let discovery = tokio::spawn(discovery::run(ctx.clone(), resolver, self.dns, tx));
        Ok(BalancedChannel {
            buffer,
            ctx: ctx.clone(),
            _tasks: Arc::new(Tasks { discovery, ctx }),
        })
    }
}

/// The balancer behind the fail-fast gate, type-erased over the load policy.
struct BoxedBalancer {
    inner: Box<
        dyn Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = BoxError,
                Future = BoxFuture,
            > + Send,
    >,
}

impl BoxedBalancer {
    fn new<S>(inner: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Box::new(Boxing(inner)),
        }
    }
}

struct Boxing<S>(S);

impl<S> Service<http::Request<Body>> for Boxing<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        Box::pin(self.0.call(request))
    }
}

impl Service<http::Request<Body>> for BoxedBalancer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        self.inner.call(request)
    }
}

/// Stops discovery and drains every endpoint when the last channel handle is dropped.
#[derive(Debug)]
struct Tasks {
    discovery: JoinHandle<()>,
    ctx: Arc<Ctx>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.discovery.abort();
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
/// - dials every address through the [`MtlsConnector`] with the *service name* as TLS server
///   name, and counts an endpoint ready only once the server has sent its first HTTP/2 frame
///   (so an endpoint that rejected our certificate is never picked);
/// - reconnects with gRPC's backoff (1 s × 1.6, jitter, cap) per endpoint;
/// - picks with tower's p2c over calls in flight (or peak EWMA, or round robin), only among
///   ready (and, with [`BalancedChannelBuilder::health_check`], SERVING) endpoints;
/// - never hangs: with no ready endpoint a call fails UNAVAILABLE after
///   [`BalancedChannelBuilder::ready_timeout`], naming each endpoint's state and the DNS state;
/// - drains removed endpoints: no new calls, in-flight calls finish;
/// - reports every change as a `tracing` event and in [`BalancedChannel::endpoints`].
///
/// Cloning is cheap; all clones share the connections. Use it wherever tonic takes a
/// transport, e.g. `HealthClient::new(channel)`.
///
/// ```no_run
/// # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use mtls_tonic::{BalancedChannel, MtlsConnector};
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
#[derive(Clone)]
pub struct BalancedChannel {
    buffer: Buffer<http::Request<Body>, BoxFuture>,
    ctx: Arc<Ctx>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("target", &self.ctx.target.to_string())
            .field("endpoints", &self.ctx.endpoints())
            .field("resolution", &self.ctx.resolution())
            .finish_non_exhaustive()
    }
}

impl BalancedChannel {
    /// A builder for a channel to `target` (`host:port`, `dns:///host:port`, or an IP
    /// literal with port for a single endpoint), dialing through `connector`. Unless the
    /// connector has a server name, the target's host is the TLS server name.
    pub fn builder(target: impl Into<String>, connector: MtlsConnector) -> BalancedChannelBuilder {
        BalancedChannelBuilder {
            target: target.into(),
            connector,
            dns: DnsSettings {
                nameserver: None,
                timeout: Duration::from_secs(5),
                attempts: 2,
                refresh_floor: Duration::from_secs(5),
                refresh_ceiling: Duration::from_secs(30),
                refresh_jitter: 0.1,
                reresolve_min_interval: Duration::from_secs(5),
                failure_backoff: Backoff::default(),
            },
            endpoint: EndpointSettings {
                backoff: Backoff::default(),
                connect_timeout: Duration::from_secs(20),
                keepalive: Some((Duration::from_secs(20), Duration::from_secs(10))),
                health_service: None,
                drain_timeout: Duration::from_secs(30),
            },
            policy: LoadPolicy::default(),
            ready_timeout: Some(Duration::from_secs(10)),
            buffer: 1024,
        }
    }

    /// The current endpoints (including draining ones), sorted by address.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.ctx.endpoints()
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
        self.buffer.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        let deadline = grpc_timeout(request.headers()).map(|t| Box::pin(tokio::time::sleep(t)));
        ResponseFuture {
            inner: self.buffer.call(request),
            deadline,
        }
    }
}

/// The response future of [`BalancedChannel`]; fails DEADLINE_EXCEEDED at the call's
/// `grpc-timeout`.
pub struct ResponseFuture {
    inner: <Buffer<http::Request<Body>, BoxFuture> as Service<http::Request<Body>>>::Future,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(result) = Pin::new(&mut self.inner).poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Box::new(Status::deadline_exceeded(
                "deadline exceeded before a response",
            ))));
        }
        Poll::Pending
    }
}

/// Parses a `grpc-timeout` header (`<digits><unit>`, gRPC over HTTP/2 spec).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&headers), None);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_millis(250)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3S"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_secs(3)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3x"));
        assert_eq!(grpc_timeout(&headers), None);
    }
}
