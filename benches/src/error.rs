//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while setting up or running a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading `/proc` or another file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("unexpected contents in {path}: expected {expected}, found {found:?}")]
    Proc {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// What was there (truncated).
        found: String,
    },
    /// A child process could not be started or did not become ready.
    #[error("process {role}: {reason}")]
    Child {
        /// The role of the process in the scenario (`replica-1`, `envoy-client`, ...).
        role: String,
        /// What happened.
        reason: String,
    },
    /// Envoy is required but not installed.
    #[error(
        "Envoy not found at {path} (run ./scripts/install-test-tools.sh, or pass --envoy PATH \
         or set MTLS_ENVOY); needed by {scenario}"
    )]
    EnvoyMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// What needs it ("the envoy scenario").
        scenario: String,
    },
    /// Certificates or TLS configuration could not be built.
    #[error("PKI: {0}")]
    Pki(String),
    /// Any other I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A command-line value could not be parsed.
    #[error("invalid {what}: expected {expected}, found {found:?}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// What was given.
        found: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
