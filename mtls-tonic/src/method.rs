//! gRPC method patterns, shared by the authorization policy and the JWT rules.

use std::{collections::HashMap, fmt, str::FromStr};

use crate::Error;

/// A gRPC method pattern: one method (`/pkg.Service/Method`) or every method of a service
/// (`pkg.Service/*`); the leading `/` is optional. Parsed once, the same way for
/// [`MethodPolicy`](crate::authz::MethodPolicy) and [`JwtRules`](crate::jwt::JwtRules).
///
/// ```
/// use mtls_tonic::MethodPattern;
/// let health: MethodPattern = "grpc.health.v1.Health/*".parse()?;
/// assert!(health.matches("/grpc.health.v1.Health/Check"));
/// assert!(!health.matches("/bookstore.Bookstore/GetBook"));
/// let one: MethodPattern = "bookstore.Bookstore/GetBook".parse()?;
/// assert_eq!(one.to_string(), "/bookstore.Bookstore/GetBook");
/// assert!("/bookstore.Bookstore/Get*".parse::<MethodPattern>().is_err());
/// # Ok::<(), mtls_tonic::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MethodPattern {
    /// One method, by its full path `/pkg.Service/Method`.
    Method(String),
    /// Every method of a service, by its name `pkg.Service`.
    Service(String),
}

impl MethodPattern {
    /// Whether the method `path` (`/pkg.Service/Method`) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Method(exact) => exact == path,
            Self::Service(service) => service_of(path) == Some(service.as_str()),
        }
    }
}

impl FromStr for MethodPattern {
    type Err = Error;

    fn from_str(pattern: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidMethodPattern {
            presented: pattern.to_owned(),
        };
        let trimmed = pattern.strip_prefix('/').unwrap_or(pattern);
        let (service, method) = trimmed.split_once('/').ok_or_else(invalid)?;
        let valid = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains('*');
        match (valid(service), method) {
            (true, "*") => Ok(Self::Service(service.to_owned())),
            (true, m) if valid(m) => Ok(Self::Method(format!("/{service}/{m}"))),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method(path) => f.write_str(path),
            Self::Service(service) => write!(f, "/{service}/*"),
        }
    }
}

/// The service of a method path `/pkg.Service/Method`.
fn service_of(path: &str) -> Option<&str> {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(s, _)| s)
}

/// Values keyed by method pattern; a lookup prefers the exact method over its service.
#[derive(Clone, Debug)]
pub(crate) struct MethodTable<T> {
    exact: HashMap<String, T>,
    services: HashMap<String, T>,
}

impl<T> Default for MethodTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            services: HashMap::new(),
        }
    }
}

impl<T> MethodTable<T> {
    /// Sets the value for `pattern` (replacing an earlier one for the same pattern).
    pub(crate) fn insert(&mut self, pattern: MethodPattern, value: T) {
        match pattern {
            MethodPattern::Method(path) => self.exact.insert(path, value),
            MethodPattern::Service(service) => self.services.insert(service, value),
        };
    }

    /// The value of the most specific pattern matching `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&T> {
        self.exact
            .get(path)
            .or_else(|| service_of(path).and_then(|s| self.services.get(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_methods_and_services_and_refuses_the_rest() {
        assert_eq!(
            "/pkg.S/Op".parse::<MethodPattern>().unwrap(),
            MethodPattern::Method("/pkg.S/Op".into())
        );
        assert_eq!(
            "pkg.S/Op".parse::<MethodPattern>().unwrap(),
            MethodPattern::Method("/pkg.S/Op".into())
        );
        assert_eq!(
            "/pkg.S/*".parse::<MethodPattern>().unwrap(),
            MethodPattern::Service("pkg.S".into())
        );
        for bad in ["", "/", "pkg.S", "/pkg.S/", "*/x", "/a/b/c", "/pkg.S/Op*"] {
            let err = bad.parse::<MethodPattern>().unwrap_err();
            assert!(
                matches!(&err, Error::InvalidMethodPattern { presented } if presented == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_exact_method_wins_over_its_service() {
        let mut table = MethodTable::default();
        table.insert("pkg.S/*".parse().unwrap(), "service");
        table.insert("/pkg.S/Open".parse().unwrap(), "method");
        assert_eq!(table.get("/pkg.S/Open"), Some(&"method"));
        assert_eq!(table.get("/pkg.S/Other"), Some(&"service"));
        assert_eq!(table.get("/other.S/Open"), None);
        assert_eq!(table.get("pkg.S/Open"), None, "a path starts with /");
    }
}
