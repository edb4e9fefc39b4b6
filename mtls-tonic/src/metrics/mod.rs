//! What mtls-tonic records through the `metrics` facade (feature `metrics`, off by
//! default): one named function per event, called from one line where the event happens;
//! without the feature every function is an empty `#[inline]` body. The facade choice: see
//! `mtls_core::metrics`; the table of names with their Envoy and linkerd equivalents is the
//! repository's METRICS.md.
//!
//! | metric (labels) | kind | gRFC | Envoy |
//! |---|---|---|---|
//! | `grpc.server.tls.handshakes`, `grpc.client.tls.handshakes` | counter | A118 | `ssl.*` (mtls-core's names) |
//! | `grpc.client.attempt.started` (`grpc.method`, `grpc.target`) | counter | A66 | `upstream_rq_total` |
//! | `grpc.client.attempt.duration` (`grpc.method`, `grpc.target`, `grpc.status`) | histogram, s | A66 | `upstream_rq_time` (ms) |
//! | `grpc.client.call.duration` (`grpc.method`, `grpc.target`, `grpc.status`) | histogram, s | A66 | — (Envoy sees attempts) |
//! | `grpc.server.call.started` (`grpc.method`, constant labels) | counter | A66 | `http.<prefix>.downstream_rq_total` |
//! | `grpc.server.call.duration` (`grpc.method`, `grpc.status`, constant labels) | histogram, s | A66 | `http.<prefix>.downstream_rq_time` (ms) |
//! | `mtls.authz.allowed`, `mtls.authz.denied` (`grpc.method`) | counter | — | `rbac.allowed`, `rbac.denied` |
//! | `grpc.subchannel.connection_attempts_succeeded` / `_failed` (`grpc.target`) | counter | A94 | `upstream_cx_total`, `upstream_cx_connect_fail` |
//! | `grpc.subchannel.disconnections` (`grpc.target`, `grpc.disconnect_error`) | counter | A94 | `upstream_cx_close_notify` (GOAWAY), `upstream_cx_destroy_remote` |
//! | `grpc.client.call.retries`, `grpc.client.call.transparent_retries` (`grpc.target`) | histogram | A96 | `upstream_rq_retry` |
//! | `mtls.dns.resolutions` (`grpc.target`, `result` = `found`/`no_records`/`failed`) | counter | — | `dns.<cluster>.resolve_total`, `cluster.<name>.update_failure` |
//! | `mtls.balancer.endpoints` (`grpc.target`, `endpoint_state`) | gauge | — | `membership_healthy`, `membership_total` (linkerd: `outbound_http_balancer_endpoints`) |
//!
//! `grpc.method` is the method path when the authorization policy names it (exactly or by
//! its service), else `other`, so a caller cannot grow the label set with made-up paths
//! (gRFC A66 does the same for unregistered methods). `grpc.disconnect_error` is `GOAWAY`
//! when the server sent one, else `connection reset`, `connection timed out` or `unknown`.
//! The retry histograms record a call only when it was retried (A96: no zeros).
//!
//! Per call (gRFC A66): the balanced channel times every call (`grpc.client.call.duration`:
//! waits for a ready endpoint, every attempt and backoff) and every attempt on an endpoint
//! (`grpc.client.attempt.*`, a transparent retry is an attempt too); servers time calls with
//! [`CallMetricsLayer`]. `grpc.status` is the call's final status as the caller sees it: the
//! `grpc-status` of a trailers-only response's headers, else of its trailers, else the
//! transport error's code (UNAVAILABLE for a broken connection, an HTTP/2 reset mapped as
//! tonic maps it); a call dropped before its status (the caller cancelled, or the client
//! went away from the server) records CANCELLED. The client's `grpc.method` is the path as
//! the application calls it (tonic's generated clients, as grpc-go records a generated
//! stub's method); the server's is the path only for the services [`CallMetricsLayer`] is
//! told it serves, else `other` (a caller picks the path). A server's constant labels (none
//! by default; [`CallMetricsLayer::label`], e.g. a replica's name when several share a
//! process) are on both server metrics. A66's message-size histograms
//! (`*.sent_total_compressed_message_size`, `*.rcvd_total_compressed_message_size`) are not
//! recorded.
//!
//! ```
//! use mtls_tonic::metrics::{AUTHZ_DENIED, DISCONNECTIONS};
//! assert_eq!(DISCONNECTIONS, "grpc.subchannel.disconnections");
//! assert_eq!(AUTHZ_DENIED, "mtls.authz.denied");
//! mtls_tonic::metrics::describe(); // help texts; a no-op without a recorder
//! ```

#[cfg(any(feature = "balance", feature = "metrics"))]
mod call;
#[cfg(feature = "metrics")]
mod layer;

use std::io;

use tonic::Code;

#[cfg(feature = "balance")]
pub(crate) use call::ClientLabels;
#[cfg(feature = "balance")]
pub(crate) use call::{CallRecorder, code_of_error};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use {
    call::CallMetricsBody,
    layer::{CallMetricsFuture, CallMetricsLayer, CallMetricsService},
};

#[cfg(feature = "metrics")]
use mtls_core::metrics::{HandshakeResult, HandshakeSide};

/// A server handshake that finished (`Ok`, with the handshake's own result: its error, if
/// any) or hit the handshake timeout (`Err`): `grpc.server.tls.handshakes`.
#[inline]
pub(crate) fn server_handshake<E>(result: Result<Result<(), &io::Error>, E>) {
    #[cfg(feature = "metrics")]
    {
        let result = match result {
            Ok(Ok(())) => HandshakeResult::Success,
            Ok(Err(error)) => HandshakeResult::of_error(error),
            Err(_) => HandshakeResult::Timeout,
        };
        mtls_core::metrics::handshake(HandshakeSide::Server, result);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// A client handshake that finished: `grpc.client.tls.handshakes`.
#[inline]
pub(crate) fn client_handshake<T>(result: &io::Result<T>) {
    #[cfg(feature = "metrics")]
    mtls_core::metrics::handshake(HandshakeSide::Client, HandshakeResult::of(result));
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Counter `mtls.authz.allowed`: calls the method policy let through, by [`METHOD`].
pub const AUTHZ_ALLOWED: &str = "mtls.authz.allowed";
/// Counter `mtls.authz.denied`: calls the method policy refused, by [`METHOD`].
pub const AUTHZ_DENIED: &str = "mtls.authz.denied";
/// Label `grpc.method` (gRFC A66): `/pkg.Service/Method`, or `other`.
pub const METHOD: &str = "grpc.method";
/// Label `grpc.target` (gRFC A66): the channel's target as given to the builder.
pub const TARGET: &str = "grpc.target";
/// Label `grpc.status` (gRFC A66): the call's final status, by name ([`status_name`]:
/// `OK`, `NOT_FOUND`, `CANCELLED`, ...).
pub const STATUS: &str = "grpc.status";
/// Counter (gRFC A66): attempts a balanced channel sent to an endpoint, by [`METHOD`] and
/// [`TARGET`].
pub const CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
/// Histogram (gRFC A66), seconds: each attempt, from its dispatch to its status, by
/// [`METHOD`], [`TARGET`] and [`STATUS`].
pub const CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
/// Histogram (gRFC A66), seconds: each call through a balanced channel as the caller sees
/// it, by [`METHOD`], [`TARGET`] and [`STATUS`].
pub const CLIENT_CALL_DURATION: &str = "grpc.client.call.duration";
/// Counter (gRFC A66): calls a server ([`CallMetricsLayer`]) received, by [`METHOD`].
pub const SERVER_CALL_STARTED: &str = "grpc.server.call.started";
/// Histogram (gRFC A66), seconds: each server call, from its request to its status, by
/// [`METHOD`] and [`STATUS`].
pub const SERVER_CALL_DURATION: &str = "grpc.server.call.duration";
/// The histogram buckets gRFC A66 recommends for its latency histograms, in seconds (for
/// an exporter that needs buckets, e.g. `metrics-exporter-prometheus`'s
/// `set_buckets_for_metric`).
pub const LATENCY_BUCKETS: [f64; 41] = [
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];
/// Counter (gRFC A94): connections that became ready (TLS done, the server's HTTP/2 SETTINGS heard).
pub const CONNECTION_ATTEMPTS_SUCCEEDED: &str = "grpc.subchannel.connection_attempts_succeeded";
/// Counter (gRFC A94): connection attempts that failed (refused, TLS refused, timed out).
pub const CONNECTION_ATTEMPTS_FAILED: &str = "grpc.subchannel.connection_attempts_failed";
/// Counter (gRFC A94): ready connections that ended, by [`DISCONNECT_ERROR`].
pub const DISCONNECTIONS: &str = "grpc.subchannel.disconnections";
/// Label of [`DISCONNECTIONS`]: `GOAWAY`, `connection reset`, `connection timed out`, `unknown`.
pub const DISCONNECT_ERROR: &str = "grpc.disconnect_error";
/// Histogram (gRFC A96): retries by the call's retry policy, per retried call.
pub const CALL_RETRIES: &str = "grpc.client.call.retries";
/// Histogram (gRFC A96): transparent retries (the call never reached a server), per call
/// that had any.
pub const CALL_TRANSPARENT_RETRIES: &str = "grpc.client.call.transparent_retries";
/// Counter `mtls.dns.resolutions`: DNS look-ups of a balanced channel's name, by [`RESULT`].
pub const DNS_RESOLUTIONS: &str = "mtls.dns.resolutions";
/// Gauge `mtls.balancer.endpoints`: a balanced channel's endpoints by [`ENDPOINT_STATE`]
/// (linkerd's `outbound_http_balancer_endpoints{endpoint_state}`).
pub const BALANCER_ENDPOINTS: &str = "mtls.balancer.endpoints";
/// Label of [`BALANCER_ENDPOINTS`]: `connecting`, `ready`, `not_serving`,
/// `transient_failure`, `refused`, `draining`, `ejected`.
pub const ENDPOINT_STATE: &str = "endpoint_state";
/// Label of [`DNS_RESOLUTIONS`]: `found`, `no_records` or `failed`.
pub const RESULT: &str = "result";

/// A66's status name of `code` (`OK`, `NOT_FOUND`, ...), the `grpc.status` label value.
///
/// ```
/// use mtls_tonic::metrics::status_name;
/// assert_eq!(status_name(tonic::Code::PermissionDenied), "PERMISSION_DENIED");
/// ```
pub fn status_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Describes every metric of this crate (and mtls-core's and mtls-jwt's, which it records
/// through) to the installed recorder; a no-op without the feature.
pub fn describe() {
    mtls_core::metrics::describe();
    #[cfg(feature = "jwt")]
    mtls_jwt::metrics::describe();
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{Unit, describe_counter, describe_histogram};
        describe_counter!(
            CLIENT_ATTEMPT_STARTED,
            "Attempts sent to an endpoint, by grpc.method and grpc.target"
        );
        describe_histogram!(
            CLIENT_ATTEMPT_DURATION,
            Unit::Seconds,
            "Attempts from dispatch to status, by grpc.method, grpc.target and grpc.status"
        );
        describe_histogram!(
            CLIENT_CALL_DURATION,
            Unit::Seconds,
            "Calls as the caller sees them, by grpc.method, grpc.target and grpc.status"
        );
        describe_counter!(
            SERVER_CALL_STARTED,
            "Calls a server received, by grpc.method"
        );
        describe_histogram!(
            SERVER_CALL_DURATION,
            Unit::Seconds,
            "Server calls from request to status, by grpc.method and grpc.status"
        );
        describe_counter!(
            AUTHZ_ALLOWED,
            "Calls the method policy allowed, by grpc.method"
        );
        describe_counter!(
            AUTHZ_DENIED,
            "Calls the method policy denied, by grpc.method"
        );
        describe_counter!(
            CONNECTION_ATTEMPTS_SUCCEEDED,
            "Connections that became ready, by grpc.target"
        );
        describe_counter!(
            CONNECTION_ATTEMPTS_FAILED,
            "Connection attempts that failed, by grpc.target"
        );
        describe_counter!(
            DISCONNECTIONS,
            "Ready connections that ended, by grpc.target and grpc.disconnect_error"
        );
        describe_histogram!(CALL_RETRIES, "Retries by policy of each retried call");
        describe_histogram!(
            CALL_TRANSPARENT_RETRIES,
            "Transparent retries of each call that had any"
        );
        describe_counter!(
            DNS_RESOLUTIONS,
            "DNS look-ups of balanced channels, by result"
        );
        ::metrics::describe_gauge!(
            BALANCER_ENDPOINTS,
            "Endpoints of balanced channels, by grpc.target and endpoint_state"
        );
    }
}

/// Counters of one name by `grpc.method`, each registered once per method and recorder
/// (as the A66 call series are) instead of a labelled key built on every call.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct MethodCounters {
    name: &'static str,
    methods: std::sync::RwLock<std::collections::HashMap<Box<str>, (usize, ::metrics::Counter)>>,
}

#[cfg(feature = "metrics")]
impl MethodCounters {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            methods: std::sync::RwLock::default(),
        }
    }

    /// Counts one for `method` under the recorder the macros would use now.
    fn increment(&self, method: &str) {
        use std::sync::PoisonError;
        let recorder = call::series::recorder();
        {
            let methods = self.methods.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = methods.get(method).filter(|(under, _)| *under == recorder)
            {
                counter.increment(1);
                return;
            }
        }
        let counter = ::metrics::counter!(self.name, METHOD => method.to_owned());
        counter.increment(1);
        let mut methods = self.methods.write().unwrap_or_else(PoisonError::into_inner);
        if methods.len() < call::series::MAX_METHODS || methods.contains_key(method) {
            methods.insert(method.into(), (recorder, counter));
        }
    }
}

/// The authorization counters of one [`AuthzLayer`](crate::authz::AuthzLayer) (or
/// service made alone): `mtls.authz.allowed` and `mtls.authz.denied` by method.
#[derive(Debug)]
pub(crate) struct AuthzCounters {
    #[cfg(feature = "metrics")]
    allowed: MethodCounters,
    #[cfg(feature = "metrics")]
    denied: MethodCounters,
}

impl Default for AuthzCounters {
    fn default() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            allowed: MethodCounters::new(AUTHZ_ALLOWED),
            #[cfg(feature = "metrics")]
            denied: MethodCounters::new(AUTHZ_DENIED),
        }
    }
}

/// The policy's verdict on one call.
#[inline]
pub(crate) fn authz(
    counters: &AuthzCounters,
    policy: &crate::authz::MethodPolicy,
    path: &str,
    allowed: bool,
) {
    #[cfg(feature = "metrics")]
    {
        let method = if policy.names(path) { path } else { "other" };
        let counters = if allowed {
            &counters.allowed
        } else {
            &counters.denied
        };
        counters.increment(method);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (counters, policy, path, allowed);
}

#[cfg(feature = "balance")]
/// A connection became ready.
#[inline]
pub(crate) fn connected(target: &impl std::fmt::Display) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CONNECTION_ATTEMPTS_SUCCEEDED, TARGET => target.to_string()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = target;
}

#[cfg(feature = "balance")]
/// A connection attempt failed (before the connection was ready).
#[inline]
pub(crate) fn connect_failed(target: &impl std::fmt::Display) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CONNECTION_ATTEMPTS_FAILED, TARGET => target.to_string()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = target;
}

#[cfg(feature = "balance")]
/// A ready connection ended: `goaway` when the server sent GOAWAY, else why it closed.
#[inline]
pub(crate) fn disconnected(target: &impl std::fmt::Display, goaway: bool, reason: &str) {
    #[cfg(feature = "metrics")]
    {
        let error = if goaway {
            "GOAWAY"
        } else if reason.contains("reset") {
            "connection reset"
        } else if reason.contains("timed out") || reason.contains("timeout") {
            "connection timed out"
        } else {
            "unknown"
        };
        ::metrics::counter!(DISCONNECTIONS, TARGET => target.to_string(), DISCONNECT_ERROR => error)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (target, goaway, reason);
}

#[cfg(feature = "balance")]
/// One DNS look-up: `Some(true)` found addresses, `Some(false)` no records, `None` failed.
#[inline]
pub(crate) fn dns_resolution(target: &impl std::fmt::Display, found: Option<bool>) {
    #[cfg(feature = "metrics")]
    {
        let result = match found {
            Some(true) => "found",
            Some(false) => "no_records",
            None => "failed",
        };
        ::metrics::counter!(DNS_RESOLUTIONS, TARGET => target.to_string(), RESULT => result)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (target, found);
}

#[cfg(feature = "balance")]
/// The retries of one call, recorded when the call ends (dropped), if there were any.
#[derive(Debug)]
pub(crate) struct CallRetries {
    #[cfg(feature = "metrics")]
    target: String,
    /// Retries by the call's policy.
    pub(crate) policy: u32,
    /// Transparent retries.
    pub(crate) transparent: u32,
}

#[cfg(feature = "balance")]
impl CallRetries {
    #[inline]
    pub(crate) fn new(target: &impl std::fmt::Display, transparent: u32) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = target;
        Self {
            #[cfg(feature = "metrics")]
            target: target.to_string(),
            policy: 0,
            transparent,
        }
    }
}

#[cfg(feature = "balance")]
impl Drop for CallRetries {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let target = std::mem::take(&mut self.target);
            if self.policy > 0 {
                ::metrics::histogram!(CALL_RETRIES, TARGET => target.clone())
                    .record(f64::from(self.policy));
            }
            if self.transparent > 0 {
                ::metrics::histogram!(CALL_TRANSPARENT_RETRIES, TARGET => target)
                    .record(f64::from(self.transparent));
            }
        }
    }
}

/// An endpoint moved from one state to another (`None`: it did not exist / is gone).
#[cfg(feature = "balance")]
#[inline]
pub(crate) fn endpoint_state(
    target: &str,
    from: Option<&crate::balance::EndpointState>,
    to: Option<&crate::balance::EndpointState>,
) {
    #[cfg(feature = "metrics")]
    {
        fn label(state: &crate::balance::EndpointState) -> &'static str {
            use crate::balance::EndpointState as S;
            match state {
                S::Connecting => "connecting",
                S::Ready => "ready",
                S::NotServing => "not_serving",
                S::TransientFailure { .. } => "transient_failure",
                S::Refused { .. } => "refused",
                S::Draining => "draining",
                S::Ejected { .. } => "ejected",
            }
        }
        if let Some(from) = from {
            ::metrics::gauge!(BALANCER_ENDPOINTS, TARGET => target.to_owned(), ENDPOINT_STATE => label(from))
                .decrement(1.0);
        }
        if let Some(to) = to {
            ::metrics::gauge!(BALANCER_ENDPOINTS, TARGET => target.to_owned(), ENDPOINT_STATE => label(to))
                .increment(1.0);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (target, from, to);
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::{AuthzCounters, authz};
    use crate::authz::MethodPolicy;

    /// Each counter `recorder` holds, as "name method=… value", sorted.
    fn counters(recorder: &DebuggingRecorder) -> Vec<String> {
        let mut seen: Vec<String> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => {
                    let labels: Vec<String> = key
                        .key()
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    Some(format!("{} {} {n}", key.key().name(), labels.join(",")))
                }
                _ => None,
            })
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn authz_counters_follow_the_recorder_in_use_and_label_unnamed_paths_other() {
        let policy = MethodPolicy::deny_by_default()
            .allow("pkg.Svc/*", mtls_core::Authorize::any())
            .unwrap();
        let cache = AuthzCounters::default();
        let first = DebuggingRecorder::new();
        metrics::with_local_recorder(&first, || {
            for _ in 0..3 {
                authz(&cache, &policy, "/pkg.Svc/Get", true);
            }
            authz(&cache, &policy, "/pkg.Svc/Get", false);
            authz(&cache, &policy, "/made.Up/Path", false);
        });
        assert_eq!(
            counters(&first),
            [
                "mtls.authz.allowed grpc.method=/pkg.Svc/Get 3",
                "mtls.authz.denied grpc.method=/pkg.Svc/Get 1",
                "mtls.authz.denied grpc.method=other 1",
            ]
        );
        // The handles cached under the first recorder are not used under another.
        let second = DebuggingRecorder::new();
        metrics::with_local_recorder(&second, || {
            authz(&cache, &policy, "/pkg.Svc/Get", true);
        });
        assert_eq!(
            counters(&second),
            ["mtls.authz.allowed grpc.method=/pkg.Svc/Get 1"]
        );
        assert_eq!(
            counters(&first)[0],
            "mtls.authz.allowed grpc.method=/pkg.Svc/Get 0",
            "nothing more went to the first recorder (a snapshot takes what counters hold)"
        );
    }
}
