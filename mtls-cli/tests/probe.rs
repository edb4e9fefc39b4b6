//! `mtls probe` against real servers: `openssl s_server` (accepted, wrong SPIFFE ID, expired
//! certificate, untrusted CA, client certificate required), a Python gRPC server on a
//! plaintext HTTP/2 port, Python's `http.server` (not TLS) and a closed port — one readable
//! answer and the documented exit code each. Every child is killed by PID when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::Command;

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId, Validity};
use mtls_test_support::ChildGuard;

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

/// Starts `cmd` (stdin held open: `openssl s_server` quits at end of input) and waits
/// (bounded) for a stdout line with `needle`; returns it.
fn start(cmd: &mut Command, needle: &str) -> (ChildGuard, String) {
    let mut guard = ChildGuard::spawn_with_stdin(needle, cmd);
    let line = guard.wait_for_line(needle);
    (guard, line)
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = CertificateAuthority::new_root(&CaParams::new("probe root")).unwrap();
        let other = CertificateAuthority::new_root(&CaParams::new("other root")).unwrap();
        std::fs::write(dir.path().join("ca.pem"), root.cert_pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.cert_pem()).unwrap();
        let write = |name: &str, params: &LeafParams| {
            let leaf = root.issue(params).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), leaf.chain_pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}-key.pem")), leaf.key_pem()).unwrap();
        };
        write(
            "server",
            &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap()),
        );
        write(
            "client",
            &LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()),
        );
        let now = time::OffsetDateTime::now_utc();
        let mut expired = LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap());
        expired.validity = Validity::between(
            now - time::Duration::hours(3),
            now - time::Duration::hours(1),
        );
        write("expired", &expired);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `openssl s_server` presenting `cert`; `-Verify 1` when `require_client_cert`.
fn s_server(pki: &Pki, cert: &str, require_client_cert: bool) -> (ChildGuard, String) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-naccept",
        "10",
        "-cert",
    ])
    .arg(pki.path(&format!("{cert}.pem")))
    .arg("-key")
    .arg(pki.path(&format!("{cert}-key.pem")));
    if require_client_cert {
        cmd.args(["-Verify", "1", "-verify_return_error", "-CAfile"])
            .arg(pki.path("ca.pem"));
    }
    let (guard, line) = start(&mut cmd, "ACCEPT ");
    (guard, line.trim_start_matches("ACCEPT ").trim().to_owned())
}

struct Probe {
    code: i32,
    stdout: String,
}

fn probe(target: &str, ca: &Path, extra: &[&str]) -> Probe {
    let out = Command::new(env!("CARGO_BIN_EXE_mtls"))
        .args(["probe", target, "--timeout", "3s", "--ca"])
        .arg(ca)
        .args(extra)
        .env_remove("SSLKEYLOGFILE")
        .output()
        .unwrap();
    Probe {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
    }
}

fn json(p: &Probe) -> serde_json::Value {
    serde_json::from_str(&p.stdout).unwrap_or_else(|e| panic!("{e}: {}", p.stdout))
}

#[test]
fn tls_servers_accepted_refused_and_failed() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let (_server, addr) = s_server(&pki, "server", false);

    // Accepted: exit 0; what was negotiated (OpenSSL 3.0 has no ML-KEM: X25519, from our
    // first ClientHello) and what the server presented.
    let ok = probe(&addr, &ca, &["--spiffe-id", SERVER_ID, "--json"]);
    let v = json(&ok);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert_eq!(v["outcome"], "accepted");
    assert_eq!(v["negotiated"]["version"], "TLSv1.3");
    assert_eq!(v["negotiated"]["key_exchange_group"], "X25519");
    assert_eq!(v["negotiated"]["handshake_kind"], "full");
    assert_eq!(v["spiffe_id"], SERVER_ID);
    assert_eq!(v["chain"][0]["spiffe_id"], SERVER_ID);

    // A policy file; an impossible one is refused before any socket opens, naming the field.
    let policy = pki.path("classical.yaml");
    std::fs::write(&policy, "preset: classical\n").unwrap();
    let classical = probe(
        &addr,
        &ca,
        &[
            "--spiffe-id",
            SERVER_ID,
            "--json",
            "--tls-policy",
            policy.to_str().unwrap(),
        ],
    );
    assert_eq!(classical.code, 0, "{}", classical.stdout);
    assert_eq!(
        json(&classical)["negotiated"]["key_exchange_group"],
        "X25519"
    );
    let broken = pki.path("broken.yaml");
    std::fs::write(&broken, "groups: [X25519MLKEM768]\nmin_version: TLSv1_2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtls"))
        .args(["probe", "127.0.0.1:1", "--ca"])
        .arg(&ca)
        .arg("--tls-policy")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid TLS policy: groups:"), "{stderr}");

    // Wrong SPIFFE ID: exit 3, expected vs presented, and the chain is still shown.
    let wrong = probe(
        &addr,
        &ca,
        &["--spiffe-id", "spiffe://example.org/ns/prod/sa/billing"],
    );
    assert_eq!(wrong.code, 3, "{}", wrong.stdout);
    assert!(
        wrong.stdout.contains(&format!(
            "peer presented {SERVER_ID}; expected spiffe://example.org/ns/prod/sa/billing"
        )),
        "{}",
        wrong.stdout
    );
    assert!(
        wrong.stdout.contains(&format!("SPIFFE ID {SERVER_ID}")),
        "{}",
        wrong.stdout
    );
    assert!(
        wrong.stdout.contains("result     refused: "),
        "{}",
        wrong.stdout
    );

    // Untrusted CA: exit 3.
    let untrusted = probe(
        &addr,
        &pki.path("other-ca.pem"),
        &["--trust-domain", "example.org"],
    );
    assert_eq!(untrusted.code, 3, "{}", untrusted.stdout);
    assert!(
        untrusted.stdout.contains("does not chain"),
        "{}",
        untrusted.stdout
    );

    // A server that requires a client certificate: TLS failed (4) without one, accepted with.
    let (_mtls, mtls_addr) = s_server(&pki, "server", true);
    let no_cert = probe(&mtls_addr, &ca, &["--spiffe-id", SERVER_ID]);
    assert_eq!(no_cert.code, 4, "{}", no_cert.stdout);
    assert!(
        no_cert.stdout.contains("--cert/--key"),
        "{}",
        no_cert.stdout
    );
    let client = pki.path("client.pem");
    let key = pki.path("client-key.pem");
    let with_cert = probe(
        &mtls_addr,
        &ca,
        &[
            "--spiffe-id",
            SERVER_ID,
            "--cert",
            client.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(with_cert.code, 0, "{}", with_cert.stdout);
}

#[test]
fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let (_server, addr) = s_server(&pki, "expired", false);
    let p = probe(&addr, &pki.path("ca.pem"), &["--spiffe-id", SERVER_ID]);
    assert_eq!(p.code, 3, "{}", p.stdout);
    assert!(p.stdout.to_lowercase().contains("expired"), "{}", p.stdout);
    assert!(
        p.stdout.contains("(EXPIRED)"),
        "the chain shows it: {}",
        p.stdout
    );
}

#[test]
fn plaintext_http2_other_protocols_and_closed_ports() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let python = mtls_test_support::peers::python();

    // A gRPC server on a plaintext HTTP/2 port.
    let (_grpc, port) = start(
        Command::new(&python).args([
            "-c",
            "import grpc, time\nfrom concurrent import futures\n\
             s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))\n\
             print('port', s.add_insecure_port('127.0.0.1:0'), flush=True)\ns.start()\ntime.sleep(120)\n",
        ]),
        "port ",
    );
    let port = port.trim_start_matches("port ").trim().to_owned();
    let h2c = probe(&format!("127.0.0.1:{port}"), &ca, &["--json"]);
    assert_eq!(h2c.code, 5, "{}", h2c.stdout);
    let v = json(&h2c);
    assert_eq!(v["outcome"], "not_tls");
    assert!(
        v["reason"].as_str().unwrap().contains("plaintext HTTP/2"),
        "{v}"
    );

    // An HTTP/1 server (Python's http.server) is not TLS either.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = free.local_addr().unwrap().port();
    drop(free);
    let (_http, _) = start(
        Command::new(&python).args([
            "-u",
            "-c",
            &format!(
                "import http.server\nh = http.server.HTTPServer(('127.0.0.1', {http_port}), http.server.SimpleHTTPRequestHandler)\nprint('serving', flush=True)\nh.serve_forever()\n"
            ),
        ]),
        "serving",
    );
    let http = probe(&format!("127.0.0.1:{http_port}"), &ca, &[]);
    assert_eq!(http.code, 5, "{}", http.stdout);
    assert!(
        http.stdout.contains("result     not_tls: not TLS: "),
        "{}",
        http.stdout
    );

    // A closed port: unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let p = probe(&closed_addr, &ca, &[]);
    assert_eq!(p.code, 6, "{}", p.stdout);
    assert!(p.stdout.contains("Connection refused"), "{}", p.stdout);
}
