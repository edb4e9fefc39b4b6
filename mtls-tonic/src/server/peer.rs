//! `request.peer_identity()` for tonic and http requests.

use mtls_core::PeerIdentity;

use super::MtlsConnectInfo;

/// Access to the verified client identity of a request served over [`MtlsIncoming`].
///
/// Implemented for [`tonic::Request`] (in handlers) and [`http::Request`] (in tower layers).
/// Returns `None` when the request did not come through [`MtlsIncoming`].
///
/// ```
/// use mtls_tonic::{PeerIdentityExt, server::MtlsConnectInfo};
/// let mut request = tonic::Request::new(());
/// assert!(request.peer_identity().is_none());
/// request.extensions_mut().insert(MtlsConnectInfo::new(
///     mtls_core::PeerIdentity::unauthenticated(),
///     "127.0.0.1:40000".parse()?,
///     "127.0.0.1:50051".parse()?,
/// ));
/// assert!(request.peer_identity().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`MtlsIncoming`]: crate::server::MtlsIncoming
pub trait PeerIdentityExt {
    /// The connection info tonic attached to this request.
    fn mtls_connect_info(&self) -> Option<&MtlsConnectInfo>;

    /// The verified identity of the client that sent this request.
    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.mtls_connect_info().map(MtlsConnectInfo::peer)
    }
}

impl<T> PeerIdentityExt for tonic::Request<T> {
    fn mtls_connect_info(&self) -> Option<&MtlsConnectInfo> {
        self.extensions().get::<MtlsConnectInfo>()
    }
}

impl<B> PeerIdentityExt for http::Request<B> {
    fn mtls_connect_info(&self) -> Option<&MtlsConnectInfo> {
        self.extensions().get::<MtlsConnectInfo>()
    }
}
