//! The DNS load-balanced mTLS channel.

mod backoff;
mod channel;
mod ctx;
mod discovery;
mod endpoint;
mod gate;
mod health;
mod info;
mod round_robin;
mod target;

pub use backoff::Backoff;
pub use channel::{BalancedChannel, BalancedChannelBuilder, LoadPolicy, ResponseFuture};
pub use info::{EndpointInfo, EndpointState, ResolutionState};
