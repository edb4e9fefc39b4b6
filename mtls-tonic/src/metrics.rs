//! What mtls-tonic records through the `metrics` facade (feature `metrics`): one named
//! function per event, called from one line where the event happens. Without the feature
//! every function is an empty `#[inline]` body. Names and the facade choice: see
//! `mtls_core::metrics` and the repository's METRICS.md.

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
