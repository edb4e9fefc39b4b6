//! What mtls-tonic records through the `metrics` facade (feature `metrics`, off by
//! default): one named function per event, called from one line where the event happens;
//! without the feature every function is an empty `#[inline]` body. The facade choice: see
//! `mtls_core::metrics`; the table of names with their Envoy and linkerd equivalents is the
//! repository's METRICS.md.
//!
//! | metric (labels) | kind | gRFC | Envoy |
//! |---|---|---|---|
//! | `grpc.server.tls.handshakes`, `grpc.client.tls.handshakes` | counter | A118 | `ssl.*` (mtls-core's names) |
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
//! ```
//! use mtls_tonic::metrics::{AUTHZ_DENIED, DISCONNECTIONS};
//! assert_eq!(DISCONNECTIONS, "grpc.subchannel.disconnections");
//! assert_eq!(AUTHZ_DENIED, "mtls.authz.denied");
//! mtls_tonic::metrics::describe(); // help texts; a no-op without a recorder
//! ```

use std::io;

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

/// Describes every metric of this crate (and mtls-core's and mtls-jwt's, which it records
/// through) to the installed recorder; a no-op without the feature.
pub fn describe() {
    mtls_core::metrics::describe();
    #[cfg(feature = "jwt")]
    mtls_jwt::metrics::describe();
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{describe_counter, describe_histogram};
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

/// The policy's verdict on one call.
#[inline]
pub(crate) fn authz(policy: &crate::MethodPolicy, path: &str, allowed: bool) {
    #[cfg(feature = "metrics")]
    {
        let method = if policy.names(path) { path } else { "other" };
        let name = if allowed { AUTHZ_ALLOWED } else { AUTHZ_DENIED };
        ::metrics::counter!(name, METHOD => method.to_owned()).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (policy, path, allowed);
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
    from: Option<&crate::EndpointState>,
    to: Option<&crate::EndpointState>,
) {
    #[cfg(feature = "metrics")]
    {
        fn label(state: &crate::EndpointState) -> &'static str {
            use crate::EndpointState as S;
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
