//! Issue 15: `bookstore-server --metrics-listen` serves Prometheus text that Python's
//! `prometheus_client.parser` (the reference parser) reads, fetched with `curl`, and its
//! numbers are the events the test caused: 18 calls with a token allowed, one without it
//! denied as `Jwt is missing`, an intruder's handshake refused by the authorizer, the
//! server's own certificate expiry to the second.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use bookstore::{AUDIENCE, MeshPki, MeshPolicy, SERVER_ID};
use serde_json::Value;
use support::{ChildGuard, bin, free_addr, python, run, s, server_args};

/// `curl` of the metrics endpoint, parsed by prometheus_client.
fn scrape(addr: &str) -> Value {
    let curl = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("curl");
    assert!(
        curl.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/parse_metrics.py");
    let mut parser = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut parser.stdin.take().unwrap(), &curl.stdout).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&curl.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the samples of family `name` (a counter's samples are `<name>_total`) whose
/// labels include `labels`, summed over the rest.
fn value(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["family"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn metrics_listen_serves_prometheus_text_with_the_events_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pki = MeshPki::create(dir.path(), &MeshPolicy::bookstore()).unwrap();
    let listen = free_addr().to_string();
    let metrics = free_addr().to_string();
    let mut server = ChildGuard::spawn(
        "bookstore-server",
        Command::new(bin("bookstore-server"))
            .args(server_args(&pki, &listen, true))
            .args(["--metrics-listen", &metrics]),
    );
    server.wait_for_line("listening on");

    let client = |svid: &bookstore::SvidFiles, extra: &[&str]| {
        let mut args = vec![
            "--target",
            &listen,
            "--ca",
            s(pki.bundle_path()),
            "--cert",
            s(&svid.cert),
            "--key",
            s(&svid.key),
        ];
        args.extend_from_slice(extra);
        run("bookstore-client", &args)
    };
    let token = dir.path().join("token");
    std::fs::write(&token, pki.token(AUDIENCE).unwrap()).unwrap();
    let out = client(pki.client(), &["--token-file", s(&token), "-q"]);
    assert!(out.status.success(), "{out:?}");
    let out = client(pki.client(), &["--calls", "1", "-q"]);
    assert!(!out.status.success(), "no token: refused");
    let out = client(
        pki.intruder(),
        &["--token-file", s(&token), "--calls", "1", "-q"],
    );
    assert!(!out.status.success(), "the intruder: refused");

    let parsed = scrape(&metrics);
    let families = &parsed["families"];
    assert_eq!(
        families["grpc_server_tls_handshakes"]["type"], "counter",
        "{families}"
    );
    assert!(
        families["grpc_server_tls_handshakes"]["documentation"]
            .as_str()
            .unwrap()
            .contains("TLS handshakes"),
        "described: {families}"
    );
    let handshakes = |result: &str| {
        value(
            &parsed,
            "grpc_server_tls_handshakes",
            &[("grpc_tls_handshake_result", result)],
        )
    };
    assert!(handshakes("success") >= 2.0, "{parsed}");
    assert!(handshakes("authorizer_denied") >= 1.0, "{parsed}");
    assert_eq!(value(&parsed, "mtls_jwt_allowed", &[]), 18.0, "{parsed}");
    assert_eq!(
        value(&parsed, "mtls_jwt_denied", &[("reason", "Jwt is missing")]),
        1.0,
        "{parsed}"
    );
    assert_eq!(
        value(
            &parsed,
            "mtls_jwt_jwks_keys",
            &[("state", "loaded"), ("mtls_jwt_jwks", s(pki.jwks_path()))]
        ),
        1.0,
        "{parsed}"
    );
    // gRFC A66: every call the server answered, as a Prometheus histogram with A66's
    // buckets; the call without a token is UNAUTHENTICATED.
    assert_eq!(
        families["grpc_server_call_duration"]["type"], "histogram",
        "{families}"
    );
    let calls = |status: Option<&str>| -> f64 {
        parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == "grpc_server_call_duration_count")
            .filter(|s| status.is_none_or(|status| s["labels"]["grpc_status"] == status))
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    };
    assert_eq!(calls(Some("UNAUTHENTICATED")), 1.0, "{parsed}");
    assert!(
        calls(None) >= 19.0,
        "18 allowed calls and the refused one: {parsed}"
    );
    let methods: Vec<&str> = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "grpc_server_call_duration_count")
        .map(|s| s["labels"]["grpc_method"].as_str().unwrap())
        .collect();
    assert!(
        methods
            .iter()
            .all(|m| m.starts_with("/endpoints.examples.bookstore.Bookstore/")),
        "{methods:?}"
    );
    let buckets = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "grpc_server_call_duration_bucket")
        .filter(|s| s["labels"]["grpc_status"] == "UNAUTHENTICATED")
        .count();
    assert_eq!(
        buckets,
        mtls_tonic::metrics::LATENCY_BUCKETS.len() + 1,
        "A66's buckets and +Inf"
    );
    let pem = std::fs::read_to_string(&pki.server().cert).unwrap();
    let key = std::fs::read_to_string(&pki.server().key).unwrap();
    let ours = mtls_core::Identity::from_pem(pem, key).unwrap();
    let not_after = ours
        .not_after()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(
        value(
            &parsed,
            "mtls_certificate_expiration_timestamp_seconds",
            &[
                ("mtls_certificate_kind", "identity"),
                ("mtls_certificate_name", SERVER_ID)
            ]
        ),
        not_after,
        "{parsed}"
    );
    drop(server);
}
