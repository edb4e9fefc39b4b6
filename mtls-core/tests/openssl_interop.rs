//! Interop with a peer nobody here wrote: `openssl s_client` against the `echo_server`
//! example, and the `echo_client` example against `openssl s_server -Verify 1`.
//! Every child is killed by PID (ChildGuard) and every wait is bounded.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use mtls_certs::{CertificateAuthority, LeafParams, SpiffeId};
use mtls_test_support::ChildGuard;
use support::{Pki, example_bin};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";
const WAIT: Duration = Duration::from_secs(15);

fn write_leaf(dir: &Path, name: &str, ca: &CertificateAuthority, params: &LeafParams) {
    let leaf = ca.issue(params).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), leaf.chain_pem()).unwrap();
    // openssl's -cert sends only the first certificate; intermediates go in -cert_chain.
    std::fs::write(
        dir.join(format!("{name}-intermediates.pem")),
        ca.chain_pem(),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), leaf.key_pem()).unwrap();
}

/// Forwards a child's stdout (or stderr) lines to a channel.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line satisfying `want`; returns it, or panics with what was seen.
fn expect_line(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line for {what}; saw {seen:#?}");
}

struct EchoServer {
    guard: ChildGuard,
    out: Receiver<String>,
    addr: String,
}

fn start_echo_server(dir: &Path, extra: &[&str]) -> EchoServer {
    let mut guard = ChildGuard::spawn_with_stdin(
        "echo_server",
        Command::new(example_bin("echo_server"))
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server-key.pem"))
            .args(["--listen", "127.0.0.1:0", "--allow-spiffe-id", CLIENT_ID])
            .args(extra),
    );
    let out = lines_of(guard.child.stdout.take().unwrap());
    let line = expect_line(&out, "listening", |l| l.starts_with("listening on "));
    let addr = line.trim_start_matches("listening on ").to_owned();
    EchoServer { guard, out, addr }
}

/// Runs `openssl s_client` with optional client cert `name`, sends "hello", and reports
/// whether the echo came back.
fn s_client(dir: &Path, addr: &str, cert: Option<&str>, extra: &[&str]) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        addr,
        "-quiet",
        "-verify_return_error",
        "-CAfile",
    ])
    .arg(dir.join("ca.pem"))
    .args(extra);
    if let Some(name) = cert {
        cmd.arg("-cert").arg(dir.join(format!("{name}.pem")));
        cmd.arg("-key").arg(dir.join(format!("{name}-key.pem")));
        cmd.arg("-cert_chain")
            .arg(dir.join(format!("{name}-intermediates.pem")));
    }
    let mut guard = ChildGuard::spawn_with_stdin("openssl s_client", &mut cmd);
    let out = lines_of(guard.child.stdout.take().unwrap());
    let mut stdin = guard.child.stdin.take().unwrap();
    // The handshake may still be refused after s_client thinks it is done (TLS 1.3 client
    // auth): write, then wait for the echo or for s_client to give up.
    let _ = stdin.write_all(b"hello\n");
    let _ = stdin.flush();
    let deadline = Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match out.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) if line == "hello" => return true,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if guard.child.try_wait().unwrap().is_some() {
                    return false;
                }
            }
        }
    }
    false
}

fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    std::fs::write(dir.path().join("ca.pem"), pki.root.cert_pem()).unwrap();
    write_leaf(
        dir.path(),
        "server",
        &pki.int,
        &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap()),
    );
    write_leaf(
        dir.path(),
        "good",
        &pki.int,
        &LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()),
    );
    write_leaf(
        dir.path(),
        "intruder",
        &pki.int,
        &LeafParams::svid(SpiffeId::new("spiffe://example.org/ns/dev/sa/intruder").unwrap()),
    );
    write_leaf(
        dir.path(),
        "foreign",
        &pki.intruder,
        &LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()),
    );
    (dir, pki)
}

#[test]
fn openssl_s_client_against_echo_server() {
    let (dir, _pki) = setup();
    let server = start_echo_server(dir.path(), &[]);

    assert!(
        s_client(dir.path(), &server.addr, Some("good"), &[]),
        "good client should get its echo"
    );
    let line = expect_line(&server.out, "accepted", |l| {
        l.starts_with("accepted") || l.starts_with("rejected")
    });
    assert!(
        line.starts_with("accepted") && line.contains(CLIENT_ID),
        "{line}"
    );
    // OpenSSL 3.0 has no ML-KEM: it offers (and sends a share for) X25519 first, and our
    // server, following the client's order, takes it with no HelloRetryRequest.
    assert!(
        line.ends_with("negotiated TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 full"),
        "{line}"
    );

    assert!(
        !s_client(dir.path(), &server.addr, Some("intruder"), &[]),
        "intruder must fail"
    );
    let line = expect_line(&server.out, "intruder rejection", |l| {
        l.starts_with("rejected") || l.starts_with("accepted")
    });
    assert!(
        line.contains("peer presented spiffe://example.org/ns/dev/sa/intruder; expected spiffe://example.org/ns/prod/sa/web"),
        "{line}"
    );

    assert!(
        !s_client(dir.path(), &server.addr, Some("foreign"), &[]),
        "other-CA client must fail"
    );
    let line = expect_line(&server.out, "foreign rejection", |l| {
        l.starts_with("rejected") || l.starts_with("accepted")
    });
    assert!(line.contains("does not chain to the CA bundle"), "{line}");

    assert!(
        !s_client(dir.path(), &server.addr, None, &[]),
        "no-cert client must fail"
    );
    let line = expect_line(&server.out, "no-cert rejection", |l| {
        l.starts_with("rejected") || l.starts_with("accepted")
    });
    assert!(line.contains("no certificates"), "{line}");

    // TLS 1.2 is opt-in.
    assert!(
        !s_client(dir.path(), &server.addr, Some("good"), &["-tls1_2"]),
        "TLS 1.2 must be refused by default"
    );
    let line = expect_line(&server.out, "TLS 1.2 rejection", |l| {
        l.starts_with("rejected") || l.starts_with("accepted")
    });
    // The log says what each side offered and what to set.
    for part in [
        "protocol version mismatch: the peer offered only TLS 1.2 or older",
        "this side accepts TLSv1.3 only",
        "tls_maximum_protocol_version: TLSv1_3",
        "min_version to TLSv1_2",
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    drop(server.guard);

    let server12 = start_echo_server(dir.path(), &["--tls12"]);
    assert!(
        s_client(dir.path(), &server12.addr, Some("good"), &["-tls1_2"]),
        "TLS 1.2 after opt-in"
    );
}

#[test]
fn echo_client_against_openssl_s_server() {
    let (dir, pki) = setup();
    // s_server gets a leaf straight from the root (s_server sends only -cert's first cert).
    write_leaf(
        dir.path(),
        "s_server",
        &pki.root,
        &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap()),
    );
    let mut s_server = ChildGuard::spawn_with_stdin(
        "openssl s_server",
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-rev",
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(dir.path().join("ca.pem"))
            .arg("-cert")
            .arg(dir.path().join("s_server.pem"))
            .arg("-key")
            .arg(dir.path().join("s_server-key.pem")),
    );
    let out = lines_of(s_server.child.stdout.take().unwrap());
    let line = expect_line(&out, "ACCEPT", |l| l.starts_with("ACCEPT "));
    let addr = line.trim_start_matches("ACCEPT ").to_owned();

    let run_client_with = |cert: &str, allow: &str, extra: &[&str], keylog: Option<&Path>| {
        let mut cmd = Command::new(example_bin("echo_client"));
        cmd.env_remove("SSLKEYLOGFILE").args(extra);
        if let Some(file) = keylog {
            cmd.env("SSLKEYLOGFILE", file);
        }
        let mut client = ChildGuard::spawn_with_stdin(
            "echo_client",
            cmd.arg("--ca")
                .arg(dir.path().join("ca.pem"))
                .arg("--cert")
                .arg(dir.path().join(format!("{cert}.pem")))
                .arg("--key")
                .arg(dir.path().join(format!("{cert}-key.pem")))
                .args([
                    "--connect",
                    &addr,
                    "--allow-spiffe-id",
                    allow,
                    "--message",
                    "hello",
                ]),
        );
        let status = client.wait_for(WAIT).expect("echo_client should finish");
        let mut stdout = String::new();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut client.child.stdout.take().unwrap(), &mut stdout)
            .unwrap();
        std::io::Read::read_to_string(&mut client.child.stderr.take().unwrap(), &mut stderr)
            .unwrap();
        (status.success(), stdout, stderr)
    };
    let run_client = |cert: &str, allow: &str| run_client_with(cert, allow, &[], None);

    let (ok, stdout, stderr) = run_client("good", SERVER_ID);
    assert!(ok, "stdout {stdout} stderr {stderr}");
    assert!(
        stdout.contains(&format!("connected to {SERVER_ID}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("reply: olleh"),
        "s_server -rev reverses the line: {stdout}"
    );
    // Our client sends X25519MLKEM768 and X25519 shares; OpenSSL 3.0 (no ML-KEM) picks
    // X25519 from the first ClientHello: a full handshake, no HelloRetryRequest.
    assert!(
        stdout.contains("negotiated TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 full\n"),
        "{stdout}"
    );

    // The client refuses a server that is not the one it wants, naming both.
    let (ok, _stdout, stderr) = run_client("good", "spiffe://example.org/ns/prod/sa/billing");
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "peer presented {SERVER_ID}; expected spiffe://example.org/ns/prod/sa/billing"
        )),
        "{stderr}"
    );

    // Key logging needs both switches: SSLKEYLOGFILE alone writes nothing, and so does the
    // flag alone; both together write the NSS key log (and warn).
    let keylog = dir.path().join("keys.log");
    let (ok, _, stderr) = run_client_with("good", SERVER_ID, &[], Some(&keylog));
    assert!(ok, "{stderr}");
    assert!(!keylog.exists(), "SSLKEYLOGFILE alone must not log keys");
    let (ok, _, stderr) = run_client_with("good", SERVER_ID, &["--keylog"], None);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("key logging is ON"), "{stderr}");
    let (ok, _, stderr) = run_client_with("good", SERVER_ID, &["--keylog"], Some(&keylog));
    assert!(ok, "{stderr}");
    let logged = std::fs::read_to_string(&keylog).expect("key log written with both switches on");
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET ",
        "CLIENT_TRAFFIC_SECRET_0 ",
    ] {
        assert!(logged.contains(label), "{label} missing from {logged}");
    }
    assert!(
        stderr.contains("TLS key logging is ON"),
        "a warning is logged: {stderr}"
    );
}
