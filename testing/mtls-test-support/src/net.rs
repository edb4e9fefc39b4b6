//! Loopback helpers and files in a test's temp dir.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A free port on 127.0.0.1 (bound and released): free *now* only, so not for a port
/// another process binds later (anything else may take it in between); give Envoy port 0
/// and read its ports with [`envoy_ports`](crate::envoy_ports) instead.
///
/// ```
/// assert_ne!(mtls_test_support::free_port(), 0);
/// ```
pub fn free_port() -> u16 {
    free_addr().port()
}

/// A free address on 127.0.0.1 (bound and released).
///
/// ```
/// assert!(mtls_test_support::free_addr().ip().is_loopback());
/// ```
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A plain HTTP/1.1 GET on loopback (an Envoy admin port), returning the body; 5 s bound
/// on each read.
///
/// ```
/// use std::io::{BufRead, Write};
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap().to_string();
/// let server = std::thread::spawn(move || {
///     let (mut s, _) = listener.accept().unwrap();
///     let mut request = std::io::BufReader::new(s.try_clone().unwrap());
///     let mut line = String::new();
///     while line != "\r\n" {
///         line.clear();
///         request.read_line(&mut line).unwrap();
///     }
///     s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nLIVE\n").unwrap();
/// });
/// assert_eq!(mtls_test_support::http_get(&addr, "/ready"), "LIVE\n");
/// server.join().unwrap();
/// ```
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out)
}

/// Writes `contents` (a PEM, a config) to `dir/name` and returns the path as a string,
/// ready for a command line.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = mtls_test_support::put(dir.path(), "key.pem", "secret");
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
/// ```
pub fn put(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str()
        .unwrap_or_else(|| panic!("expected a UTF-8 path, got {}", path.display()))
        .to_owned()
}

/// A command line's words, split at white space: `openssl(&words("req -new -nodes"))`
/// instead of an array of string literals rustfmt stacks one per line (write arguments
/// holding spaces with [`words_and`]).
///
/// ```
/// assert_eq!(mtls_test_support::words("x509 -noout  -text"), ["x509", "-noout", "-text"]);
/// ```
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// [`words`] of `line`, then `rest` (arguments that are not literals, or hold spaces).
///
/// ```
/// let path = String::from("/tmp/a b.pem");
/// assert_eq!(mtls_test_support::words_and("x509 -in", &[&path]), ["x509", "-in", "/tmp/a b.pem"]);
/// ```
pub fn words_and<'a>(line: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = words(line);
    args.extend_from_slice(rest);
    args
}
