//! mtls-tonic (docs below).
#![forbid(unsafe_code)]

mod balance;
mod client;
mod error;
mod server;

pub use balance::{
    Backoff, BalancedChannel, BalancedChannelBuilder, EndpointInfo, EndpointState, LoadPolicy,
    ResolutionState, ResponseFuture,
};
pub use client::{BearerInterceptor, FileToken, MtlsConnector, StaticToken, TokenSource};
pub use error::{Error, Result};
pub use server::{MtlsConnectInfo, MtlsIncoming, MtlsStream, PeerIdentityExt, ServerOptions};
