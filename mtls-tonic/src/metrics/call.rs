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
use super::{SERVER_CALL_DURATION, SERVER_CALL_STARTED};

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
    series: std::sync::Arc<series::Series>,
    started: std::time::Instant,
}

/// Registered metric handles, made once per method and status instead of a key with labels
/// built (and looked up by the recorder) on every call.
///
/// Handles belong to the recorder that made them: each series remembers which recorder
/// that was, and a call under another one (installed later, or a thread's local recorder)
/// registers the series again.
#[cfg(feature = "metrics")]
pub(crate) mod series {
    use std::{
        collections::HashMap,
        sync::{Arc, OnceLock, PoisonError, RwLock},
    };

    use metrics::{Counter, Histogram, Label};
    use tonic::Code;

    use super::super::{METHOD, STATUS, status_name};

    /// Methods kept per family; beyond it (a client calling many distinct paths) a call's
    /// series is made for that call alone.
    pub(crate) const MAX_METHODS: usize = 1024;

    /// One metric family (a histogram, optionally a counter of starts) over its methods,
    /// with the labels every series of it carries.
    #[derive(Debug)]
    pub(crate) struct Family {
        started: Option<&'static str>,
        histogram: &'static str,
        labels: Vec<Label>,
        methods: RwLock<HashMap<Box<str>, Arc<Series>>>,
    }

    /// One method's handles: its start counter and its duration histogram per status.
    #[derive(Debug)]
    pub(crate) struct Series {
        recorder: usize,
        histogram: &'static str,
        labels: Vec<Label>,
        started: Option<Counter>,
        durations: [OnceLock<Histogram>; 17],
    }

    /// Which recorder the macros would use here now (local, global or the no-op one).
    pub(crate) fn recorder() -> usize {
        metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize)
    }

    impl Family {
        pub(crate) fn new(
            started: Option<&'static str>,
            histogram: &'static str,
            labels: Vec<Label>,
        ) -> Self {
            Self {
                started,
                histogram,
                labels,
                methods: RwLock::new(HashMap::new()),
            }
        }

        /// `method`'s series under the current recorder, its start counted.
        pub(crate) fn start(&self, method: &str) -> Arc<Series> {
            let recorder = recorder();
            let cached = self
                .methods
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(method)
                .filter(|s| s.recorder == recorder)
                .cloned();
            let series = cached.unwrap_or_else(|| {
                let series = Arc::new(self.series(method, recorder));
                let mut methods = self.methods.write().unwrap_or_else(PoisonError::into_inner);
                if methods.len() < MAX_METHODS || methods.contains_key(method) {
                    methods.insert(method.into(), series.clone());
                }
                series
            });
            if let Some(started) = &series.started {
                started.increment(1);
            }
            series
        }

        fn series(&self, method: &str, recorder: usize) -> Series {
            let mut labels = Vec::with_capacity(1 + self.labels.len());
            labels.push(Label::new(METHOD, method.to_owned()));
            labels.extend(self.labels.iter().cloned());
            Series {
                recorder,
                histogram: self.histogram,
                started: self
                    .started
                    .map(|name| metrics::counter!(name, labels.iter())),
                labels,
                durations: Default::default(),
            }
        }
    }

    impl Series {
        /// Records one duration with its status.
        pub(crate) fn record(&self, code: Code, seconds: f64) {
            let slot = usize::try_from(i32::from(code))
                .ok()
                .and_then(|i| self.durations.get(i));
            let Some(slot) = slot else {
                return;
            };
            slot.get_or_init(|| {
                let mut labels = self.labels.clone();
                labels.push(Label::from_static_parts(STATUS, status_name(code)));
                metrics::histogram!(self.histogram, labels)
            })
            .record(seconds);
        }
    }
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
        return Self::start(target.attempts.start(method));
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
        return Self::start(target.calls.start(method));
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (target, method);
            Self
        }
    }

    /// A server call of `method` (already `other` if not served) in `family` (the server's
    /// constant labels): counts `grpc.server.call.started`.
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn server_call(family: &series::Family, method: &str) -> Self {
        Self::start(family.start(method))
    }

    /// The family of a server's calls, with its constant `extra` labels.
    #[cfg(feature = "metrics")]
    pub(crate) fn server_family(extra: &[::metrics::Label]) -> series::Family {
        series::Family::new(
            Some(SERVER_CALL_STARTED),
            SERVER_CALL_DURATION,
            extra.to_vec(),
        )
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
    fn start(series: std::sync::Arc<series::Series>) -> Self {
        Self {
            pending: Some(Pending {
                series,
                started: std::time::Instant::now(),
            }),
        }
    }

    /// Records the duration with `code`, once (later calls do nothing).
    #[inline]
    pub(crate) fn finish(&mut self, code: Code) {
        #[cfg(feature = "metrics")]
        if let Some(Pending { series, started }) = self.pending.take() {
            series.record(code, started.elapsed().as_secs_f64());
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
    /// `grpc.client.attempt.*` of this channel.
    #[cfg(feature = "metrics")]
    attempts: std::sync::Arc<series::Family>,
    /// `grpc.client.call.duration` of this channel.
    #[cfg(feature = "metrics")]
    calls: std::sync::Arc<series::Family>,
}

#[cfg(feature = "balance")]
impl ClientLabels {
    pub(crate) fn new(target: &impl std::fmt::Display) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = target;
        #[cfg(feature = "metrics")]
        let target = vec![::metrics::Label::new(TARGET, target.to_string())];
        Self {
            #[cfg(feature = "metrics")]
            attempts: std::sync::Arc::new(series::Family::new(
                Some(CLIENT_ATTEMPT_STARTED),
                CLIENT_ATTEMPT_DURATION,
                target.clone(),
            )),
            #[cfg(feature = "metrics")]
            calls: std::sync::Arc::new(series::Family::new(None, CLIENT_CALL_DURATION, target)),
        }
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

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::series::Family;

    /// What `recorder` holds: (calls started, durations recorded, each series as
    /// "name label=value,…" with its labels sorted).
    fn read(recorder: &DebuggingRecorder) -> (u64, usize, Vec<String>) {
        let (mut started, mut durations, mut series) = (0, 0, Vec::new());
        for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            series.push(format!("{} {}", key.key().name(), labels.join(",")));
            match value {
                DebugValue::Counter(n) if key.key().name() == "started" => started += n,
                DebugValue::Histogram(v) if key.key().name() == "duration" => durations += v.len(),
                _ => {}
            }
        }
        (started, durations, series)
    }

    #[test]
    fn a_series_follows_the_recorder_in_use_and_keeps_its_labels() {
        let family = Family::new(
            Some("started"),
            "duration",
            vec![metrics::Label::new("grpc.target", "svc:1")],
        );
        let first = DebuggingRecorder::new();
        metrics::with_local_recorder(&first, || {
            for _ in 0..3 {
                family.start("/pkg.Svc/Get").record(tonic::Code::Ok, 0.001);
            }
            family
                .start("/pkg.Svc/Get")
                .record(tonic::Code::NotFound, 0.002);
        });
        let (started, durations, series) = read(&first);
        assert_eq!((started, durations), (4, 4), "every call counted and timed");
        for expected in [
            "started grpc.method=/pkg.Svc/Get,grpc.target=svc:1",
            "duration grpc.method=/pkg.Svc/Get,grpc.status=OK,grpc.target=svc:1",
            "duration grpc.method=/pkg.Svc/Get,grpc.status=NOT_FOUND,grpc.target=svc:1",
        ] {
            assert!(
                series.iter().any(|k| k == expected),
                "expected a series {expected:?}, saw {series:?}"
            );
        }
        // Another recorder in use (installed later): the first one's cached handles are not
        // used; the call is counted and timed by the recorder in use.
        let second = DebuggingRecorder::new();
        metrics::with_local_recorder(&second, || {
            family.start("/pkg.Svc/Get").record(tonic::Code::Ok, 0.001);
        });
        let (started, durations, _) = read(&second);
        assert_eq!(
            (started, durations),
            (1, 1),
            "the recorder in use sees the call"
        );
    }
}
