//! The crate's error type.

use std::{io, net::SocketAddr, time::Duration};

/// Everything that can go wrong while building or running mtls-tonic pieces.
///
/// Call-time failures reach gRPC callers as a [`tonic::Status`] (UNAVAILABLE,
/// PERMISSION_DENIED, UNAUTHENTICATED); this enum is for configuration and connection setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A balanced-channel target could not be parsed.
    #[error("invalid target {target:?}: expected {expected}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What a valid target looks like.
        expected: &'static str,
    },
    /// A name could not be used as a TLS server name (SNI).
    #[error("invalid TLS server name {presented:?}: expected a DNS name or an IP address")]
    InvalidServerName {
        /// The name as given.
        presented: String,
    },
    /// The loopback DNS server of [`testing`](crate::testing) could not start or take a
    /// record.
    #[cfg(feature = "testing")]
    #[error("loopback DNS server: {what}: {reason}")]
    TestDns {
        /// What it was doing (the name, the socket).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The DNS resolver could not be built (e.g. no readable system configuration).
    #[error("DNS resolver configuration: {0}")]
    Resolver(String),
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// TCP connect plus TLS handshake did not finish in time.
    #[error("connect to {addr}: no TLS session within {timeout:?}")]
    ConnectTimeout {
        /// The address dialed.
        addr: SocketAddr,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed (peer rejected by policy, bad chain, alert from the peer, ...).
    #[error("TLS handshake with {addr}: {reason}")]
    Handshake {
        /// The address dialed.
        addr: SocketAddr,
        /// Why, as mtls-core or rustls reports it.
        reason: String,
    },
    /// The HTTP/2 handshake on top of TLS failed.
    #[error("HTTP/2 handshake with {addr}: {source}")]
    Http2 {
        /// The address dialed.
        addr: SocketAddr,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A URI had no host to connect to.
    #[error("URI {uri} has no host")]
    MissingHost {
        /// The URI as given.
        uri: String,
    },
    /// Host name lookup for a plain (non-balanced) connection failed or found nothing.
    #[error("resolve {host}: {reason}")]
    Lookup {
        /// The host looked up.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// A `user-agent` is not a valid HTTP header value (control characters, non-ASCII).
    #[error("invalid user agent {presented:?}: expected visible ASCII characters and spaces")]
    InvalidUserAgent {
        /// The user agent as given.
        presented: String,
    },
    /// A method pattern ([`MethodPattern`](crate::MethodPattern)) is malformed.
    #[error("invalid method pattern {presented:?}: expected /pkg.Service/Method or pkg.Service/*")]
    InvalidMethodPattern {
        /// The pattern as given.
        presented: String,
    },
    /// A gRPC service config (retry policy, throttling) is malformed.
    #[error("invalid service config: {reason}")]
    InvalidServiceConfig {
        /// What is wrong, naming the field and what was expected.
        reason: String,
    },
    /// Reading a token source failed.
    #[error("token source: {0}")]
    Token(String),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
