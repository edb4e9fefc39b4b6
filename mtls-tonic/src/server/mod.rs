//! Server side: an mTLS incoming stream for tonic, the server's limits, and access to the
//! verified peer.

mod admission;
mod guard;
mod incoming;
mod log_limit;
mod options;
mod peer;
mod stream;
mod tonic_info;

pub use incoming::MtlsIncoming;
pub use options::ServerOptions;
pub use peer::PeerIdentityExt;
pub use stream::{MtlsConnectInfo, MtlsStream};
pub use tonic_info::{TonicConnectInfoLayer, TonicConnectInfoService};

pub(crate) use incoming::handshake_reason as handshake_reason_pub;
pub(crate) use log_limit::LogLimiter;
