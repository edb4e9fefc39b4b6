//! TCP + rustls (mtls-core's `ClientConfig`) as a tower connector for tonic and for
//! [`BalancedChannel`](crate::balance::BalancedChannel).

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{Error, Result};

/// Dials TCP and runs the rustls handshake with an mtls-core [`rustls::ClientConfig`].
///
/// The TLS server name (SNI, and the name checked when the config has no SPIFFE policy) is
/// the one given with [`MtlsConnector::server_name`] — the service name, not the replica's
/// address — or else the host of the URI dialed. ALPN `h2` is added when the config names
/// no protocol. As a `tower::Service<http::Uri>` it plugs into
/// [`tonic::transport::Endpoint::connect_with_connector`]:
///
/// ```no_run
/// # async fn run(config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use mtls_tonic::client::MtlsConnector;
/// let connector = MtlsConnector::new(config).server_name("bookstore.default.svc")?;
/// // The scheme stays `http`: TLS is done by the connector, not by tonic.
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
///     .connect_with_connector(connector)
///     .await?;
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MtlsConnector {
    tls: TlsConnector,
    server_name: Option<ServerName<'static>>,
    connect_timeout: Duration,
    local_address: Option<IpAddr>,
    nodelay: bool,
    keepalive: Option<Duration>,
}

impl std::fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("server_name", &self.server_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("local_address", &self.local_address)
            .field("nodelay", &self.nodelay)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl MtlsConnector {
    /// A connector using `config` (see mtls-core's `ClientConfigBuilder`).
    pub fn new(config: impl Into<Arc<rustls::ClientConfig>>) -> Self {
        let mut config: Arc<rustls::ClientConfig> = config.into();
        if config.alpn_protocols.is_empty() {
            Arc::make_mut(&mut config).alpn_protocols = vec![b"h2".to_vec()];
        }
        Self {
            tls: TlsConnector::from(config),
            server_name: None,
            connect_timeout: Duration::from_secs(20),
            local_address: None,
            nodelay: true,
            keepalive: None,
        }
    }

    /// The TLS server name to send (SNI) whatever address is dialed: the service name.
    ///
    /// ```
    /// # fn f(config: rustls::ClientConfig) {
    /// let ok = mtls_tonic::client::MtlsConnector::new(config.clone()).server_name("bookstore.test");
    /// assert!(ok.is_ok());
    /// let err = mtls_tonic::client::MtlsConnector::new(config).server_name("not a name");
    /// assert!(matches!(err, Err(mtls_tonic::Error::InvalidServerName { .. })));
    /// # }
    /// ```
    pub fn server_name(mut self, name: &str) -> Result<Self> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    /// Bound on TCP connect plus TLS handshake (default 20 s, gRPC's minimum connect timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The local IP address connections are made from (tonic `Endpoint::local_address`);
    /// `None` (the default) lets the system pick.
    ///
    /// ```
    /// # fn f(config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// let connector = mtls_tonic::client::MtlsConnector::new(config).local_address(Some("127.0.0.5".parse()?));
    /// # Ok(()) }
    /// ```
    pub fn local_address(mut self, ip: Option<IpAddr>) -> Self {
        self.local_address = ip;
        self
    }

    /// `TCP_NODELAY` on every connection (tonic `Endpoint::tcp_nodelay`; default on: gRPC
    /// messages go out at once instead of waiting for more bytes).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.nodelay = enabled;
        self
    }

    /// TCP keepalive probes after `idle` without traffic (tonic `Endpoint::tcp_keepalive`;
    /// default `None`: off).
    ///
    /// ```
    /// # fn f(config: rustls::ClientConfig) {
    /// let connector = mtls_tonic::client::MtlsConnector::new(config)
    ///     .tcp_nodelay(true)
    ///     .tcp_keepalive(Some(std::time::Duration::from_secs(60)));
    /// # }
    /// ```
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// The configured server name, if any.
    #[cfg(feature = "balance")]
    pub(crate) fn configured_server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// This connector with `name` as its server name (an endpoint's own name).
    #[cfg(feature = "balance")]
    pub(crate) fn for_server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    /// Connects to `addr` and completes the mTLS handshake, using the configured server name
    /// or, failing that, `fallback_name`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        fallback_name: Option<&ServerName<'static>>,
    ) -> Result<TlsStream<TcpStream>> {
        let name = match (&self.server_name, fallback_name) {
            (Some(name), _) | (None, Some(name)) => name.clone(),
            (None, None) => ServerName::IpAddress(addr.ip().into()),
        };
        let timeout = self.connect_timeout;
        let attempt = async {
            let tcp = dial(addr, self.local_address)
                .await
                .map_err(|source| Error::Connect { addr, source })?;
            tcp.set_nodelay(self.nodelay)
                .map_err(|source| Error::Connect { addr, source })?;
            if let Some(idle) = self.keepalive {
                socket2::SockRef::from(&tcp)
                    .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))
                    .map_err(|source| Error::Connect { addr, source })?;
            }
            let tls = self.tls.connect(name, tcp).await;
            crate::metrics::client_handshake(&tls);
            let tls = tls.map_err(|error| Error::Handshake {
                addr,
                reason: crate::server::handshake_reason_pub(&error),
            })?;
            // What the handshake negotiated (version, suite, group, full / HelloRetryRequest).
            tracing::debug!(
                %addr,
                tls = mtls_core::Negotiated::from_connection(tls.get_ref().1)
                    .map(tracing::field::display),
                "mTLS connection established"
            );
            Ok(tls)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::ConnectTimeout { addr, timeout }),
        }
    }

    async fn connect_uri(self, uri: http::Uri) -> Result<TokioIo<TlsStream<TcpStream>>> {
        let host = uri
            .host()
            .ok_or_else(|| Error::MissingHost {
                uri: uri.to_string(),
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let fallback = parse_server_name(&host)?;
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Error::Lookup {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        let mut last = Error::Lookup {
            host,
            reason: "no addresses".to_owned(),
        };
        for addr in addrs {
            match self.connect(addr, Some(&fallback)).await {
                Ok(tls) => return Ok(TokioIo::new(tls)),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// TCP connect to `addr`, from `local` when given.
async fn dial(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|_| Error::InvalidServerName {
        presented: name.to_owned(),
    })
}

impl tower_service::Service<http::Uri> for MtlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().connect_uri(uri))
    }
}
