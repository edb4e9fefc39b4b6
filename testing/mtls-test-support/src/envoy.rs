//! The ports an Envoy started with port 0 for its admin and listeners was given by the
//! kernel: nothing picks a port before Envoy binds it, so no other test can take it in
//! between.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ChildGuard;

/// Where a running Envoy listens: its admin address and each static listener's bound
/// address, by listener name.
#[derive(Debug, Clone)]
pub struct EnvoyPorts {
    /// The admin address, `127.0.0.1:PORT` (as `--admin-address-path` writes it).
    pub admin: String,
    /// Each listener's bound address (`GET /listeners?format=json`), by name.
    pub listeners: BTreeMap<String, SocketAddr>,
}

impl EnvoyPorts {
    /// The bound address of the listener `name`; panics naming the listeners there are.
    ///
    /// ```
    /// let ports = mtls_test_support::EnvoyPorts {
    ///     admin: "127.0.0.1:9901".into(),
    ///     listeners: [("mtls".to_owned(), "127.0.0.1:4000".parse().unwrap())].into(),
    /// };
    /// assert_eq!(ports.listener("mtls").port(), 4000);
    /// ```
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self.listeners.get(name).unwrap_or_else(|| {
            panic!(
                "expected an Envoy listener named {name:?}, found {:?}",
                self.listeners.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// Waits up to `within` for `envoy` (started with `--admin-address-path admin_path`, its
/// admin and listeners on port 0) to write its admin address and list every listener in
/// `names` with a bound port; panics if Envoy exits first (with `log`, if given, in the
/// message) or the time runs out (naming what it saw).
///
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// let dir = tempfile::tempdir().unwrap();
/// let admin_path = dir.path().join("admin.txt");
/// let mut envoy = mtls_test_support::ChildGuard::spawn(
///     "envoy",
///     Command::new("envoy")
///         .args(["-c", "envoy.json", "--disable-hot-restart", "--admin-address-path"])
///         .arg(&admin_path),
/// );
/// let ports = mtls_test_support::envoy_ports(
///     &mut envoy,
///     &admin_path,
///     None,
///     &["mtls"],
///     Duration::from_secs(30),
/// );
/// assert_ne!(ports.listener("mtls").port(), 0);
/// ```
pub fn envoy_ports(
    envoy: &mut ChildGuard,
    admin_path: &Path,
    log: Option<&Path>,
    names: &[&str],
    within: Duration,
) -> EnvoyPorts {
    let deadline = Instant::now() + within;
    let mut seen = String::from("no admin address yet");
    loop {
        if let Some(status) = envoy.child.try_wait().unwrap() {
            let log = log
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .unwrap_or_default();
            panic!(
                "expected {} to serve its admin and listeners {names:?}, it exited with {status}: {log}",
                envoy.name
            );
        }
        if let Some(admin) = std::fs::read_to_string(admin_path)
            .ok()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
        {
            match get(&admin, "/listeners?format=json") {
                Ok(body) => {
                    let listeners = parse_listeners(&body);
                    if names.iter().all(|n| listeners.contains_key(*n)) {
                        return EnvoyPorts { admin, listeners };
                    }
                    seen = format!("admin {admin}, /listeners: {body}");
                }
                Err(e) => seen = format!("admin {admin}, /listeners: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "expected {} to list the listeners {names:?} with bound ports within {within:?}; saw {seen}",
            envoy.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bound address of each listener (by name) of the Envoy whose admin is at `admin`
/// (`GET /listeners?format=json`), for an Envoy already known to be ready (e.g. its
/// `/ready` answered); panics if the admin does not answer.
///
/// ```no_run
/// let listeners = mtls_test_support::envoy_listeners("127.0.0.1:9901");
/// assert_ne!(listeners["handshake"].port(), 0);
/// ```
pub fn envoy_listeners(admin: &str) -> BTreeMap<String, SocketAddr> {
    let body = get(admin, "/listeners?format=json").unwrap_or_else(|e| {
        panic!("expected Envoy's admin at {admin} to answer /listeners, got {e}")
    });
    parse_listeners(&body)
}

/// The listeners with a bound (non-zero) port in a `/listeners?format=json` body.
fn parse_listeners(body: &str) -> BTreeMap<String, SocketAddr> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return BTreeMap::new();
    };
    let statuses = json["listener_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    statuses
        .iter()
        .filter_map(|l| {
            let name = l["name"].as_str()?;
            let socket = &l["local_address"]["socket_address"];
            let ip: std::net::IpAddr = socket["address"].as_str()?.parse().ok()?;
            let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
            (port != 0).then(|| (name.to_owned(), SocketAddr::new(ip, port)))
        })
        .collect()
}

/// A GET on the admin that reports failure instead of panicking (Envoy may not be
/// answering yet); returns the body, de-chunked.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return Ok(out);
    };
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        Ok(dechunk(body))
    } else {
        Ok(body.to_owned())
    }
}

/// The payload of a `Transfer-Encoding: chunked` body (what there is of it, if cut short).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_listeners_are_read_and_unbound_ones_left_out() {
        let body = r#"{"listener_statuses":[
            {"name":"a","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41971}}},
            {"name":"b","local_address":{"socket_address":{"address":"127.0.0.1","port_value":0}}}]}"#;
        let got = parse_listeners(body);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got["a"], "127.0.0.1:41971".parse().unwrap());
        assert!(parse_listeners("not json").is_empty());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("3\r\n{\"a\r\n4\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n"),
            "{\"a\": 1}"
        );
    }
}
