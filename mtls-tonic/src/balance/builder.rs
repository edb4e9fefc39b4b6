//! Configuration of a [`BalancedChannel`](super::BalancedChannel) and its assembly:
//! Buffer -> fail-fast gate -> balancer (p2c or round robin) over endpoints from DNS, a
//! static list or a [`Discovery`] source.

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::UnboundedReceiverStream};
use tonic::body::Body;
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PeakEwma},
};
use tower_service::Service;

use super::{
    Backoff, BalancedChannel, Discovery, OutlierDetection, RetryPolicy, ServiceConfig,
    channel::Tasks,
    ctx::{CallSettings, Ctx, EndpointSettings},
    discovery::{self, DnsSettings},
    endpoint::Subchannel,
    gate::{BoxFuture, ReadyGate},
    outlier,
    retry::Retries,
    round_robin::RoundRobin,
    target::Target,
};
use crate::{Keepalive, Result, client::parse_server_name_pub};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One DNS query's deadline and how many times it is sent before a resolution fails
/// (defaults 5 s, 2).
///
/// ```
/// use std::time::Duration;
/// use mtls_tonic::balance::DnsTimeout;
/// let dns = DnsTimeout::new(Duration::from_millis(300), 1);
/// assert_eq!((dns.timeout, dns.attempts), (Duration::from_millis(300), 1));
/// assert_eq!(DnsTimeout::default().attempts, 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsTimeout {
    /// How long one query may take.
    pub timeout: Duration,
    /// How many times a query is sent.
    pub attempts: usize,
}

impl DnsTimeout {
    /// Each query given `timeout`, sent up to `attempts` times.
    pub fn new(timeout: Duration, attempts: usize) -> Self {
        Self { timeout, attempts }
    }
}

impl Default for DnsTimeout {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), 2)
    }
}

/// When DNS is asked again: at the records' TTL, but no sooner than `floor` and no later
/// than `ceiling`, spread by `± jitter` (a fraction; defaults 5 s, 30 s, 0.1).
///
/// ```
/// use std::time::Duration;
/// use mtls_tonic::balance::Refresh;
/// let refresh = Refresh::new(Duration::from_secs(1), Duration::from_secs(10), 0.0);
/// assert_eq!(refresh.ceiling, Duration::from_secs(10));
/// assert_eq!(Refresh::default().floor, Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Refresh {
    /// The earliest re-resolution after an answer, whatever its TTL.
    pub floor: Duration,
    /// The latest re-resolution after an answer, whatever its TTL.
    pub ceiling: Duration,
    /// Spread of each delay, `± jitter` of it (clamped to 0..=1).
    pub jitter: f64,
}

impl Refresh {
    /// Re-resolve at the TTL within `floor..=ceiling`, spread by `± jitter`.
    pub fn new(floor: Duration, ceiling: Duration, jitter: f64) -> Self {
        Self {
            floor,
            ceiling,
            jitter,
        }
    }
}

impl Default for Refresh {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(30), 0.1)
    }
}

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
    pub(super) target: String,
    pub(super) connector: super::dial::Dialer,
    pub(super) dns: DnsSettings,
    pub(super) endpoint: EndpointSettings,
    pub(super) policy: LoadPolicy,
    pub(super) calls: CallSettings,
    pub(super) outlier: OutlierDetection,
    pub(super) service_config: ServiceConfig,
    pub(super) buffer: usize,
    /// Endpoints from a static list or a [`Discovery`] instead of DNS.
    pub(super) source: Source,
}

/// Where the endpoints come from: DNS (`None`) or a discovery source.
pub(super) struct Source(pub(super) Option<Box<dyn Discovery>>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Discovery" } else { "Dns" })
    }
}

impl BalancedChannelBuilder {
    /// Ask this DNS server (UDP and TCP) instead of the system's resolvers.
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.dns.nameserver = Some(addr);
        self
    }

    /// How long one DNS query may take and how many times it is sent ([`DnsTimeout`];
    /// default 5 s, 2 attempts).
    ///
    /// ```
    /// # fn run(connector: mtls_tonic::client::MtlsConnector) {
    /// use std::time::Duration;
    /// use mtls_tonic::balance::{BalancedChannel, DnsTimeout};
    /// let builder = BalancedChannel::builder("bookstore.test:50051", connector)
    ///     .dns_timeout(DnsTimeout::new(Duration::from_millis(300), 1));
    /// # let _ = builder; }
    /// ```
    pub fn dns_timeout(mut self, dns: DnsTimeout) -> Self {
        self.dns.timeout = dns.timeout;
        self.dns.attempts = dns.attempts;
        self
    }

    /// Re-resolve at the records' TTL within [`Refresh`]'s bounds (default 5 s to 30 s,
    /// ± 0.1).
    pub fn refresh(mut self, refresh: Refresh) -> Self {
        let Refresh {
            floor,
            ceiling,
            jitter,
        } = refresh;
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

    /// After a good answer, an empty one (NXDOMAIN or NODATA — a DNS blip, a zone reload)
    /// does not drop endpoints that are READY: they stay, shown as "not in DNS since …",
    /// until their connection ends (they fail, or their server drains them), they stop being
    /// ready, DNS names them again, or `grace` (default 60 s) ends. Endpoints that are not
    /// ready go at once.
    ///
    /// The trade-off: a name deleted on purpose keeps receiving calls for up to `grace` on
    /// connections that still work (as grpc-go keeps its last addresses on a resolver error);
    /// [`BalancedChannelBuilder::strict_empty_answer`] follows DNS at once instead, at the risk
    /// of failing every call during a DNS blip.
    pub fn empty_answer_grace(mut self, grace: Duration) -> Self {
        self.dns.empty_answer_grace = grace;
        self
    }

    /// An empty DNS answer removes every endpoint at once (no grace; calls fail UNAVAILABLE
    /// "DNS: no records" until DNS names endpoints again).
    pub fn strict_empty_answer(mut self) -> Self {
        self.dns.empty_answer_grace = Duration::ZERO;
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
        self.connector = self.connector.map_mtls(|c| c.connect_timeout(timeout));
        self
    }

    /// HTTP/2 keepalive ([`Keepalive`]: a PING every `interval`, the connection dropped when
    /// a PING is not answered within `timeout`; default 20 s / 10 s). `None` turns it off.
    ///
    /// On by default (tonic's `Channel` has it off) so that an endpoint whose server went
    /// silent without closing the connection (a partition, a paused host) stops being picked
    /// within `interval + timeout`, not when TCP gives up. What it costs per call: hyper
    /// notes every received frame (a lock and a clock read in its pinger's shared state)
    /// and checks the PING timer when it polls the connection; no PING is sent while frames
    /// arrive.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
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

    /// While endpoints are still connecting (none ready, not all failed), a call without
    /// wait-for-ready waits at most `timeout` (default 10 s), then fails UNAVAILABLE naming
    /// each endpoint's state. Once every endpoint has failed its latest attempt, calls fail
    /// at once (gRPC's TRANSIENT_FAILURE) whatever this bound.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.calls.ready_timeout = Some(timeout);
        self
    }

    /// Every call waits for a ready endpoint (gRPC's wait-for-ready), until its own deadline
    /// (`grpc-timeout`, e.g. [`tonic::Request::set_timeout`]) fails it DEADLINE_EXCEEDED with
    /// each endpoint's state and last error. A call can opt out with
    /// [`WaitForReady(false)`](crate::balance::WaitForReady), or opt in on a channel without this.
    pub fn wait_for_ready(mut self) -> Self {
        self.calls.wait_for_ready = true;
        self
    }

    /// Outlier detection (default on, conservative: see [`OutlierDetection`]);
    /// [`OutlierDetection::disabled`] turns it off.
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier = detection;
        self
    }

    /// Per-method retry policies, wait-for-ready and retry throttling from a gRPC service
    /// config ([`ServiceConfig::from_json`]). Retries are off unless configured.
    pub fn service_config(mut self, config: ServiceConfig) -> Self {
        self.service_config = config;
        self
    }

    /// `policy` for every method (shorthand for a service config with a default policy;
    /// keeps any throttling set with [`BalancedChannelBuilder::service_config`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.service_config = std::mem::take(&mut self.service_config).retry_all(policy);
        self
    }

    /// A timeout for every call without a shorter `grpc-timeout` of its own (tonic
    /// `Endpoint::timeout`; default none): the call fails DEADLINE_EXCEEDED when it is
    /// over, and the server is told the deadline (`grpc-timeout`).
    ///
    /// ```
    /// # fn f(builder: mtls_tonic::balance::BalancedChannelBuilder) {
    /// let builder = builder.timeout(std::time::Duration::from_secs(5));
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.calls.defaults.timeout = Some(timeout);
        self
    }

    /// The `user-agent` of every call: `user_agent` followed by `mtls-tonic/<version>`
    /// (tonic `Endpoint::user_agent`; default `mtls-tonic/<version>` alone). A call's own
    /// `user-agent` header comes first. Fails with
    /// [`Error::InvalidUserAgent`](crate::Error::InvalidUserAgent) when it is not a valid
    /// header value.
    ///
    /// ```
    /// # fn f(builder: mtls_tonic::balance::BalancedChannelBuilder) -> mtls_tonic::Result<()> {
    /// let builder = builder.user_agent("bookstore-client/1.2")?;
    /// # Ok(()) }
    /// ```
    pub fn user_agent(mut self, user_agent: &str) -> Result<Self> {
        let value = http::HeaderValue::try_from(user_agent).map_err(|_| {
            crate::Error::InvalidUserAgent {
                presented: user_agent.to_owned(),
            }
        })?;
        self.calls.defaults.set_user_agent(&value);
        Ok(self)
    }

    /// HTTP/2 `SETTINGS_INITIAL_WINDOW_SIZE` of each endpoint's connection: response bytes
    /// a stream may receive before the application reads them (tonic
    /// `Endpoint::initial_stream_window_size`; default hyper's, 2 MiB).
    pub fn initial_stream_window_size(mut self, size: u32) -> Self {
        self.endpoint.http2.initial_stream_window_size = Some(size);
        self
    }

    /// HTTP/2 connection-level flow-control window of each endpoint's connection (tonic
    /// `Endpoint::initial_connection_window_size`; default hyper's, 5 MiB).
    pub fn initial_connection_window_size(mut self, size: u32) -> Self {
        self.endpoint.http2.initial_connection_window_size = Some(size);
        self
    }

    /// HTTP/2 adaptive flow control (BDP estimation; tonic `Endpoint::http2_adaptive_window`;
    /// default off): both windows start at the spec's 64 KiB and grow with the measured
    /// bandwidth-delay product. It takes precedence over the fixed window sizes.
    ///
    /// ```
    /// # fn f(builder: mtls_tonic::balance::BalancedChannelBuilder) {
    /// let builder = builder
    ///     .initial_stream_window_size(1 << 20)
    ///     .initial_connection_window_size(4 << 20)
    ///     .http2_adaptive_window(false);
    /// # }
    /// ```
    pub fn http2_adaptive_window(mut self, enabled: bool) -> Self {
        self.endpoint.http2.adaptive_window = enabled;
        self
    }

    /// At most `limit` calls in flight (until their response headers) across every clone
    /// of the channel (tonic `Endpoint::concurrency_limit`; default none): a call over it
    /// waits in `poll_ready`, its deadline running.
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        self.calls.defaults.concurrency_limit = Some(limit.max(1));
        self
    }

    /// At most `num` calls started per `per` across every clone of the channel (tonic
    /// `Endpoint::rate_limit`, a fixed window as tower's `RateLimit`; default none): a call
    /// over it waits in `poll_ready` for the next window.
    ///
    /// ```
    /// # fn f(builder: mtls_tonic::balance::BalancedChannelBuilder) {
    /// let builder = builder
    ///     .concurrency_limit(64)
    ///     .rate_limit(1000, std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn rate_limit(mut self, num: u64, per: Duration) -> Self {
        self.calls.defaults.rate_limit = Some((num.max(1), per));
        self
    }

    /// `TCP_NODELAY` on each endpoint's socket (tonic `Endpoint::tcp_nodelay`; default on).
    /// Applies to the channel's [`MtlsConnector`](crate::client::MtlsConnector) (an endpoint
    /// with its own connector keeps that connector's setting; a user's
    /// [`Connector`](super::Connector) sets its own).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.connector = self.connector.map_mtls(|c| c.tcp_nodelay(enabled));
        self
    }

    /// TCP keepalive probes on each endpoint's socket after `idle` without traffic (tonic
    /// `Endpoint::tcp_keepalive`; default off: HTTP/2 PINGs, [`keepalive`](Self::keepalive),
    /// watch the connection). Applies to the channel's connector, as
    /// [`tcp_nodelay`](Self::tcp_nodelay).
    ///
    /// ```
    /// # fn f(builder: mtls_tonic::balance::BalancedChannelBuilder) {
    /// let builder = builder
    ///     .tcp_nodelay(true)
    ///     .tcp_keepalive(Some(std::time::Duration::from_secs(60)));
    /// # }
    /// ```
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.connector = self.connector.map_mtls(|c| c.tcp_keepalive(idle));
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
        let sni = match self
            .connector
            .mtls()
            .and_then(|c| c.configured_server_name())
        {
            Some(name) => name.clone(),
            None => parse_server_name_pub(&target.host)?,
        };
        let resolver = match (target.ip, &self.source.0) {
            (None, None) => Some(discovery::build_resolver(&self.dns)?),
            _ => None,
        };
        let ctx = Arc::new(Ctx::new(
            target,
            self.connector,
            sni,
            authority,
            self.endpoint,
            self.calls,
            self.outlier.is_enabled().then_some(self.outlier),
            Retries::new(self.service_config),
            matches!(self.policy, LoadPolicy::PendingRequests),
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
        );
        let buffer = Buffer::new(service, self.buffer);
        let discovery = match self.source.0 {
            Some(source) => tokio::spawn(discovery::run_source(ctx.clone(), source, tx)),
            None => tokio::spawn(discovery::run(ctx.clone(), resolver, self.dns, tx)),
        };
        let outliers = tokio::spawn(outlier::run(ctx.clone()));
        let limits = super::limit::Limits::new(
            ctx.calls.defaults.concurrency_limit,
            ctx.calls.defaults.rate_limit,
        );
        Ok(BalancedChannel {
            gate: (!limits.is_none()).then(|| super::limit::Gate::new(limits)),
            buffer: buffer.clone(),
            reserved: false,
            ctx: ctx.clone(),
            tasks: Arc::new(Tasks {
                discovery,
                outliers,
                ctx,
                buffer,
            }),
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
