//! Shared helpers for mtls-jwt's integration tests: the project's Python (PyJWT peer), a
//! loopback JWKS server run as a child process, and tokens minted by PyJWT.
// Tests may panic on a missing tool or a broken fixture: that is the failure we want to see.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]
#![allow(unused_imports)] // the shared helpers re-exported here: each test uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mtls_test_support::ChildGuard;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

pub mod fault_server;

/// Python with PyJWT: `MTLS_PYTHON`, else the project venv (a failure when missing).
pub use mtls_test_support::peers::python;

/// A file next to this module.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support")).join(name)
}

/// Tokens and a JWKS minted by PyJWT (once per test binary).
pub struct PyTokens {
    pub jwks: Value,
    pub tokens: serde_json::Map<String, Value>,
}

impl PyTokens {
    pub fn get() -> &'static PyTokens {
        static TOKENS: OnceLock<PyTokens> = OnceLock::new();
        TOKENS.get_or_init(|| {
            let out = Command::new(python())
                .arg(script("mint_tokens.py"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mint_tokens.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            PyTokens {
                jwks: v["jwks"].clone(),
                tokens: v["tokens"].as_object().unwrap().clone(),
            }
        })
    }

    pub fn token(&self, name: &str) -> &str {
        self.tokens[name].as_str().unwrap()
    }
}

/// The Python JWKS server on 127.0.0.1 (see jwks_server.py for its controls).
pub struct JwksServer {
    pub port: u16,
    child: Option<ChildGuard>,
}

impl JwksServer {
    pub fn start(jwks: &str) -> JwksServer {
        let mut child = Command::new(python())
            .arg(script("jwks_server.py"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard {
            child,
            name: "jwks_server.py".to_owned(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the JWKS server did not print its port within 20 s");
        let server = JwksServer {
            port: line.trim().parse().unwrap(),
            child: Some(guard),
        };
        server.set_jwks(jwks);
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
    }

    pub fn set_jwks(&self, jwks: &str) {
        self.request("POST", "/control/jwks", jwks);
    }

    pub fn hits(&self) -> u64 {
        self.request("GET", "/control/hits", "")
            .trim()
            .parse()
            .unwrap()
    }

    pub fn down(&self) {
        self.request("POST", "/control/down", "");
    }

    pub fn stall_next(&self, seconds: u64) {
        self.request("POST", &format!("/control/stall?seconds={seconds}"), "");
    }

    /// Kills the server process.
    pub fn kill(&mut self) {
        self.child.take();
    }
}
