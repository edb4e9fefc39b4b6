//! The load-balanced mTLS channel: endpoints from DNS, a static list or a discovery source.

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
mod limit;
mod outlier;
mod retry;
mod round_robin;
mod source;
mod target;

pub use backoff::Backoff;
pub use builder::{BalancedChannelBuilder, LoadPolicy};
pub use call::{ResponseFuture, WaitForReady};
pub use channel::BalancedChannel;
pub use endpoint::ServedBy;
pub use info::{ChannelState, EndpointInfo, EndpointState, ResolutionState};
pub use outlier::OutlierDetection;
pub use retry::{MethodConfig, RetryPolicy, RetryThrottling, ServiceConfig};
pub use source::{
    BalancedEndpoint, Discovery, EndpointChange, EndpointReceiver, EndpointSender, endpoint_channel,
};
