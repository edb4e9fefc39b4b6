//! Introspection: what the balanced channel currently knows.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

/// The state of one endpoint (one resolved address, one HTTP/2 connection).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointState {
    /// Dialing: TCP, TLS and HTTP/2 not yet finished.
    Connecting,
    /// Connected and (when health checks are on) SERVING: calls are picked among these.
    Ready,
    /// Connected, but its `grpc.health.v1` status is not SERVING: not picked.
    NotServing,
    /// The last connection attempt or connection failed; waiting out the backoff.
    TransientFailure {
        /// Why the last attempt failed.
        reason: String,
    },
    /// Removed from DNS: gets no new calls, in-flight calls finish.
    Draining,
}

impl EndpointState {
    /// Whether calls may be sent to this endpoint.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl std::fmt::Display for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connecting => f.write_str("connecting"),
            Self::Ready => f.write_str("ready"),
            Self::NotServing => f.write_str("not serving"),
            Self::TransientFailure { reason } => write!(f, "transient failure ({reason})"),
            Self::Draining => f.write_str("draining"),
        }
    }
}

/// A snapshot of one endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointInfo {
    /// The resolved address.
    pub addr: SocketAddr,
    /// Its state.
    pub state: EndpointState,
    /// Calls sent to it whose response has not finished.
    pub in_flight: usize,
    /// Calls sent to it since it was added.
    pub calls: u64,
}

/// The outcome of the latest DNS resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolutionState {
    /// No resolution has finished yet.
    Pending,
    /// The target is an IP address: one endpoint, no DNS.
    Static,
    /// DNS answered with addresses.
    Resolved {
        /// How many addresses.
        addresses: usize,
        /// The smallest TTL among the records.
        ttl: Duration,
        /// When.
        at: SystemTime,
    },
    /// DNS answered that the name has no A/AAAA records (NXDOMAIN or NODATA): the endpoint
    /// set is now empty.
    NoRecords {
        /// When.
        at: SystemTime,
    },
    /// DNS could not be reached or failed (timeout, refused, SERVFAIL): the last good
    /// endpoint set is kept.
    Unreachable {
        /// The resolver's error.
        error: String,
        /// When.
        at: SystemTime,
    },
}

impl std::fmt::Display for ResolutionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("DNS: not resolved yet"),
            Self::Static => f.write_str("static address"),
            Self::Resolved { addresses, ttl, .. } => {
                write!(f, "DNS: {addresses} address(es), ttl {ttl:?}")
            }
            Self::NoRecords { .. } => f.write_str("DNS: no records"),
            Self::Unreachable { error, .. } => write!(f, "DNS unreachable: {error}"),
        }
    }
}
