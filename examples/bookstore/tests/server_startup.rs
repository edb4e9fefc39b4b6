//! `bookstore-server` and `bookstore-client` as processes: they serve and run the scenario,
//! and the server refuses to start, with a clear message, on bad inputs.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

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

/// [`refused`] with argument `at` of [`mtls_args`] replaced by `value`.
fn refused_with(pki: &MeshPki, listen: &str, at: usize, value: &str) -> String {
    let mut args = mtls_args(pki, listen);
    args[at] = value;
    refused(&args)
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
    let mut server = ChildGuard::spawn(
        "bookstore-server",
        std::process::Command::new(bin("bookstore-server"))
            .args(mtls_args(&pki, ANY_PORT))
            .args(["--replica-name", "replica-a"]),
    );
    let line = server.wait_for_line("listening on");
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let listen = free_addr().to_string();

    let missing = dir.path().join("nope.pem");
    let err = refused_with(&pki, &listen, 5, s(&missing)); // --cert
    assert!(err.contains("--cert") && err.contains("nope.pem"), "{err}");
    assert!(err.contains("No such file"), "{err}");

    // The client's key with the server's certificate.
    let err = refused_with(&pki, &listen, 7, s(&pki.client().key)); // --key
    assert!(
        err.contains("private key does not match certificate"),
        "{err}"
    );

    // A key file that holds no key.
    let err = refused_with(&pki, &listen, 7, s(pki.bundle_path()));
    assert!(err.contains("--key"), "{err}");

    let err = refused_with(&pki, &listen, 3, s(&missing)); // --ca
    assert!(
        err.contains("trust bundle (--ca)") && err.contains("nope.pem"),
        "{err}"
    );
}

#[test]
fn server_refuses_unreadable_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let listen = free_addr().to_string();

    let missing = dir.path().join("missing-jwks.json");
    let err = refused_with(&pki, &listen, 11, s(&missing));
    assert!(
        err.contains("JWKS (--jwks)") && err.contains("missing-jwks.json"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "this is not JSON").unwrap();
    let err = refused_with(&pki, &listen, 11, s(&garbage));
    assert!(
        err.contains("is not a usable JWKS") && err.contains("garbage.json"),
        "{err}"
    );
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
        let mut server = ChildGuard::spawn(
            "bookstore-server",
            std::process::Command::new(bin("bookstore-server"))
                .args(mtls_args(&pki, &listen))
                .args(["--replica-name", &format!("pod-{ip}")]),
        );
        server.wait_for_line("listening on");
        servers.push(server);
    }
    let dns = bookstore::MeshDns::start("bookstore.local", &ips, 5)
        .await
        .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, pki.token(AUDIENCE).unwrap()).unwrap();
    let args: Vec<String> = [
        "--target",
        &format!("bookstore.local:{port}"),
        "--nameserver",
        &dns.addr().to_string(),
        "--ca",
        s(pki.bundle_path()),
        "--cert",
        s(&pki.client().cert),
        "--key",
        s(&pki.client().key),
        "--token-file",
        s(&token),
        "--calls",
        "27",
    ]
    .map(str::to_owned)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("bookstore-client", &args)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let mut server = ChildGuard::spawn(
        "bookstore-server",
        std::process::Command::new(bin("bookstore-server"))
            .args(mtls_args(&pki, ANY_PORT))
            .env("RUST_LOG", "debug"),
    );
    server.wait_for_line("listening on");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.lines().count() > 0, "no log line to check");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}
