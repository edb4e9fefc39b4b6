//! What an endpoint dials: the mTLS connector, whose TLS stream the connection polls
//! directly, or any connector `Service<Uri>` a user gave, erased once per connection.
//!
//! Erasing at the dial keeps [`BalancedChannel`](super::BalancedChannel) one type whatever
//! it dials (the connector is used only when connecting; calls go through the connection's
//! `SendRequest`, which does not know its I/O), costs a user's connector one allocation per
//! connection, and costs the mTLS connector nothing.

use std::{any::Any, fmt, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use http::Uri;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::{Error, client::MtlsConnector};

/// Any error a user's connector returns.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An I/O hyper can use, as tonic's `Endpoint::connect_with_connector` asks of a connector's
/// response.
pub(crate) trait HyperIo: hyper::rt::Read + hyper::rt::Write + Send + Unpin {}

impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin> HyperIo for T {}

/// A user's connector's I/O, boxed, as tokio I/O for the connection's watcher.
pub(crate) type CustomIo = TokioIo<Box<dyn HyperIo>>;

/// What a [`BalancedChannel`](super::BalancedChannel) dials through: any connector
/// `Service<Uri>` whose response is an I/O hyper can use — what tonic's
/// `Endpoint::connect_with_connector` takes (tower's `MakeConnection` with hyper's I/O
/// traits). [`MtlsConnector`] is one and is dialed directly, with the channel's TLS server
/// name, connect timeout and TCP options; any other connector is called with
/// `http://ip:port/` for each connection (its I/O boxed once per connection, nothing added
/// per call), bounded by the channel's connect timeout.
///
/// ```
/// use mtls_tonic::balance::Connector;
/// fn dials<C: Connector>(_: &C) {}
/// // A plain-TCP (h2c) connector, e.g. for a test or a mesh that encrypts below us:
/// let plain = tower::service_fn(|uri: http::Uri| async move {
///     let addr = uri.authority().map(|a| a.to_string()).unwrap_or_default();
///     tokio::net::TcpStream::connect(addr).await.map(hyper_util::rt::TokioIo::new)
/// });
/// dials(&plain);
/// ```
pub trait Connector:
    Service<
        Uri,
        Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<C> Connector for C
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
}

type DialFuture = Pin<Box<dyn Future<Output = Result<Box<dyn HyperIo>, BoxError>> + Send>>;

/// The channel's connector.
#[derive(Clone)]
pub(crate) enum Dialer {
    /// Ours: TLS server names per endpoint, connect timeout and TCP options applied.
    Mtls(MtlsConnector),
    /// A user's `Service<Uri>`, called with `http://ip:port/` for each connection.
    Custom(Arc<dyn Fn(Uri) -> DialFuture + Send + Sync>),
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mtls(connector) => connector.fmt(f),
            Self::Custom(_) => f.write_str("Connector"),
        }
    }
}

impl Dialer {
    /// `connector` as a dialer: an [`MtlsConnector`] stays itself (its own fast path), any
    /// other connector is erased behind one boxed future per connection.
    pub(crate) fn new<C: Connector>(connector: C) -> Self {
        if let Some(mtls) = (&connector as &dyn Any).downcast_ref::<MtlsConnector>() {
            return Self::Mtls(mtls.clone());
        }
        Self::Custom(Arc::new(move |uri| {
            let mut connector = connector.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| connector.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let io = connector.call(uri).await.map_err(Into::into)?;
                Ok(Box::new(io) as Box<dyn HyperIo>)
            })
        }))
    }

    /// The mTLS connector, when that is what the channel dials.
    pub(crate) fn mtls(&self) -> Option<&MtlsConnector> {
        match self {
            Self::Mtls(connector) => Some(connector),
            Self::Custom(_) => None,
        }
    }

    /// Applies `f` to the mTLS connector (the TCP and timeout options); a user's connector
    /// is left as it is.
    pub(crate) fn map_mtls(self, f: impl FnOnce(MtlsConnector) -> MtlsConnector) -> Self {
        match self {
            Self::Mtls(connector) => Self::Mtls(f(connector)),
            custom => custom,
        }
    }
}

/// Dials `addr` through a user's connector, bounded by `timeout` (the channel's connect
/// timeout, as for the mTLS connector).
pub(crate) async fn dial_custom(
    dial: &(dyn Fn(Uri) -> DialFuture + Send + Sync),
    addr: SocketAddr,
    timeout: Duration,
) -> Result<CustomIo, Error> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query("/")
        .build()
        .map_err(|e| Error::Connect {
            addr,
            source: std::io::Error::other(e),
        })?;
    match tokio::time::timeout(timeout, dial(uri)).await {
        Ok(Ok(io)) => Ok(TokioIo::new(io)),
        Ok(Err(source)) => Err(Error::Connect {
            addr,
            source: std::io::Error::other(source),
        }),
        Err(_) => Err(Error::ConnectTimeout { addr, timeout }),
    }
}
