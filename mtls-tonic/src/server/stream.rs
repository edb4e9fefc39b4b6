//! One accepted, handshaken connection and the connection info tonic hands to handlers.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mtls_core::PeerIdentity;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Facts about an accepted mTLS connection, put by tonic into every request's extensions.
///
/// Handlers usually read it through [`PeerIdentityExt`](crate::PeerIdentityExt).
#[derive(Clone, Debug)]
pub struct MtlsConnectInfo {
    peer: Arc<PeerIdentity>,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
}

impl MtlsConnectInfo {
    /// Builds connect info by hand (useful in tests of handlers and layers).
    ///
    /// ```
    /// use mtls_tonic::MtlsConnectInfo;
    /// let info = MtlsConnectInfo::new(
    ///     mtls_core::PeerIdentity::unauthenticated(),
    ///     "127.0.0.1:40000".parse()?,
    ///     "127.0.0.1:50051".parse()?,
    /// );
    /// assert!(!info.peer().is_authenticated());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(peer: PeerIdentity, remote_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        Self {
            peer: Arc::new(peer),
            remote_addr,
            local_addr,
        }
    }

    /// The verified identity the client presented in the handshake.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Our address the client connected to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// An accepted TCP connection after a successful rustls handshake, with the peer's identity.
///
/// Yielded by [`MtlsIncoming`](crate::MtlsIncoming); implements tonic's [`Connected`] so
/// tonic places an [`MtlsConnectInfo`] into each request's extensions.
#[derive(Debug)]
pub struct MtlsStream {
    inner: TlsStream<TcpStream>,
    info: MtlsConnectInfo,
}

impl MtlsStream {
    pub(crate) fn new(inner: TlsStream<TcpStream>, info: MtlsConnectInfo) -> Self {
        Self { inner, info }
    }

    /// The connection's info (peer identity and addresses).
    pub fn info(&self) -> &MtlsConnectInfo {
        &self.info
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.inner
    }

    /// The TLS stream, mutably.
    pub fn get_mut(&mut self) -> &mut TlsStream<TcpStream> {
        &mut self.inner
    }

    /// Unwraps the TLS stream.
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        self.inner
    }
}

impl Connected for MtlsStream {
    type ConnectInfo = MtlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for MtlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
