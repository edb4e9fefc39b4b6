//! Where endpoints come from besides DNS: a static list, a push handle of changes, or a
//! user's own [`Discovery`] — one abstraction under the balancer, so every endpoint gets the
//! same per-endpoint mTLS, health, drain, fail-fast, outlier ejection and retries.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    task::{Context, Poll},
};

use rustls_pki_types::ServerName;
use tokio::sync::mpsc;

use crate::{Result, client::MtlsConnector, client::parse_server_name_pub};

/// One endpoint for a [`BalancedChannel`](crate::balance::BalancedChannel): an address, and
/// optionally its own TLS server name and its own [`MtlsConnector`] (e.g. one whose rustls
/// config expects this endpoint's SPIFFE ID, built with mtls-core's
/// `ClientConfigBuilder::authorize(Authorize::exact(id))`).
///
/// Without them the channel's connector and service name are used, as for DNS endpoints.
///
/// ```
/// use mtls_tonic::balance::BalancedEndpoint;
/// let endpoint = BalancedEndpoint::new("127.0.0.2:50051".parse()?).server_name("replica-a.test")?;
/// assert_eq!(endpoint.addr().to_string(), "127.0.0.2:50051");
/// assert!(BalancedEndpoint::new(endpoint.addr()).server_name("not a name").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BalancedEndpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: Option<ServerName<'static>>,
    pub(crate) connector: Option<MtlsConnector>,
}

impl BalancedEndpoint {
    /// An endpoint at `addr`, dialed with the channel's connector and service name.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            server_name: None,
            connector: None,
        }
    }

    /// The TLS server name (SNI, and the name the server's certificate is checked against
    /// when the verifier checks names) for this endpoint only.
    pub fn server_name(mut self, name: &str) -> Result<Self> {
        self.server_name = Some(parse_server_name_pub(name)?);
        Ok(self)
    }

    /// Dials this endpoint with `connector` (its own client config: expected identity,
    /// trust, client certificate) instead of the channel's. The channel's connect timeout
    /// still applies.
    pub fn connector(mut self, connector: MtlsConnector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `other` would be dialed exactly as this one (a connector is never known to
    /// be the same: an insert with one replaces the endpoint).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.server_name == other.server_name
            && self.connector.is_none()
            && other.connector.is_none()
    }
}

impl From<SocketAddr> for BalancedEndpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

/// A change of the endpoint set, as tower's `discover::Change` (keyed by address).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EndpointChange {
    /// Add this endpoint, or replace the one at its address (the old one drains).
    Insert(BalancedEndpoint),
    /// Remove the endpoint at this address: it gets no new calls, its calls in flight
    /// finish ([`BalancedChannelBuilder::drain_timeout`](crate::balance::BalancedChannelBuilder::drain_timeout)).
    Remove(SocketAddr),
}

/// A source of endpoint changes for [`BalancedChannel::discovery`](crate::balance::BalancedChannel::discovery):
/// Kubernetes EndpointSlices, Consul, an xDS EDS stream, a test fixture.
///
/// `poll_change` is polled by the channel's discovery task; return `Pending` (after
/// arranging a wake-up, as for any future) while nothing changed. `Ready(None)` ends the
/// source: the endpoints it gave stay until the channel is dropped.
///
/// ```
/// use std::task::{Context, Poll};
/// use mtls_tonic::balance::{BalancedEndpoint, Discovery, EndpointChange};
///
/// /// Hands out a fixed set once.
/// struct Fixed(Vec<std::net::SocketAddr>);
///
/// impl Discovery for Fixed {
///     fn poll_change(&mut self, _cx: &mut Context<'_>) -> Poll<Option<EndpointChange>> {
///         Poll::Ready(self.0.pop().map(|addr| EndpointChange::Insert(BalancedEndpoint::new(addr))))
///     }
/// }
/// # let _ = Fixed(vec![]);
/// ```
pub trait Discovery: Send + 'static {
    /// The next change, `Pending` while there is none, `Ready(None)` when the source ends.
    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<EndpointChange>>;
}

impl Discovery for mpsc::UnboundedReceiver<EndpointChange> {
    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<EndpointChange>> {
        self.poll_recv(cx)
    }
}

/// A fixed list: every endpoint inserted at once, then no change.
pub(crate) struct StaticList(pub(crate) VecDeque<BalancedEndpoint>);

impl Discovery for StaticList {
    fn poll_change(&mut self, _cx: &mut Context<'_>) -> Poll<Option<EndpointChange>> {
        match self.0.pop_front() {
            Some(endpoint) => Poll::Ready(Some(EndpointChange::Insert(endpoint))),
            None => Poll::Ready(None),
        }
    }
}

/// Pushes endpoint changes into a channel built with [`BalancedChannel::discovery`]
/// from the paired [`EndpointReceiver`] (see [`endpoint_channel`]). Cheap to clone.
///
/// [`BalancedChannel::discovery`]: crate::balance::BalancedChannel::discovery
#[derive(Clone, Debug)]
pub struct EndpointSender(mpsc::UnboundedSender<EndpointChange>);

impl EndpointSender {
    /// Adds `endpoint` (or replaces the one at its address). `false` once the channel is
    /// gone.
    pub fn insert(&self, endpoint: impl Into<BalancedEndpoint>) -> bool {
        self.0.send(EndpointChange::Insert(endpoint.into())).is_ok()
    }

    /// Removes the endpoint at `addr`, draining its calls in flight. `false` once the
    /// channel is gone.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        self.0.send(EndpointChange::Remove(addr)).is_ok()
    }
}

/// The [`Discovery`] end of [`endpoint_channel`].
#[derive(Debug)]
pub struct EndpointReceiver(mpsc::UnboundedReceiver<EndpointChange>);

impl Discovery for EndpointReceiver {
    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<EndpointChange>> {
        self.0.poll_recv(cx)
    }
}

/// A push handle of endpoint changes and the [`Discovery`] that feeds them to a channel
/// (tonic's `balance_channel`, with our endpoints).
///
/// ```no_run
/// # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use mtls_tonic::{balance::{BalancedChannel, endpoint_channel}, client::MtlsConnector};
/// let (endpoints, discovery) = endpoint_channel();
/// let channel = BalancedChannel::discovery(
///     "bookstore.test:50051",
///     discovery,
///     MtlsConnector::new(client_config),
/// )
/// .build()?;
/// endpoints.insert("127.0.0.2:50051".parse::<std::net::SocketAddr>()?);
/// endpoints.insert("127.0.0.3:50051".parse::<std::net::SocketAddr>()?);
/// // Later: drained, then gone.
/// endpoints.remove("127.0.0.2:50051".parse()?);
/// # let _ = channel; Ok(()) }
/// ```
pub fn endpoint_channel() -> (EndpointSender, EndpointReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (EndpointSender(tx), EndpointReceiver(rx))
}
