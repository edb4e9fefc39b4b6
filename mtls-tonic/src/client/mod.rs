//! Client side: the mTLS connector ([`MtlsConnector`]) and the bearer-token interceptor
//! ([`BearerInterceptor`] over a [`TokenSource`]).
//!
//! ```
//! use mtls_tonic::client::{BearerInterceptor, StaticToken};
//! // tonic's `Client::with_interceptor(channel, bearer)` adds `authorization: Bearer …`.
//! let _bearer = BearerInterceptor::new(StaticToken::new("eyJ..."));
//! ```

mod bearer;
mod connector;
#[cfg(feature = "workload-api")]
mod workload_jwt;

pub use bearer::{BearerInterceptor, FileToken, StaticToken, TokenSource};
pub use connector::MtlsConnector;
#[cfg(feature = "workload-api")]
pub use workload_jwt::{WorkloadJwtToken, WorkloadJwtTokenBuilder};

#[cfg(feature = "balance")]
pub(crate) use connector::parse_server_name as parse_server_name_pub;
