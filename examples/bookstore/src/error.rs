//! The crate's one error type.

use std::{io, net::SocketAddr, path::PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while setting up or running the bookstore and its mesh.
///
/// Messages name the file, address or value involved, so a startup failure explains itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    File {
        /// What the file is for ("certificate chain (--cert)", "JWKS (--jwks)", ...).
        what: String,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (e.g. "address already in use").
        reason: String,
    },
    /// A setting is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Certificates, keys or trust could not be loaded or used.
    #[error("{context}: {source}")]
    Tls {
        /// What was being loaded.
        context: String,
        /// The mtls-core error.
        source: mtls_core::Error,
    },
    /// Issuing certificates failed.
    #[error("issuing {what}: {source}")]
    Pki {
        /// What was being issued.
        what: String,
        /// The mtls-certs error.
        source: mtls_certs::Error,
    },
    /// A JWKS, key or token problem.
    #[error("{context}: {source}")]
    Jwt {
        /// What was being done.
        context: String,
        /// The mtls-jwt error.
        source: mtls_jwt::Error,
    },
    /// An mtls-tonic setup error (policies, channels).
    #[error("{context}: {source}")]
    Tonic {
        /// What was being set up.
        context: String,
        /// The mtls-tonic error.
        source: mtls_tonic::Error,
    },
    /// The identity agent failed (start-up, rotation).
    #[error("{context}: {source}")]
    Agent {
        /// What was being done.
        context: String,
        /// The mtls-agent error.
        source: mtls_agent::Error,
    },
    /// The in-process DNS server failed.
    #[error("DNS: {0}")]
    Dns(String),
    /// Envoy could not be started or did not become ready.
    #[error("Envoy {name}: {reason}")]
    Envoy {
        /// Which Envoy (e.g. "client sidecar").
        name: String,
        /// What happened.
        reason: String,
    },
    /// A gRPC server stopped with an error.
    #[error("gRPC server on {addr}: {reason}")]
    Serve {
        /// Its address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// Another I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn file(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        Self::File {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn agent(context: impl Into<String>, source: mtls_agent::Error) -> Self {
        Self::Agent {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn tls(context: impl Into<String>, source: mtls_core::Error) -> Self {
        Self::Tls {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn jwt(context: impl Into<String>, source: mtls_jwt::Error) -> Self {
        Self::Jwt {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn tonic(context: impl Into<String>, source: mtls_tonic::Error) -> Self {
        Self::Tonic {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn pki(what: impl Into<String>, source: mtls_certs::Error) -> Self {
        Self::Pki {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn envoy(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Envoy {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
