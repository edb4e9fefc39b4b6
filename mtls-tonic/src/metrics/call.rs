//! gRFC A66 per-call metrics: one [`CallRecorder`] per client attempt, client call or server
//! call, started when the call starts and finished once, with the call's final status: the
//! `grpc-status` of a trailers-only response's headers, else of its trailers, else the
//! transport error mapped to its code; dropped unfinished (the caller or the peer went
//! away), it records CANCELLED, as A66 says. Without the feature `metrics` the recorder is
//! a zero-sized type whose methods are empty.

use std::error::Error as StdError;

use tonic::Code;

#[cfg(all(feature = "metrics", feature = "balance"))]
use super::{CLIENT_ATTEMPT_DURATION, CLIENT_ATTEMPT_STARTED, CLIENT_CALL_DURATION, TARGET};
#[cfg(feature = "metrics")]
use super::{METHOD, SERVER_CALL_DURATION, SERVER_CALL_STARTED, STATUS, status_name};

/// The status code a caller sees for a transport or body error: a [`tonic::Status`]'s own
/// code, an HTTP/2 reset mapped as tonic maps it (CANCEL: CANCELLED, REFUSED_STREAM:
/// UNAVAILABLE, ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED, INADEQUATE_SECURITY:
/// PERMISSION_DENIED, the others INTERNAL), anything else UNAVAILABLE (the connection).
pub(crate) fn code_of_error(error: &(dyn StdError + 'static)) -> Code {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return match reason {
                h2::Reason::CANCEL => Code::Cancelled,
                h2::Reason::REFUSED_STREAM => Code::Unavailable,
                h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
                h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
                _ => Code::Internal,
            };
        }
        source = error.source();
    }
    Code::Unavailable
}

/// The `grpc-status` of `headers` (headers of a trailers-only response, or trailers).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// One client attempt, client call or server call being timed.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct CallRecorder {
    /// `None` once recorded.
    pending: Option<Pending>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Pending {
    histogram: &'static str,
    started: std::time::Instant,
    labels: Vec<::metrics::Label>,
}

/// One client attempt, client call or server call (nothing without the feature `metrics`).
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct CallRecorder;

impl CallRecorder {
    /// A client attempt (one dispatch to one endpoint): counts `grpc.client.attempt.started`.
    #[cfg(feature = "balance")]
    #[inline]
    pub(crate) fn client_attempt(target: &ClientLabels, method: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let labels = target.labels(method);
            ::metrics::counter!(CLIENT_ATTEMPT_STARTED, labels.iter()).increment(1);
            Self::start(CLIENT_ATTEMPT_DURATION, labels)
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (target, method);
            Self
        }
    }

    /// A client call, from the caller's point of view (every attempt, waits, backoffs).
    #[cfg(feature = "balance")]
    #[inline]
    pub(crate) fn client_call(target: &ClientLabels, method: &str) -> Self {
        #[cfg(feature = "metrics")]
        return Self::start(CLIENT_CALL_DURATION, target.labels(method));
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (target, method);
            Self
        }
    }

    /// A server call of `method` (already `other` if not served), with the server's constant
    /// `extra` labels: counts `grpc.server.call.started`.
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn server_call(method: ::metrics::SharedString, extra: &[::metrics::Label]) -> Self {
        let mut labels = Vec::with_capacity(2 + extra.len());
        labels.push(::metrics::Label::new(METHOD, method));
        labels.extend_from_slice(extra);
        ::metrics::counter!(SERVER_CALL_STARTED, labels.iter()).increment(1);
        Self::start(SERVER_CALL_DURATION, labels)
    }

    /// A recorder that records nothing (a call that never started).
    #[cfg(feature = "balance")]
    #[inline]
    pub(crate) fn unused() -> Self {
        #[cfg(feature = "metrics")]
        return Self { pending: None };
        #[cfg(not(feature = "metrics"))]
        Self
    }

    #[cfg(feature = "metrics")]
    fn start(histogram: &'static str, labels: Vec<::metrics::Label>) -> Self {
        Self {
            pending: Some(Pending {
                histogram,
                started: std::time::Instant::now(),
                labels,
            }),
        }
    }

    /// Records the duration with `code`, once (later calls do nothing).
    #[inline]
    pub(crate) fn finish(&mut self, code: Code) {
        #[cfg(feature = "metrics")]
        if let Some(Pending {
            histogram,
            started,
            mut labels,
        }) = self.pending.take()
        {
            labels.push(::metrics::Label::from_static_parts(
                STATUS,
                status_name(code),
            ));
            ::metrics::histogram!(histogram, labels).record(started.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = code;
    }

    /// Response headers: a trailers-only response's `grpc-status` ends the call.
    #[inline]
    pub(crate) fn headers(&mut self, headers: &http::HeaderMap) {
        #[cfg(feature = "metrics")]
        if let Some(code) = grpc_status(headers) {
            self.finish(code);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = headers;
    }

    /// A frame of the response body: trailers end the call with their `grpc-status`
    /// (UNKNOWN without one, as gRPC clients read it), an error with its code, the end of
    /// the body without trailers with INTERNAL.
    #[inline]
    pub(crate) fn frame<D, E: StdError + 'static>(
        &mut self,
        frame: Option<&Result<http_body::Frame<D>, E>>,
    ) {
        #[cfg(feature = "metrics")]
        {
            if self.pending.is_none() {
                return;
            }
            match frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        self.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                    }
                }
                Some(Err(error)) => self.finish(code_of_error(error)),
                None => self.finish(Code::Internal),
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = frame;
    }
}

#[cfg(feature = "metrics")]
impl Drop for CallRecorder {
    fn drop(&mut self) {
        // Neither status nor error seen: the caller (client) or the peer (server) went away.
        self.finish(Code::Cancelled);
    }
}

/// A balanced channel's `grpc.target` label, made once per channel.
#[cfg(feature = "balance")]
#[derive(Clone, Debug)]
pub(crate) struct ClientLabels {
    #[cfg(feature = "metrics")]
    target: std::sync::Arc<str>,
}

#[cfg(feature = "balance")]
impl ClientLabels {
    pub(crate) fn new(target: &impl std::fmt::Display) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = target;
        Self {
            #[cfg(feature = "metrics")]
            target: target.to_string().into(),
        }
    }

    #[cfg(feature = "metrics")]
    fn labels(&self, method: &str) -> Vec<::metrics::Label> {
        vec![
            ::metrics::Label::new(METHOD, method.to_owned()),
            ::metrics::Label::new(TARGET, ::metrics::SharedString::from(self.target.clone())),
        ]
    }
}

#[cfg(feature = "metrics")]
pin_project_lite::pin_project! {
    /// The response body of a call [`CallMetricsService`](super::CallMetricsService) times:
    /// its end (the trailers' status, an error, or being dropped unfinished: CANCELLED)
    /// records the call. Frames pass through unchanged.
    ///
    /// ```
    /// use mtls_tonic::metrics::CallMetricsBody;
    /// // What a server wrapped in CallMetricsLayer answers with:
    /// fn answer(response: http::Response<CallMetricsBody<tonic::body::Body>>) -> http::StatusCode {
    ///     response.status()
    /// }
    /// ```
    #[derive(Debug)]
    pub struct CallMetricsBody<B> {
        #[pin]
        inner: B,
        recorder: CallRecorder,
    }
}

#[cfg(feature = "metrics")]
impl<B> CallMetricsBody<B> {
    pub(crate) fn new(inner: B, recorder: CallRecorder) -> Self {
        Self { inner, recorder }
    }
}

#[cfg(feature = "metrics")]
impl<B> http_body::Body for CallMetricsBody<B>
where
    B: http_body::Body,
    B::Error: StdError + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        this.recorder.frame(frame.as_ref());
        std::task::Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
