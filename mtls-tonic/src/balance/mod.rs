//! The DNS load-balanced mTLS channel.

mod backoff;
mod builder;
mod call;
mod channel;
mod connection;
mod ctx;
mod discovery;
mod endpoint;
mod gate;
mod health;
mod info;
mod outlier;
mod retry;
mod round_robin;
mod target;

pub use backoff::Backoff;
pub use builder::{BalancedChannelBuilder, LoadPolicy};
pub use call::{ResponseFuture, WaitForReady};
pub use channel::BalancedChannel;
pub use info::{ChannelState, EndpointInfo, EndpointState, ResolutionState};
pub use outlier::OutlierDetection;
pub use retry::{MethodConfig, RetryPolicy, RetryThrottling, ServiceConfig};
