//! Accepted connections: admission (total and per-uid limits), the handshake and idle
//! timeouts, the `:authority` rewriter on the Workload API socket, and the count of calls
//! in flight that tells an idle connection from a busy one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::authority::AuthorityRewriter;
use crate::limits::Limits;
use crate::logging::LogBudget;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Pause after a failed accept (e.g. EMFILE), so that the accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static REFUSED: LogBudget = LogBudget::new(20);
static CLOSED: LogBudget = LogBudget::new(20);
static ACCEPT_FAILED: LogBudget = LogBudget::new(5);
static CALLS_REFUSED: LogBudget = LogBudget::new(20);

/// Which socket, and whether its connections go through the rewriter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Socket {
    pub(crate) what: &'static str,
    pub(crate) rewrite_authority: bool,
}

/// Open connections, total and per uid, shared by both sockets.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_uid: usize,
    max_calls_per_uid: usize,
    open: Mutex<(usize, HashMap<Option<u32>, usize>)>,
    calls: Mutex<HashMap<Option<u32>, usize>>,
}

/// One call in flight of a uid; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct CallPermit {
    admission: Arc<Admission>,
    uid: Option<u32>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut calls = self
            .admission
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = calls.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                calls.remove(&self.uid);
            }
        }
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    uid: Option<u32>,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_uid: limits.max_connections_per_uid,
            max_calls_per_uid: limits.max_calls_per_uid,
            open: Mutex::new((0, HashMap::new())),
            calls: Mutex::new(HashMap::new()),
        })
    }

    /// A permit for one more call in flight of `uid` (over all its connections and both
    /// sockets), or why not.
    pub(crate) fn begin_call(self: &Arc<Self>, uid: Option<u32>) -> Result<CallPermit, String> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = calls.entry(uid).or_insert(0);
        if *mine >= self.max_calls_per_uid {
            return Err(format!(
                "{} calls of this uid in flight; expected at most {} (max_calls_per_uid)",
                *mine, self.max_calls_per_uid
            ));
        }
        *mine += 1;
        Ok(CallPermit {
            admission: Arc::clone(self),
            uid,
        })
    }

    /// A permit for one more connection of `uid`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, uid: Option<u32>) -> Result<Permit, String> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_uid) = &mut *open;
        if *total >= self.max_total {
            return Err(format!(
                "{} connections open; expected at most {} (max_connections)",
                *total, self.max_total
            ));
        }
        let mine = per_uid.entry(uid).or_insert(0);
        if *mine >= self.max_per_uid {
            return Err(format!(
                "{} connections of this uid open; expected at most {} (max_connections_per_uid)",
                *mine, self.max_per_uid
            ));
        }
        *mine += 1;
        *total += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            uid,
        })
    }

    /// Connections open now (total).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_uid) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_uid.remove(&self.uid);
            }
        }
    }
}

/// Calls in flight on one connection, and when one last began or ended.
#[derive(Debug)]
pub(crate) struct Calls {
    in_flight: AtomicUsize,
    last_change: Mutex<Instant>,
}

/// One call in flight; dropped when its response (stream) ends.
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Calls>);

impl Calls {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        })
    }

    pub(crate) fn begin(self: &Arc<Self>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        CallGuard(Arc::clone(self))
    }

    fn touch(&self) {
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn last_change(&self) -> Instant {
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// What tonic puts in each request's extensions: the peer of the real socket (credentials
/// and process, see caller.rs) and the connection's call count.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) uds: UdsConnectInfo,
    pub(crate) calls: Arc<Calls>,
    pub(crate) admission: Arc<Admission>,
    /// The process that connected, tracked from accept (caller attestation, caller.rs).
    pub(crate) peer: crate::caller::Connection,
}

/// One accepted connection, after the pump, with the credentials of the real socket.
#[derive(Debug)]
pub(crate) struct PeerConn {
    io: DuplexStream,
    info: ConnInfo,
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts on `listener`: admits (or closes at once) each connection and puts it behind
/// its pump.
pub(crate) fn incoming(
    listener: UnixListener,
    socket: Socket,
    admission: Arc<Admission>,
    limits: Arc<Limits>,
) -> ReceiverStream<io::Result<PeerConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    if let Some(suppressed) = ACCEPT_FAILED.allow() {
                        tracing::warn!(socket = socket.what, %error, suppressed, "accept failed; pausing");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let uds = stream.connect_info();
            let uid = uds.peer_cred.map(|c| c.uid());
            let admitted = admission.admit(uid);
            crate::metrics::connection(socket.what, admitted.is_ok());
            let permit = match admitted {
                Ok(permit) => permit,
                Err(reason) => {
                    if let Some(suppressed) = REFUSED.allow() {
                        tracing::warn!(socket = socket.what, uid, %reason, suppressed, "connection refused");
                    }
                    drop(stream);
                    continue;
                }
            };
            // Tracked from accept, before a byte is read (see caller.rs).
            let peer = crate::caller::Connection::accept(&stream);
            let calls = Calls::new();
            let (ours, theirs) = tokio::io::duplex(16 * 1024);
            tokio::spawn(pump(
                stream,
                ours,
                socket,
                Arc::clone(&calls),
                Arc::clone(&limits),
                permit,
            ));
            let conn = PeerConn {
                io: theirs,
                info: ConnInfo {
                    uds,
                    calls,
                    admission: Arc::clone(&admission),
                    peer,
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Why the client-to-server half stopped.
enum Up {
    /// The client closed (or the server went away): finish the other direction.
    Done,
    /// A limit or a timeout: close the connection now.
    Refused(String),
}

/// Copies server→client unchanged and client→server through the rewriter (Workload API)
/// or a preface check (SDS), closing the connection on a refusal or a timeout.
async fn pump(
    client: UnixStream,
    server: DuplexStream,
    socket: Socket,
    calls: Arc<Calls>,
    limits: Arc<Limits>,
    permit: Permit,
) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = tokio::io::split(server);
    let down = async {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    let up = async {
        let accepted = Instant::now();
        let mut rewriter = socket
            .rewrite_authority
            .then(|| AuthorityRewriter::new(limits.max_header_list_size));
        let mut preface_seen = 0usize;
        let mut last_rx = accepted;
        // While calls are in flight, look again one idle period later (not at once: that
        // would spin).
        let mut next_check = accepted;
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(16 * 1024);
        let outcome = loop {
            let handshaking = match &rewriter {
                Some(r) => !r.preface_done(),
                None => preface_seen < PREFACE.len(),
            };
            let deadline = if handshaking {
                accepted + limits.handshake_timeout
            } else {
                (last_rx.max(calls.last_change()) + limits.idle_timeout).max(next_check)
            };
            let read = tokio::select! {
                read = client_r.read(&mut buf) => read,
                () = tokio::time::sleep_until(deadline) => {
                    if handshaking {
                        break Up::Refused(format!(
                            "no HTTP/2 preface within {:?} (handshake_timeout)",
                            limits.handshake_timeout
                        ));
                    }
                    if calls.in_flight() == 0
                        && last_rx.max(calls.last_change()) + limits.idle_timeout <= Instant::now()
                    {
                        break Up::Refused(format!(
                            "idle for {:?} with no call in flight (idle_timeout)",
                            limits.idle_timeout
                        ));
                    }
                    next_check = Instant::now() + limits.idle_timeout;
                    continue;
                }
            };
            let n = match read {
                Ok(0) | Err(_) => break Up::Done,
                Ok(n) => n,
            };
            last_rx = Instant::now();
            let input = &buf[..n];
            let forward: &[u8] = match &mut rewriter {
                Some(r) => {
                    out.clear();
                    if let Err(e) = r.feed(input, &mut out) {
                        break Up::Refused(e.to_string());
                    }
                    &out
                }
                None => {
                    if preface_seen < PREFACE.len() {
                        let k = (PREFACE.len() - preface_seen).min(n);
                        if input[..k] != PREFACE[preface_seen..preface_seen + k] {
                            break Up::Refused(
                                "not an HTTP/2 connection: expected the prior-knowledge preface"
                                    .to_owned(),
                            );
                        }
                        preface_seen += k;
                    }
                    input
                }
            };
            if server_w.write_all(forward).await.is_err() {
                break Up::Done;
            }
        };
        let _ = server_w.shutdown().await;
        outcome
    };
    tokio::pin!(down);
    let uid = permit.uid;
    tokio::select! {
        () = &mut down => {}
        outcome = up => match outcome {
            Up::Done => down.await,
            Up::Refused(reason) => {
                if let Some(suppressed) = CLOSED.allow() {
                    tracing::info!(socket = socket.what, uid, %reason, suppressed, "closing a connection");
                }
            }
        },
    }
    drop(permit);
}

/// A tower layer counting each call (until its response body ends) on the connection's
/// [`Calls`], so the idle timeout never closes a connection with a stream open.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrackCallsLayer;

impl<S> tower_layer::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;
    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls(inner)
    }
}

/// See [`TrackCallsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TrackCalls<S>(S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for TrackCalls<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = match request.extensions().get::<ConnInfo>() {
            Some(info) => {
                let uid = info.uds.peer_cred.map(|c| c.uid());
                match info.admission.begin_call(uid) {
                    Ok(permit) => Some((info.calls.begin(), permit)),
                    Err(reason) => {
                        if let Some(suppressed) = CALLS_REFUSED.allow() {
                            tracing::warn!(uid, %reason, suppressed, "call refused");
                        }
                        let refused = tonic::Status::resource_exhausted(
                            "too many calls in flight for this uid",
                        );
                        return Box::pin(std::future::ready(Ok(refused.into_http())));
                    }
                }
            }
            None => None,
        };
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    // The guard lives as long as the response body.
                    let _call = &guard;
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_bounds_total_and_per_uid_and_frees_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_uid: 2,
            ..Limits::default()
        };
        let a = Admission::new(&limits);
        let p1 = a.admit(Some(1000)).unwrap();
        let _p2 = a.admit(Some(1000)).unwrap();
        let err = a.admit(Some(1000)).unwrap_err();
        assert!(
            err.contains("expected at most 2 (max_connections_per_uid)"),
            "{err}"
        );
        // Another uid is still served...
        let _p3 = a.admit(Some(0)).unwrap();
        // ...until the total is reached.
        let err = a.admit(Some(1)).unwrap_err();
        assert!(
            err.contains("3 connections open; expected at most 3"),
            "{err}"
        );
        assert_eq!(a.open(), 3);
        drop(p1);
        assert_eq!(a.open(), 2);
        a.admit(Some(1000)).unwrap();
    }

    #[test]
    fn calls_in_flight_are_bounded_per_uid() {
        let limits = Limits {
            max_calls_per_uid: 2,
            ..Limits::default()
        };
        let a = Admission::new(&limits);
        let c1 = a.begin_call(Some(7)).unwrap();
        let _c2 = a.begin_call(Some(7)).unwrap();
        let err = a.begin_call(Some(7)).unwrap_err();
        assert!(
            err.contains("expected at most 2 (max_calls_per_uid)"),
            "{err}"
        );
        let _other = a.begin_call(Some(8)).unwrap();
        drop(c1);
        a.begin_call(Some(7)).unwrap();
    }

    #[test]
    fn calls_count_in_flight() {
        let calls = Calls::new();
        let before = calls.last_change();
        let g1 = calls.begin();
        let g2 = calls.begin();
        assert_eq!(calls.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(calls.in_flight(), 0);
        assert!(calls.last_change() >= before);
    }
}
