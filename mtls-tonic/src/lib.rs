//! mtls-tonic (docs below).
#![forbid(unsafe_code)]

mod authz;
mod balance;
mod client;
mod error;
mod jwt;
mod server;

pub use authz::{
    AuthzError, AuthzLayer, AuthzService, MethodPolicy, ResponseFuture as AuthzResponseFuture,
};
pub use balance::{
    Backoff, BalancedChannel, BalancedChannelBuilder, EndpointInfo, EndpointState, LoadPolicy,
    ResolutionState, ResponseFuture as BalancedResponseFuture,
};
pub use client::{BearerInterceptor, FileToken, MtlsConnector, StaticToken, TokenSource};
pub use error::{Error, Result};
pub use jwt::{
    JwtError, JwtLayer, JwtRules, JwtService, ResponseFuture as JwtResponseFuture, TokenValidator,
    bearer_token,
};
pub use server::{MtlsConnectInfo, MtlsIncoming, MtlsStream, PeerIdentityExt, ServerOptions};
