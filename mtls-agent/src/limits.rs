//! What a peer can make the agent hold: every bound, its default, and why.

use std::time::Duration;

/// Bounds on what local peers can make the agent hold, applied before any identity is
/// known (connections, HTTP/2, message sizes) and to the requests of attested callers
/// (audiences, SDS resource names). Defaults suit a developer machine or CI host; set the
/// fields to change them.
///
/// | limit | default | on exceeding |
/// |---|---|---|
/// | [`max_connections`](Self::max_connections) (both sockets) | 512 | connection closed at accept |
/// | [`max_connections_per_uid`](Self::max_connections_per_uid) | 64 | connection closed at accept |
/// | [`handshake_timeout`](Self::handshake_timeout) (HTTP/2 preface) | 10 s | connection closed |
/// | [`idle_timeout`](Self::idle_timeout) (no call in flight, nothing received) | 5 min | connection closed |
/// | [`max_concurrent_streams`](Self::max_concurrent_streams) per connection | 100 | stream refused (h2 REFUSED_STREAM) |
/// | [`max_calls_per_uid`](Self::max_calls_per_uid) (both sockets) | 256 | RESOURCE_EXHAUSTED |
/// | [`max_header_list_size`](Self::max_header_list_size) (decoded, RFC 7541 §4.1) | 16 KiB | connection closed (Workload API rewriter) or stream reset (h2) |
/// | HTTP/2 frame size ([`MAX_FRAME_SIZE`](crate::MAX_FRAME_SIZE)) | 16 KiB | connection closed |
/// | CONTINUATIONs per header block ([`MAX_CONTINUATIONS`](crate::MAX_CONTINUATIONS)) | 32 | connection closed |
/// | HTTP/2 receive windows (connection and stream) | 64 KiB | h2 flow control |
/// | streams a client makes the server reset / resets awaiting accept | 1024 / 20 | GOAWAY |
/// | [`max_request_size`](Self::max_request_size) (one Workload API message) | 64 KiB | OUT_OF_RANGE |
/// | [`max_sds_request_size`](Self::max_sds_request_size) (one SDS message) | 256 KiB | OUT_OF_RANGE |
/// | [`max_audiences`](Self::max_audiences) per JWT-SVID call | 16 | INVALID_ARGUMENT |
/// | [`max_audience_len`](Self::max_audience_len) | 512 bytes | INVALID_ARGUMENT |
/// | [`max_sds_resource_names`](Self::max_sds_resource_names) (after dedupe) | 32 | INVALID_ARGUMENT |
/// | ValidateJWTSVID validator cache | 256 audiences | oldest evicted |
/// | log lines per refusal kind | 20 per 10 s | suppressed, then counted |
///
/// What one uid can make the agent buffer before any identity is known is bounded by its
/// calls in flight times the message limit (a partial message is held until complete):
/// 256 × 64 KiB on the Workload API, 256 × 256 KiB on SDS, at most; lower
/// `max_calls_per_uid` for a host whose local users are not trusted with that much memory.
///
/// ```
/// let mut limits = mtls_agent::Limits::default();
/// limits.max_connections_per_uid = 16;
/// limits.idle_timeout = std::time::Duration::from_secs(60);
/// assert_eq!(limits.max_connections, 512);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections over both sockets together. Keep it well below the process's
    /// open-file limit (`ulimit -n`), so that accepting never fails for lack of fds.
    pub max_connections: usize,
    /// Open connections of one Unix uid (from `SO_PEERCRED`), over both sockets: one user
    /// exhausting its share leaves the others served.
    pub max_connections_per_uid: usize,
    /// Time from accept to a complete HTTP/2 connection preface.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight that has sent nothing for this long is closed
    /// (gRPC clients reconnect on their next call). Open streams (FetchX509SVID, SDS) are
    /// calls in flight and keep their connection.
    pub idle_timeout: Duration,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS on both sockets.
    pub max_concurrent_streams: u32,
    /// Calls in flight of one Unix uid over all its connections and both sockets (open
    /// streams count until they end): bounds what one user's partial requests can make the
    /// agent buffer to this times the message limit.
    pub max_calls_per_uid: usize,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE on both sockets, also enforced by the Workload
    /// API's `:authority` rewriter on the decoded header list.
    pub max_header_list_size: u32,
    /// Largest Workload API request message (tonic's default is 4 MiB; the largest
    /// legitimate one, FetchJWTSVID with every audience at its maximum, is about 8 KiB).
    pub max_request_size: usize,
    /// Largest SDS request message. Envoy's first DiscoveryRequest of a stream carries its
    /// node with the list of every built-in extension: between 32 and 64 KiB for Envoy 1.40
    /// (measured), so this leaves room for Envoys to come.
    pub max_sds_request_size: usize,
    /// Audiences in one FetchJWTSVID request.
    pub max_audiences: usize,
    /// Bytes of one audience (FetchJWTSVID and ValidateJWTSVID).
    pub max_audience_len: usize,
    /// Distinct resource names in one SDS request (duplicates are merged first).
    pub max_sds_resource_names: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_connections_per_uid: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_concurrent_streams: 100,
            max_calls_per_uid: 256,
            max_header_list_size: 16 * 1024,
            max_request_size: 64 * 1024,
            max_sds_request_size: 256 * 1024,
            max_audiences: 16,
            max_audience_len: 512,
            max_sds_resource_names: 32,
        }
    }
}

/// HTTP/2 receive window (connection and stream) of both servers: the protocol's default,
/// ample for requests of at most [`Limits::max_request_size`].
pub(crate) const RECEIVE_WINDOW: u32 = 64 * 1024;

/// Streams the client may make the server reset (protocol errors) before a GOAWAY: hyper's
/// default, which tonic would otherwise turn off.
pub(crate) const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Client-reset streams not yet accepted (the rapid-reset bound): h2's default.
pub(crate) const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Entries of the ValidateJWTSVID validator cache (one per audience).
pub(crate) const VALIDATOR_CACHE_ENTRIES: usize = 256;
