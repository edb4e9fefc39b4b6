//! Client side: the mTLS connector and the bearer-token interceptor.

mod bearer;
mod connector;

pub use bearer::{BearerInterceptor, FileToken, StaticToken, TokenSource};
pub use connector::MtlsConnector;

pub(crate) use connector::parse_server_name as parse_server_name_pub;
