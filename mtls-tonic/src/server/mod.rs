//! Server side: an mTLS incoming stream for tonic and access to the verified peer.

mod incoming;
mod peer;
mod stream;

pub use incoming::{MtlsIncoming, ServerOptions};
pub use peer::PeerIdentityExt;
pub use stream::{MtlsConnectInfo, MtlsStream};

pub(crate) use incoming::handshake_reason as handshake_reason_pub;
