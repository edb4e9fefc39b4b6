//! `host:port` targets.

use std::net::IpAddr;

use crate::{Error, Result};

/// A parsed balanced-channel target: `host:port`, `dns:///host:port` or `[v6]:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The name to look up: as given, so a trailing dot keeps it absolute and a short name
    /// gets the resolver's search domains (Kubernetes `svc` names rely on them).
    pub(crate) dns_name: String,
    /// Set when the host is an IP literal: no DNS, one endpoint.
    pub(crate) ip: Option<IpAddr>,
}

const EXPECTED: &str = "host:port, dns:///host:port or [ipv6]:port";

impl Target {
    pub(crate) fn parse(target: &str) -> Result<Self> {
        let invalid = || Error::InvalidTarget {
            target: target.to_owned(),
            expected: EXPECTED,
        };
        let rest = target.strip_prefix("dns:///").unwrap_or(target);
        let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => (inner, true),
            None => (host, false),
        };
        let bad_v6 = host.contains(':') && (!bracketed || host.parse::<IpAddr>().is_err());
        if host.is_empty() || host.contains('/') || bad_v6 {
            return Err(invalid());
        }
        let ip = host.parse::<IpAddr>().ok();
        Ok(Self {
            host: host.trim_end_matches('.').to_owned(),
            dns_name: host.to_owned(),
            port,
            ip,
        })
    }

    /// `host:port` for the HTTP/2 `:authority`.
    pub(crate) fn authority(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let t = Target::parse("bookstore.default.svc:50051").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.ip),
            ("bookstore.default.svc", 50051, None)
        );
        let t = Target::parse("dns:///bookstore:1").unwrap();
        assert_eq!(t.host, "bookstore");
        let t = Target::parse("[::1]:8080").unwrap();
        assert_eq!(t.ip, Some("::1".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:8080");
        let t = Target::parse("127.0.0.2:9").unwrap();
        assert!(t.ip.is_some());
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "bookstore",
            "bookstore:",
            "bookstore:99999",
            ":80",
            "a/b:80",
            "::1:80",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidTarget { target, .. } if target == bad),
                "{bad}: {err}"
            );
        }
    }
}
