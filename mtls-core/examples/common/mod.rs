//! What the echo client and server take and do the same way: the TLS options, and logging
//! to stderr. Not an example of its own (`cargo` builds only `examples/*.rs`).

use std::path::PathBuf;

/// Our certificate and key, and the CA bundle the peer's certificate must chain to.
#[derive(clap::Args, Debug)]
pub(crate) struct PemFiles {
    /// CA bundle (PEM) the peer's certificate must chain to.
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// Our certificate chain (PEM, leaf first).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// Our private key (PEM).
    #[arg(long)]
    pub(crate) key: PathBuf,
}

/// TLS options both examples take.
#[derive(clap::Args, Debug)]
pub(crate) struct TlsArgs {
    /// Also allow TLS 1.2.
    #[arg(long)]
    pub(crate) tls12: bool,
    /// TLS policy preset: default, tls13-only, classical, nist.
    #[arg(long, default_value = "default")]
    pub(crate) tls_policy: mtls_core::TlsPolicy,
    /// Log TLS secrets to $SSLKEYLOGFILE (only if that is set too).
    #[arg(long)]
    pub(crate) keylog: bool,
}

/// Sets `$tls` (a [`TlsArgs`]) on `$builder`, a `ClientConfigBuilder` or a
/// `ServerConfigBuilder` (the setters they share): the policy, TLS 1.2, key logging.
macro_rules! with_tls_args {
    ($builder:expr, $tls:expr) => {{
        let tls: &$crate::common::TlsArgs = $tls;
        let mut builder = $builder.tls_policy(tls.tls_policy.clone());
        if tls.tls12 {
            builder = builder.allow_tls12();
        }
        if tls.keylog {
            builder = builder.key_log_from_env();
        }
        builder
    }};
}
pub(crate) use with_tls_args;

/// Starts an example: logging to stderr at `RUST_LOG` (default `warn`), then its command
/// line parsed into `A`.
pub(crate) fn start<A: clap::Parser>() -> A {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    A::parse()
}
