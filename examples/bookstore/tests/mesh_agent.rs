//! `bookstore-mesh --agent`: the whole mesh with every identity from an in-process
//! mtls-agent — Workload API sources for the replicas, the client and the intruder, SDS for
//! real Envoy 1.40 sidecars — and a rotation forced in the middle of each path's scenario.
//! With `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets) a missing Envoy fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bookstore::mesh::{self, MeshOptions, PathKind, checks, same_serial};
use bookstore::{AgentIdentities, MeshPki, MeshPolicy, Workload, WorkloadIdentities};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_mode_both_paths_identities_from_the_agent_and_rotation_with_no_failed_call() {
    support::mesh_finds_envoy("the agent-mode mesh runs its proxyless path only");
    let dir = tempfile::tempdir().unwrap();
    let policy = MeshPolicy::bookstore();
    // Tokens (and file certificates, unused here) from the mesh PKI; SVIDs from the agent.
    let pki = MeshPki::create(dir.path().join("pki"), &policy).unwrap();
    let ids = AgentIdentities::start(dir.path().join("agent"), &policy)
        .await
        .unwrap();
    assert_eq!(ids.agent().generation(), 1);
    let first_server = ids.issued_serial(Workload::Bookstore).unwrap();
    let file_server = pki.server().identity().unwrap().serial().to_string();
    assert!(!same_serial(&first_server, &file_server));
    // The sidecars get SDS with the node ids registered for them; the intruder has none.
    match ids.envoy_certs(Workload::Bookstore).unwrap() {
        bookstore::envoy::CertSource::Sds {
            node_id,
            certificate,
            validation,
            ..
        } => assert_eq!(
            (node_id.as_str(), certificate.as_str(), validation.as_str()),
            (
                bookstore::agent::SERVER_SIDECAR_NODE_ID,
                bookstore::SERVER_ID,
                "spiffe://bookstore.local"
            )
        ),
        other => panic!("SDS expected, got {other:?}"),
    }
    let err = ids.envoy_certs(Workload::Intruder).unwrap_err();
    assert!(err.to_string().contains("no sidecar"), "{err}");

    let mut options = MeshOptions::default();
    options.calls = 36; // 4 rounds: 2 before the rotation, 2 after
    options.require_envoy = support::envoy_required();
    options.agent = true;
    let outcome = mesh::run_with(&options, &policy, &ids, pki.jwks_json(), &pki, dir.path())
        .await
        .unwrap_or_else(|e| panic!("the mesh did not run in agent mode: {e}"));
    println!("{}", outcome.table());

    let paths = support::paths_run(&outcome);
    for path in paths.iter().copied() {
        let report = support::report(&outcome, path);
        let check = |name: &str| support::check(&outcome, path, name);

        // Every call succeeds (across the rotation), each replica serves >= 20 %.
        assert_eq!(report.total(), 36, "{path}");
        support::assert_served_evenly_to(&outcome, path, bookstore::CLIENT_ID);
        // The three refusals, as with file identities.
        support::assert_refusals(&outcome, path);

        // Before the rotation, every SVID in use was the agent's.
        let identities = check(checks::AGENT_IDENTITIES);
        assert!(identities.passed, "{path}: {identities:?}");
        let rotation_check = check(checks::ROTATION);
        assert!(rotation_check.passed, "{path}: {rotation_check:?}");
    }

    // One rotation per path, each visible where the path looks, with zero failed calls.
    assert_eq!(
        outcome.rotations.len(),
        paths.len(),
        "{:?}",
        outcome.rotations
    );
    for (n, rotation) in outcome.rotations.iter().enumerate() {
        let path = rotation.path;
        assert_eq!(path, paths[n]);
        assert_eq!(rotation.generation, 2 + n as u64, "{path}");
        assert_ne!(rotation.bookstore.0, rotation.bookstore.1, "{path}");
        assert_ne!(rotation.client.0, rotation.client.1, "{path}");
        assert!(rotation.new_serials_in_use(), "{path}: {:?}", rotation.seen);
        assert_eq!((rotation.calls_before, rotation.calls_after), (18, 18));
        assert_eq!(rotation.failed_after, 0, "{path}");
        for seen in &rotation.seen {
            let want = match seen.workload {
                Workload::Bookstore => &rotation.bookstore.1,
                Workload::Client => &rotation.client.1,
                _ => continue,
            };
            let serial = seen.serial.as_ref().unwrap();
            assert!(same_serial(serial, want), "{path}: {seen:?}, want {want}");
        }
        let expected = match path {
            // 3 sources (bookstore, client, intruder) + 3 replicas' served certificates.
            PathKind::Proxyless => 6,
            // 3 server sidecars + the client sidecar.
            _ => 4,
        };
        assert_eq!(rotation.seen.len(), expected, "{path}: {:?}", rotation.seen);
    }
    assert_eq!(outcome.rotations[0].bookstore.0, first_server);

    // Issued by the agent: its generation counts the rotations, its current serials are
    // the ones in use last, and none is the file PKI's.
    assert_eq!(ids.agent().generation(), 1 + paths.len() as u64);
    let last = outcome.rotations.last().unwrap();
    assert_eq!(
        ids.issued_serial(Workload::Bookstore).unwrap(),
        last.bookstore.1
    );
    assert_eq!(
        ids.identity(Workload::Bookstore)
            .unwrap()
            .current()
            .serial()
            .to_string(),
        last.bookstore.1
    );
    assert!(
        outcome
            .rotations
            .iter()
            .flat_map(|r| &r.seen)
            .all(|s| !same_serial(s.serial.as_ref().unwrap(), &file_server))
    );
    if paths.contains(&PathKind::Envoy) {
        let (before, after) = outcome.fail_verify_san.unwrap();
        assert!(after > before, "ssl.fail_verify_san {before} -> {after}");
    }
    assert!(outcome.passed(), "{}", outcome.table());
}

/// The binary: `--agent` prints the agent line and the agent-mode rows, exits 0.
#[test]
fn mesh_binary_agent_mode_prints_agent_rows() {
    let envoy = support::mesh_finds_envoy("the binary runs its proxyless path only");
    let stdout = support::success_stdout(&support::run(
        "bookstore-mesh",
        &["--agent", "--calls", "18"],
    ));
    assert!(
        stdout.contains("==> identities: mtls-agent in process: Workload API unix://"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agent.rotate_now(): generation 2"),
        "{stdout}"
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" rotation ") || l.contains(" agent identities "))
        .collect();
    let want = if envoy { 4 } else { 2 };
    assert_eq!(rows.len(), want, "{stdout}");
    assert!(
        rows.iter().all(|r| r.trim_end().ends_with("ok")),
        "{rows:?}"
    );
    assert!(stdout.contains("every expectation held"), "{stdout}");
}

/// Ctrl-C in agent mode while the Envoy path runs: exit 130, no Envoy left, and the
/// temporary directory (the agent's sockets and state with it) is gone.
#[test]
fn mesh_agent_mode_interrupted_stops_every_envoy_and_the_agent() {
    if !support::mesh_finds_envoy("skipping") {
        return;
    }
    let mut mesh = support::ChildGuard::spawn(
        "bookstore-mesh",
        std::process::Command::new(support::bin("bookstore-mesh"))
            .args(["--agent", "--calls", "900"]),
    );
    let (first, lines) = mesh.wait_for_line_keep("==> identities: mtls-agent in process");
    let socket = first
        .split("Workload API unix://")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let dir = socket
        .strip_suffix("/agent/workload.sock")
        .unwrap()
        .to_owned();
    assert!(std::path::Path::new(&socket).exists(), "{socket}");
    support::interrupt_mesh_and_expect_cleanup(mesh, &lines, &dir);
}
