//! tonic's own connection accessors over [`MtlsIncoming`](crate::server::MtlsIncoming).

use std::task::{Context, Poll};

use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

use super::MtlsConnectInfo;

/// Makes tonic's `Request::remote_addr()`, `Request::local_addr()` and — when tonic's TLS
/// features are on in the application — `Request::peer_certs()` answer over
/// [`MtlsIncoming`](crate::server::MtlsIncoming), as they do over tonic's own TLS.
///
/// tonic puts exactly one connection-info value into each request: the one our
/// [`MtlsStream`](crate::server::MtlsStream) makes, [`MtlsConnectInfo`] (peer identity and both
/// addresses). tonic's accessors look for its own types instead (`TcpConnectInfo`, and
/// `TlsConnectInfo<TcpConnectInfo>` for the certificates), so this layer adds them to each
/// request, from the [`MtlsConnectInfo`] already there. [`ServerOptions::server`] puts it on
/// the builder it returns; with `tonic::transport::Server::builder()` add it yourself.
///
/// `peer_certs()` only exists when the application's tonic has a TLS feature
/// (`tls-aws-lc`, `tls-ring`); mtls-tonic does not turn one on (it would make tonic refuse
/// `https://` endpoints that our connector dials). Without it, the verified chain is
/// `request.peer_identity()?.chain()` ([`PeerIdentityExt`](crate::PeerIdentityExt)), with
/// the SPIFFE ID and SANs already parsed.
///
/// ```
/// use mtls_tonic::server::{MtlsConnectInfo, TonicConnectInfoLayer};
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handler = tower::service_fn(|request: http::Request<()>| async move {
///     let request = tonic::Request::from_http(request);
///     Ok::<_, std::convert::Infallible>(request.remote_addr())
/// });
/// let mut service = TonicConnectInfoLayer.layer(handler);
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(MtlsConnectInfo::new(
///     mtls_core::PeerIdentity::unauthenticated(),
///     "127.0.0.2:40000".parse()?,
///     "127.0.0.1:50051".parse()?,
/// ));
/// let remote = service.ready().await?.call(request).await?;
/// assert_eq!(remote, Some("127.0.0.2:40000".parse()?));
/// # Ok(()) }
/// ```
///
/// [`ServerOptions::server`]: crate::server::ServerOptions::server
#[derive(Clone, Copy, Debug, Default)]
pub struct TonicConnectInfoLayer;

impl<S> Layer<S> for TonicConnectInfoLayer {
    type Service = TonicConnectInfoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TonicConnectInfoService { inner }
    }
}

/// The service of [`TonicConnectInfoLayer`]: adds tonic's connection info, derived from
/// [`MtlsConnectInfo`], to each request.
#[derive(Clone, Debug)]
pub struct TonicConnectInfoService<S> {
    inner: S,
}

impl<S> TonicConnectInfoService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

crate::inner_service_accessors!(TonicConnectInfoService<S>);

impl<S, B> Service<http::Request<B>> for TonicConnectInfoService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        if let Some(info) = extensions.get::<MtlsConnectInfo>() {
            let tcp = TcpConnectInfo {
                local_addr: Some(info.local_addr()),
                remote_addr: Some(info.remote_addr()),
            };
            let tls = info.tonic_tls().cloned();
            extensions.insert(tcp);
            if let Some(tls) = tls {
                extensions.insert(tls);
            }
        }
        self.inner.call(request)
    }
}
