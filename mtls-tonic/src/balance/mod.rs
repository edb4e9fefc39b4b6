//! The DNS load-balanced mTLS channel.

mod backoff;
mod builder;
mod channel;
mod connection;
mod ctx;
mod discovery;
mod endpoint;
mod gate;
mod health;
mod info;
mod round_robin;
mod target;

pub use backoff::Backoff;
pub use builder::{BalancedChannelBuilder, LoadPolicy};
pub use channel::{BalancedChannel, ResponseFuture};
pub use info::{EndpointInfo, EndpointState, ResolutionState};
