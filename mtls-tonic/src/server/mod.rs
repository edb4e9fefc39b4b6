//! Server side: an mTLS incoming stream for tonic ([`MtlsIncoming`]), the server's limits
//! ([`ServerOptions`]), and access to the verified peer ([`MtlsConnectInfo`],
//! [`PeerIdentityExt`], also at the crate root).
//!
//! ```no_run
//! # async fn run(config: mtls_core::rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use mtls_tonic::server::{MtlsIncoming, ServerOptions};
//! let options = ServerOptions::default();
//! let listener = options.bind("127.0.0.1:50051".parse()?)?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! options
//!     .server()
//!     .add_service(health)
//!     .serve_with_incoming(MtlsIncoming::configured(listener, config, options.clone()))
//!     .await?;
//! # Ok(()) }
//! ```

mod admission;
mod guard;
mod incoming;
mod log_limit;
mod options;
mod peer;
mod stream;
mod tonic_info;

pub use incoming::MtlsIncoming;
pub use options::{ConnectionAge, RateLimit, ServerOptions};
pub use peer::PeerIdentityExt;
pub use stream::{MtlsConnectInfo, MtlsStream};
pub use tonic_info::{TonicConnectInfoLayer, TonicConnectInfoService};

pub(crate) use incoming::handshake_reason as handshake_reason_pub;
pub(crate) use log_limit::LogLimiter;
