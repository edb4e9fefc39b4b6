//! The crate's error type.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while configuring or starting the agent.
///
/// Refusals of a caller at run time are gRPC statuses, not this type: a missing
/// `workload.spiffe.io` header is INVALID_ARGUMENT, an unregistered caller PERMISSION_DENIED,
/// an unknown SDS secret name INVALID_ARGUMENT (which Envoy logs as a closed config stream).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket could not be read, written or bound.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done (e.g. "binding the Workload API socket").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A directory or socket path another local user could control, or a socket another
    /// process serves: the agent refuses to use it.
    #[error("{what} {path} {reason}")]
    InsecurePath {
        /// What the path is for (e.g. "state directory").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// The registration file is not valid.
    #[error("registration {path}: {reason}")]
    Registration {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// What is wrong, naming the entry and what was expected.
        reason: String,
    },
    /// A certificate or key operation failed.
    #[error("certificate authority: {0}")]
    Certs(#[from] mtls_certs::Error),
    /// A JWT key operation failed.
    #[error("JWT signing key: {0}")]
    Jwt(#[from] mtls_jwt::Error),
    /// An HTTP/2 peer sent what the agent refuses before any identity is known (a limit
    /// exceeded or a malformed frame); the connection is closed.
    #[error("refused HTTP/2 input: {reason}")]
    Http2 {
        /// The limit or rule violated, with the expected and the presented size.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}
