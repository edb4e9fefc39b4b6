//! Finding the token in a request: `authorization: Bearer <jwt>` or a configured header.

use http::{HeaderMap, HeaderName};

use crate::error::{Error, Result};

/// The token of an `Authorization` value `Bearer <jwt>` (scheme matched case-insensitively).
///
/// ```
/// assert_eq!(mtls_jwt::bearer_token("Bearer a.b.c"), Some("a.b.c"));
/// assert_eq!(mtls_jwt::bearer_token("bearer   a.b.c "), Some("a.b.c"));
/// assert_eq!(mtls_jwt::bearer_token("Basic dXNlcg=="), None);
/// assert_eq!(mtls_jwt::bearer_token("Bearer "), None);
/// ```
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Where a request carries its token.
///
/// ```
/// use mtls_jwt::TokenLocation;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "Bearer a.b.c".parse()?);
/// headers.insert("x-jwt", "d.e.f".parse()?);
/// assert_eq!(TokenLocation::Authorization.find(&headers)?, "a.b.c");
/// assert_eq!(TokenLocation::header("x-jwt")?.find(&headers)?, "d.e.f");
/// assert!(matches!(
///     TokenLocation::header("x-other")?.find(&headers),
///     Err(mtls_jwt::Error::Missing)
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenLocation {
    /// `authorization: Bearer <jwt>` (the default).
    #[default]
    Authorization,
    /// A header holding the token, optionally after a prefix (Envoy's `from_headers`).
    Header {
        /// The header's name.
        name: HeaderName,
        /// A prefix to strip (e.g. `"Bearer "`); the header must start with it.
        prefix: Option<String>,
    },
}

impl TokenLocation {
    /// A header holding the bare token.
    pub fn header(name: &str) -> Result<Self> {
        let name = HeaderName::try_from(name).map_err(|e| Error::Config {
            reason: format!("bad header name {name:?}: {e}"),
        })?;
        Ok(Self::Header { name, prefix: None })
    }

    /// The token in `headers`, or [`Error::Missing`]. Every header of the name is looked
    /// at, in order (as Envoy's `jwt_authn` does): the first `Bearer` value of the
    /// `authorization` headers, or the first value of the configured header that carries
    /// the prefix. This is the one extraction path: [`crate::Validator::find_token`], the
    /// mtls-tonic `JwtLayer` and the CLI all use it, with [`bearer_token`] as the one
    /// `Bearer` parser.
    pub fn find<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str> {
        let found = match self {
            Self::Authorization => headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(bearer_token),
            Self::Header { name, prefix } => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| match prefix {
                    Some(p) => v.strip_prefix(p.as_str()),
                    None => Some(v),
                })
                .map(str::trim)
                .find(|t| !t.is_empty()),
        };
        found.ok_or(Error::Missing)
    }
}
