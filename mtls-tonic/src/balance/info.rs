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
    /// The latest attempt was refused at the TLS layer: the server refused our certificate
    /// (its TLS alert, e.g. `received fatal alert: CertificateUnknown`, when it authorizes at
    /// the handshake), or we refused the server's (the verifier's reason, naming the
    /// presented and expected identities). Told apart from [`EndpointState::TransientFailure`]
    /// (nothing listening, a reset, a timeout): retrying will not help until a certificate
    /// or a policy changes. It counts as failed for the channel, so calls fail fast.
    Refused {
        /// The alert or the verifier's reason.
        reason: String,
    },
    /// Removed from DNS: gets no new calls, in-flight calls finish.
    Draining,
    /// Ejected by outlier detection: gets no new calls until the ejection time is over.
    Ejected {
        /// Why and for how long.
        reason: String,
    },
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
            Self::Refused { reason } => write!(f, "refused ({reason})"),
            Self::Draining => f.write_str("draining"),
            Self::Ejected { reason } => write!(f, "ejected ({reason})"),
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
    /// Why its latest connection attempt or connection failed, kept while it reconnects
    /// (cleared once it is ready again).
    pub last_error: Option<String>,
    /// Set while the endpoint is kept although DNS no longer names it (an empty answer after
    /// a good one, see [`BalancedChannelBuilder::empty_answer_grace`](crate::balance::BalancedChannelBuilder::empty_answer_grace)):
    /// since when.
    pub not_in_dns_since: Option<SystemTime>,
}

impl std::fmt::Display for EndpointInfo {
    /// `addr state`, the last error while reconnecting, and "not in DNS since" when kept.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.addr, self.state)?;
        if let Some(error) = &self.last_error
            && !matches!(
                self.state,
                EndpointState::TransientFailure { .. } | EndpointState::Refused { .. }
            )
        {
            write!(f, " (last error: {error})")?;
        }
        if let Some(since) = self.not_in_dns_since {
            let ago = SystemTime::now().duration_since(since).unwrap_or_default();
            write!(f, " (not in DNS since {:.1}s ago)", ago.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The channel's connectivity, aggregated over its endpoints as gRPC does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelState {
    /// No endpoint is ready yet and at least one is still on its first attempt (or DNS has
    /// not answered yet): calls wait (up to the ready timeout, or their deadline).
    Connecting,
    /// At least one endpoint is ready: calls are sent at once.
    Ready,
    /// No endpoint is ready and every one has failed since it was last ready (or DNS named
    /// none): calls without wait-for-ready fail UNAVAILABLE at once.
    TransientFailure,
}

impl ChannelState {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Connecting => 0,
            Self::Ready => 1,
            Self::TransientFailure => 2,
        }
    }

    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Ready,
            2 => Self::TransientFailure,
            _ => Self::Connecting,
        }
    }
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Ready => "ready",
            Self::TransientFailure => "transient failure",
        })
    }
}

/// The outcome of the latest DNS resolution (or where the endpoints come from).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolutionState {
    /// No resolution has finished yet.
    Pending,
    /// The target is an IP address: one endpoint, no DNS.
    Static,
    /// Endpoints come from a static list or a [`Discovery`](crate::balance::Discovery) source.
    Discovered {
        /// How many endpoints it names now.
        endpoints: usize,
        /// When it last changed.
        at: SystemTime,
    },
    /// DNS answered with addresses.
    Resolved {
        /// How many addresses.
        addresses: usize,
        /// The smallest TTL among the records.
        ttl: Duration,
        /// When.
        at: SystemTime,
    },
    /// DNS answered that the name has no A/AAAA records (NXDOMAIN or NODATA): endpoints that
    /// were not ready are gone; ready ones stay until they fail, their server drains them,
    /// or the empty-answer grace ends.
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
            Self::Discovered { endpoints, .. } => {
                write!(f, "discovery: {endpoints} endpoint(s)")
            }
            Self::Resolved { addresses, ttl, .. } => {
                write!(f, "DNS: {addresses} address(es), ttl {ttl:?}")
            }
            Self::NoRecords { .. } => f.write_str("DNS: no records"),
            Self::Unreachable { error, .. } => write!(f, "DNS unreachable: {error}"),
        }
    }
}
