//! `bookstore-server` and `bookstore-client` as processes: they serve and run the scenario,
//! and the server refuses to start, with a clear message, on bad inputs.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, process::Command};

use bookstore::{AUDIENCE, MeshPki, MeshPolicy};
use support::{
    ANY_PORT, ChildGuard, bin, client_args, free_addr, listening_addr, run, s, server_args,
};

fn pki(dir: &Path) -> MeshPki {
    MeshPki::create(dir, &MeshPolicy::bookstore()).unwrap()
}

fn mtls_args<'a>(pki: &'a MeshPki, listen: &'a str) -> Vec<&'a str> {
    server_args(pki, listen, true)
}

/// `bookstore-server` with [`mtls_args`] on `listen` and what `more` adds (arguments, its
/// environment), once it is listening: the process and its `listening on` line.
fn mtls_server(
    pki: &MeshPki,
    listen: &str,
    more: impl FnOnce(&mut Command) -> &mut Command,
) -> (ChildGuard, String) {
    let mut command = Command::new(bin("bookstore-server"));
    command.args(mtls_args(pki, listen));
    let mut server = ChildGuard::spawn("bookstore-server", more(&mut command));
    let line = server.wait_for_line("listening on");
    (server, line)
}

/// A fresh PKI and a free address: the server's [`mtls_args`] that a test spoils one at a
/// time, expecting the server to refuse to start.
struct Spoiled {
    dir: tempfile::TempDir,
    pki: MeshPki,
    listen: String,
}

impl Spoiled {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let listen = free_addr().to_string();
        Self { dir, pki, listen }
    }

    /// `name` in the test's directory.
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// [`refused`] with argument `at` of [`mtls_args`] replaced by `value`: the refusal
    /// says each of `says`.
    fn refuses(&self, at: usize, value: &Path, says: &[&str]) {
        let mut args = mtls_args(&self.pki, &self.listen);
        args[at] = s(value);
        let err = refused(&args);
        for words in says {
            assert!(
                err.contains(words),
                "{} for {}: expected {words:?} in {err}",
                value.display(),
                args[at - 1]
            );
        }
    }
}

/// Runs the server expecting it to refuse to start; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = run("bookstore-server", args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "server started with {args:?}; stderr: {stderr}"
    );
    assert!(stderr.contains("bookstore-server: error: "), "{stderr}");
    stderr
}

#[test]
fn server_and_client_processes_run_the_scenario_over_mtls_and_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_server, line) = mtls_server(&pki, ANY_PORT, |c| c.args(["--replica-name", "replica-a"]));
    let listen = listening_addr(&line);
    assert!(
        line.contains("replica-a") && line.contains("mTLS") && line.contains("JWT"),
        "{line}"
    );

    let token = dir.path().join("token");
    std::fs::write(&token, pki.token(AUDIENCE).unwrap()).unwrap();
    let out = run(
        "bookstore-client",
        &[client_args(&pki, &listen), vec!["--token-file", s(&token)]].concat(),
    );
    let stdout = support::success_stdout(&out);
    assert!(stdout.contains("18 / 18 calls ok"), "{stdout}");
    assert!(
        stdout.contains("replica-a") && stdout.contains("ListShelves"),
        "{stdout}"
    );

    // Without a token the client's calls fail, and it says so with a non-zero exit.
    let out = run(
        "bookstore-client",
        &[client_args(&pki, &listen), vec!["--calls", "1"]].concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("Unauthenticated: Jwt is missing"),
        "{stdout}"
    );

    // Plaintext mode (behind a sidecar), and the client's plaintext mode.
    let mut server = ChildGuard::spawn(
        "bookstore-server --plaintext",
        std::process::Command::new(bin("bookstore-server")).args([
            "--plaintext",
            "--listen",
            ANY_PORT,
        ]),
    );
    let line = server.wait_for_line("listening on");
    let plain = listening_addr(&line);
    assert!(line.contains("plaintext"), "{line}");
    let out = run(
        "bookstore-client",
        &["--plaintext", &plain, "--calls", "9", "-q"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("9 / 9 calls ok") && stdout.contains(&plain),
        "{stdout}"
    );
}

#[test]
fn server_refuses_missing_or_mismatched_certificate_and_key() {
    let spoiled = Spoiled::new();
    let missing = spoiled.path("nope.pem");
    spoiled.refuses(5, &missing, &["--cert", "nope.pem", "No such file"]);
    // The client's key with the server's certificate.
    let client_key = &spoiled.pki.client().key;
    spoiled.refuses(7, client_key, &["private key does not match certificate"]);
    // A key file that holds no key.
    spoiled.refuses(7, spoiled.pki.bundle_path(), &["--key"]);
    spoiled.refuses(3, &missing, &["trust bundle (--ca)", "nope.pem"]);
}

#[test]
fn server_refuses_unreadable_jwks() {
    let spoiled = Spoiled::new();
    let missing = spoiled.path("missing-jwks.json");
    spoiled.refuses(11, &missing, &["JWKS (--jwks)", "missing-jwks.json"]);
    let garbage = spoiled.path("garbage.json");
    std::fs::write(&garbage, "this is not JSON").unwrap();
    spoiled.refuses(11, &garbage, &["is not a usable JWKS", "garbage.json"]);
}

#[test]
fn server_refuses_a_port_in_use_and_plaintext_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&mtls_args(&pki, &addr));
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("already in use"),
        "{err}"
    );
    let err = refused(&["--plaintext", "--listen", &addr]);
    assert!(err.contains("already in use"), "{err}");

    let err = refused(&["--plaintext", "--listen", "0.0.0.0:8080"]);
    assert!(
        err.contains("loopback addresses only") && err.contains("0.0.0.0:8080"),
        "{err}"
    );
}

/// Three `bookstore-server` processes on 127.0.0.2–4 (one port), each with its own store,
/// found through the in-process DNS by `bookstore-client`: calls spread over all three, and
/// rounds that meet a shelf made on another replica end early instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_balances_over_independent_server_processes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let ips = bookstore::mesh::REPLICA_IPS;
    let (port, probe) = bookstore::mesh::bind_shared_port(&ips).await.unwrap();
    drop(probe);
    let mut servers = Vec::new();
    for ip in ips {
        let listen = format!("{ip}:{port}");
        let name = format!("pod-{ip}");
        let (server, _) = mtls_server(&pki, &listen, |c| c.args(["--replica-name", &name]));
        servers.push(server);
    }
    let dns = bookstore::MeshDns::start("bookstore.local", &ips, 5)
        .await
        .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, pki.token(AUDIENCE).unwrap()).unwrap();
    let (target, nameserver) = (format!("bookstore.local:{port}"), dns.addr().to_string());
    let args: Vec<String> = [
        client_args(&pki, &target),
        vec!["--nameserver", &nameserver, "--token-file", s(&token)],
        vec!["--calls", "27"],
    ]
    .concat()
    .into_iter()
    .map(str::to_owned)
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("bookstore-client", &args)
    })
    .await
    .unwrap();
    let stdout = support::success_stdout(&out);
    for ip in ips {
        assert!(
            stdout.contains(&format!("pod-{ip}")),
            "{ip} never answered:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("rounds ended early: the replicas keep separate in-memory stores"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    println!("{stdout}");
    drop(servers);
}

/// Logs written to a pipe or a file carry no ANSI colour codes (colours only on a terminal).
#[test]
fn redirected_logs_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (mut server, _) = mtls_server(&pki, ANY_PORT, |c| c.env("RUST_LOG", "debug"));
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.lines().count() > 0, "no log line to check");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}
