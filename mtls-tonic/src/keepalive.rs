//! HTTP/2 keepalive settings, shared by the server and the balanced channel.

use std::time::Duration;

/// HTTP/2 keepalive: a PING every `interval` (on a server: after `interval` without frames
/// from the peer), the connection dropped when a PING is not answered within `timeout`.
/// `Keepalive::default()` (20 s / 10 s) is a balanced channel's default for each endpoint
/// (`BalancedChannelBuilder::keepalive`); a server's default
/// ([`ServerOptions::http2_keepalive`](crate::server::ServerOptions::http2_keepalive)) is
/// 60 s / 20 s.
///
/// ```
/// use std::time::Duration;
/// use mtls_tonic::Keepalive;
/// let keepalive = Keepalive::new(Duration::from_secs(30), Duration::from_secs(5));
/// assert_eq!(keepalive.interval, Duration::from_secs(30));
/// assert_eq!(Keepalive::default().timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Time between PINGs.
    pub interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub timeout: Duration,
}

impl Keepalive {
    /// A PING every `interval`, answered within `timeout`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self { interval, timeout }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self::new(Duration::from_secs(20), Duration::from_secs(10))
    }
}
