//! The load-balanced mTLS channel ([`BalancedChannel`], built with a
//! [`BalancedChannelBuilder`]): endpoints from DNS, a static list or a discovery source.
//!
//! ```no_run
//! # fn run(config: mtls_core::rustls::ClientConfig) -> Result<(), mtls_tonic::Error> {
//! use mtls_tonic::{balance::BalancedChannel, client::MtlsConnector};
//! let channel = BalancedChannel::builder(
//!     "bookstore.default.svc.cluster.local:50051",
//!     MtlsConnector::new(config),
//! )
//! .build()?;
//! # let _ = channel; Ok(()) }
//! ```

mod backoff;
mod builder;
mod call;
mod channel;
mod connection;
mod ctx;
mod dial;
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
pub use builder::{BalancedChannelBuilder, DnsTimeout, LoadPolicy, Refresh};
pub use call::{ResponseFuture, WaitForReady};
pub use channel::BalancedChannel;
pub use dial::Connector;
pub use endpoint::ServedBy;
pub use info::{ChannelState, EndpointInfo, EndpointState, ResolutionState};
pub use outlier::{FailurePercentage, OutlierDetection};
pub use retry::{MethodConfig, RetryPolicy, RetryThrottling, ServiceConfig};
pub use source::{
    BalancedEndpoint, Discovery, EndpointChange, EndpointReceiver, EndpointSender, endpoint_channel,
};
