//! The whole mesh, as `bookstore-mesh` runs it: proxyless and through real Envoy 1.40
//! sidecars (`.venv/bin/envoy` from `./scripts/install-test-tools.sh`, or `$MTLS_ENVOY`).
//! With `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets) a missing Envoy fails the test.

mod support;

use bookstore::mesh::{self, MeshOptions, PathKind, checks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_mesh_proxyless_and_through_envoy_sidecars() {
    let mut options = MeshOptions::default();
    options.calls = 45;
    options.require_envoy = support::envoy_required();
    // The stats table's proxyless figures: this process's recorder, as the binary's.
    bookstore::metrics::record().unwrap();
    let outcome = match mesh::run(&options).await {
        Ok(outcome) => outcome,
        Err(e) => panic!("the mesh did not run: {e}"),
    };
    println!("{}", outcome.table());
    println!("{}", outcome.stats_table());
    // Issue 15: each event's figure from our metrics equals Envoy's, and is not zero.
    if let Some(envoy) = &outcome.envoy {
        assert_eq!(outcome.stats.len(), 9, "{}", outcome.stats_table());
        for row in &outcome.stats {
            assert!(row.agrees(), "{}", outcome.stats_table());
            assert!(row.proxyless.1 >= Some(1), "{}", outcome.stats_table());
        }
        // Retries: the same policy on both paths, and the calls marked to fail their first
        // attempt make exactly one retry each, every one served (no call lost).
        let k = Some(mesh::RETRIED_CALLS as u64);
        for event in ["retries", "retried calls served"] {
            let row = outcome
                .stats
                .iter()
                .find(|r| r.event.starts_with(event))
                .unwrap_or_else(|| panic!("no row {event:?}: {}", outcome.stats_table()));
            assert_eq!(
                (row.proxyless.1, row.envoy.1),
                (k, k),
                "{}",
                outcome.stats_table()
            );
        }
        // Calls per replica (the Envoy path's scenario): the replica's server and its
        // sidecar counted the calls the scenario saw answered by it (its x-replica header).
        for replica in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            let row = outcome
                .stats
                .iter()
                .find(|r| r.event.contains(replica))
                .unwrap_or_else(|| panic!("no row for {replica}: {}", outcome.stats_table()));
            let answered = envoy.per_replica.get(replica).copied().unwrap_or(0) as u64;
            assert_eq!(row.proxyless.1, Some(answered), "{}", outcome.stats_table());
        }
    }

    for path in support::paths_run(&outcome) {
        let report = support::report(&outcome, path);
        let check = |name: &str| support::check(&outcome, path, name);

        // Every scenario call succeeds, and each replica serves at least 20 % of them; the
        // replicas saw the client's SPIFFE ID (own handshake, or Envoy's XFCC).
        assert!(report.total() >= 45, "{path}: {} calls", report.total());
        support::assert_served_evenly_to(&outcome, path, bookstore::CLIENT_ID);
        assert_eq!(
            report.cross_replica_misses, 0,
            "{path}: the mesh's replicas share a store"
        );
        assert_eq!(
            report.per_replica.len(),
            3,
            "{path}: {:?}",
            report.per_replica
        );
        assert!(check(checks::BALANCE).passed);

        // The calls failing their first attempt were retried by the policy and served.
        let retries = check(checks::RETRIES);
        assert!(retries.passed, "{path}: {retries:?}");
        assert!(
            retries.observed.starts_with(&format!(
                "{n} first attempts failed, {n}/{n} served",
                n = mesh::RETRIED_CALLS
            )),
            "{path}: {retries:?}"
        );

        // Intruder, no token, wrong audience; the intruder refused in the handshake, so no
        // replica ever answers.
        let (refused, denied) = support::assert_refusals(&outcome, path);
        assert!(refused.contains("no ready endpoint"), "{path}: {refused}");
        // ... and the caller refused for its audience is not told which audience would do.
        let audience = check(checks::WRONG_AUDIENCE);
        assert!(audience.passed, "{path}: {audience:?}");
        assert!(!denied.contains("expected"), "{path}: {denied}");
        assert!(!denied.contains("\"bookstore\""), "{path}: {denied}");
    }

    if outcome.envoy.is_some() {
        // The server sidecars counted the intruder's handshakes as SAN verification failures.
        let (before, after) = outcome.fail_verify_san.unwrap();
        assert!(after > before, "ssl.fail_verify_san {before} -> {after}");
        assert!(
            outcome
                .check(PathKind::Envoy, checks::INTRUDER)
                .unwrap()
                .expected
                .contains("fail_verify_san")
        );
    }
    // Rolling restart: every replica shut down gracefully and came back under load; the
    // proxyless path lost no call, the Envoy path's calls are reported beside it.
    let restart = outcome.proxyless_restart.clone().unwrap();
    assert!(restart.calls > 50, "{restart:?}");
    assert_eq!(restart.failed, 0, "{restart:?}");
    assert!(
        outcome
            .check(PathKind::Proxyless, checks::ROLLING_RESTART)
            .unwrap()
            .passed
    );
    if outcome.envoy.is_some() {
        let envoy = outcome.envoy_restart.clone().unwrap();
        assert!(envoy.calls > 50, "{envoy:?}");
        assert!(
            outcome
                .check(PathKind::Envoy, checks::ROLLING_RESTART)
                .is_some()
        );
    }
    // File identities do not rotate: no agent rows.
    assert!(outcome.rotations.is_empty());
    assert!(
        outcome
            .checks
            .iter()
            .all(|c| c.name != checks::ROTATION && c.name != checks::AGENT_IDENTITIES)
    );
    assert!(outcome.passed(), "{}", outcome.table());
}

/// On a machine without Envoy the mesh still succeeds (proxyless only), says that Envoy was
/// skipped and how to get it; asked to require Envoy, it fails and says the same.
#[test]
fn mesh_binary_without_envoy_skips_it_and_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let command = |extra: &[&str]| {
        let mut c = std::process::Command::new(support::bin("bookstore-mesh"));
        c.args(["--calls", "9", "--no-envoy-install"])
            .args(extra)
            .current_dir(empty.path()) // no .venv above it
            .env("PATH", empty.path())
            .env("MTLS_VENV", empty.path().join("no-venv"))
            .env_remove("MTLS_ENVOY")
            .env_remove("MTLS_REQUIRE_ENVOY");
        c
    };
    let stdout =
        support::success_stdout(&support::run_command("bookstore-mesh", &mut command(&[])));
    for says in [
        "Envoy path skipped: no Envoy binary found",
        "./scripts/install-test-tools.sh",
        "--envoy PATH",
        "proxyless  no token",
        "every expectation held",
    ] {
        assert!(stdout.contains(says), "expected {says:?} in {stdout}");
    }

    let out = support::run_command("bookstore-mesh", &mut command(&["--require-envoy"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("required but not found") && stderr.contains("install-test-tools.sh"),
        "{stderr}"
    );
}

/// Ctrl-C while the Envoy path runs: the mesh exits 130 and no process it started (Envoy
/// children reading configs from its temporary directory) survives; the directory is gone.
#[test]
fn mesh_interrupted_stops_every_envoy_it_started() {
    if !support::mesh_finds_envoy("skipping") {
        return;
    }
    let mut mesh = support::ChildGuard::spawn(
        "bookstore-mesh",
        std::process::Command::new(support::bin("bookstore-mesh")).args(["--calls", "900"]),
    );
    let (first, lines) = mesh.wait_for_line_keep("==> identities: PEM files in ");
    let dir = first
        .split("PEM files in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    support::interrupt_mesh_and_expect_cleanup(mesh, &lines, &dir);
}
