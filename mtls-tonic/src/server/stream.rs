//! One accepted, handshaken connection and the connection info tonic hands to handlers.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use mtls_core::PeerIdentity;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::warn;

use super::{
    guard::{FrameGuard, Verdict},
    log_limit::ServerLog,
};

/// tonic's own connection info for a rustls server stream: what `Request::peer_certs()`
/// reads (tonic names the type only with its TLS features on, so it is named through the
/// `Connected` impl that makes it).
pub(crate) type TonicTlsInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

/// Facts about an accepted mTLS connection, put by tonic into every request's extensions.
///
/// Handlers usually read it through [`PeerIdentityExt`](crate::PeerIdentityExt). tonic's
/// own accessors (`Request::remote_addr()`, `local_addr()`, and `peer_certs()` when tonic's
/// TLS features are on) read tonic's types, which
/// [`TonicConnectInfoLayer`](crate::server::TonicConnectInfoLayer) derives from this one.
#[derive(Clone, Debug)]
pub struct MtlsConnectInfo {
    peer: Arc<PeerIdentity>,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    /// tonic's `TlsConnectInfo<TcpConnectInfo>` of this connection (made at accept; `None`
    /// for connect info built by hand).
    tonic_tls: Option<TonicTlsInfo>,
}

impl MtlsConnectInfo {
    /// Builds connect info by hand (useful in tests of handlers and layers).
    ///
    /// ```
    /// use mtls_tonic::server::MtlsConnectInfo;
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
            tonic_tls: None,
        }
    }

    /// Connect info of an accepted connection, with tonic's TLS connect info of `tls`.
    pub(crate) fn accepted(
        peer: PeerIdentity,
        remote_addr: SocketAddr,
        local_addr: SocketAddr,
        tls: &TlsStream<TcpStream>,
    ) -> Self {
        Self {
            tonic_tls: Some(tls.connect_info()),
            ..Self::new(peer, remote_addr, local_addr)
        }
    }

    /// tonic's `TlsConnectInfo<TcpConnectInfo>` (the peer's certificates as tonic hands
    /// them out), when this info comes from an accepted connection.
    pub(crate) fn tonic_tls(&self) -> Option<&TonicTlsInfo> {
        self.tonic_tls.as_ref()
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
/// Yielded by [`MtlsIncoming`](crate::server::MtlsIncoming); implements tonic's [`Connected`] so
/// tonic places an [`MtlsConnectInfo`] into each request's extensions. Reading and writing
/// go through to the TLS stream; on the way, the HTTP/2 frame headers are watched for
/// control-frame floods ([`ServerOptions::control_frame_budget`](crate::server::ServerOptions::control_frame_budget)).
#[derive(Debug)]
pub struct MtlsStream {
    inner: TlsStream<TcpStream>,
    info: MtlsConnectInfo,
    guard: FrameGuard,
    log: Arc<ServerLog>,
    closing: Option<Closing>,
    /// Max connection age: the GOAWAY that asks the client to move on.
    recycle: Option<Recycle>,
    /// Max connection age + grace: the connection is closed when this fires.
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Connection recycling: at this connection's (jittered) age, a GOAWAY with last-stream-id
/// 2^31-1 and NO_ERROR goes out at the next frame boundary of h2's output — "no new
/// streams; every stream already sent will be served". h2 on our side does not know about
/// it and serves whatever the client sent before it saw the GOAWAY, so no call is refused
/// or lost; the client opens no new stream, dials again and closes this connection when its
/// calls are done. (tonic's `max_connection_age` is one age for every connection of a
/// server; this is grpc-go's per-connection jitter.)
#[derive(Debug)]
struct Recycle {
    at: Pin<Box<tokio::time::Sleep>>,
    /// The GOAWAY, once due, until it is written.
    frame: Option<Closing>,
    /// Written, not yet flushed (when it went out from a read, h2 may not flush soon).
    unflushed: bool,
}

/// The GOAWAY on its way out after a flood.
#[derive(Debug)]
struct Closing {
    frame: Vec<u8>,
    written: usize,
}

impl MtlsStream {
    pub(crate) fn new(
        inner: TlsStream<TcpStream>,
        info: MtlsConnectInfo,
        guard: FrameGuard,
        log: Arc<ServerLog>,
    ) -> Self {
        Self {
            inner,
            info,
            guard,
            log,
            closing: None,
            recycle: None,
            close_at: None,
        }
    }

    /// Recycles the connection: a GOAWAY once it is `age` old, closed (reads fail) after
    /// `grace` more ([`ServerOptions::max_connection_age`](crate::server::ServerOptions::max_connection_age)).
    pub(crate) fn recycle_after(&mut self, age: std::time::Duration, grace: std::time::Duration) {
        self.recycle = Some(Recycle {
            at: Box::pin(tokio::time::sleep(age)),
            frame: None,
            unflushed: false,
        });
        self.close_at = Some(Box::pin(tokio::time::sleep(age + grace)));
    }

    /// Connection recycling: notices the age, and writes the GOAWAY when h2 is between
    /// frames. `Pending` only while the GOAWAY itself is being written.
    fn poll_recycle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let http2 = !self.guard.is_off();
        let remote = self.info.remote_addr;
        let Some(recycle) = self.recycle.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if recycle.at.as_mut().poll(cx).is_ready() {
            recycle.at.as_mut().reset(far_future());
            // Not HTTP/2: no GOAWAY to send; the close at the end of the grace ends it.
            if http2 {
                tracing::debug!(%remote, "max connection age: GOAWAY");
                recycle.frame = Some(Closing {
                    frame: crate::frames::goaway(0x7fff_ffff, 0, b"max connection age"),
                    written: 0,
                });
            }
        }
        self.poll_recycle_write(cx)
    }

    fn poll_recycle_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(recycle) = self.recycle.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(goaway) = recycle.frame.as_mut()
            && self.guard.outbound_at_boundary()
        {
            while goaway.written < goaway.frame.len() {
                let n = ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &goaway.frame[goaway.written..])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                goaway.written += n;
            }
            recycle.frame = None;
            recycle.unflushed = true;
        }
        if recycle.unflushed && Pin::new(&mut self.inner).poll_flush(cx).is_ready() {
            recycle.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether h2 must stop at the next frame boundary (a recycling GOAWAY is due).
    fn goaway_due(&self) -> bool {
        self.recycle.as_ref().is_some_and(|r| r.frame.is_some())
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

    fn start_closing(&mut self) {
        if self.closing.is_none() {
            if self.log.http2_flood.allow() {
                warn!(
                    remote = %self.info.remote_addr,
                    peer = %self.info.peer,
                    "HTTP/2 control-frame flood (PING/SETTINGS over budget): GOAWAY ENHANCE_YOUR_CALM, closing"
                );
            }
            self.closing = Some(Closing {
                frame: self.guard.goaway(),
                written: 0,
            });
        }
    }

    /// Writes the GOAWAY (we are at a frame boundary), flushes and closes the TLS session.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(closing) = self.closing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while closing.written < closing.frame.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &closing.frame[closing.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            closing.written += n;
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Once closing: finish the frame h2 is in the middle of, then the GOAWAY, then fail.
    fn poll_write_closing(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if !self.guard.outbound_at_boundary() {
            let n = self.guard.outbound_until_boundary(buf);
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
            self.guard.outbound(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
        ready!(self.poll_goaway(cx))?;
        Poll::Ready(Err(flood_error()))
    }
}

/// A deadline that never comes (a fired recycling timer is parked here).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

fn flood_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "HTTP/2 control-frame flood: connection closed with GOAWAY ENHANCE_YOUR_CALM",
    )
}

impl Connected for MtlsStream {
    type ConnectInfo = MtlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for MtlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(close_at) = this.close_at.as_mut()
            && close_at.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "max connection age and its grace are over",
            )));
        }
        if this.closing.is_some() {
            if !this.guard.outbound_at_boundary() {
                // h2 is in the middle of a frame: no clean place for a GOAWAY; just close.
                return Poll::Ready(Err(flood_error()));
            }
            ready!(this.poll_goaway(cx))?;
            return Poll::Ready(Err(flood_error()));
        }
        // A GOAWAY due while h2 is idle goes out from here; a busy socket does not hold up
        // reading (the write side retries it).
        if let Poll::Ready(Err(error)) = this.poll_recycle(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        match this.guard.inbound(&buf.filled()[before..]) {
            Verdict::Pass => Poll::Ready(Ok(())),
            Verdict::Flood { keep } => {
                buf.set_filled(before + keep);
                this.start_closing();
                if keep > 0 {
                    // h2 gets the frames before the flood; its next read sends the GOAWAY.
                    return Poll::Ready(Ok(()));
                }
                Pin::new(this).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            return this.poll_write_closing(cx, buf);
        }
        ready!(this.poll_recycle(cx))?;
        let n = if this.goaway_due() {
            // h2 is in the middle of a frame: finish it, the GOAWAY goes next.
            this.guard.outbound_until_boundary(buf)
        } else {
            buf.len()
        };
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
        this.guard.outbound(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return this.poll_write_closing(cx, first);
        }
        ready!(this.poll_recycle(cx))?;
        if this.goaway_due() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            let n = this.guard.outbound_until_boundary(first);
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &first[..n]))?;
            this.guard.outbound(&first[..n]);
            return Poll::Ready(Ok(n));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for slice in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(slice.len());
            this.guard.outbound(&slice[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
