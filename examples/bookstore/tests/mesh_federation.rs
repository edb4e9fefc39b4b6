//! `bookstore-mesh --federation`: the client in `client.local`, the bookstore in
//! `bookstore.local`, each with its own in-process mtls-agent and CA, federated over their
//! bundle endpoints (https_spiffe one way, https_web the other); real Envoy 1.40 sidecars
//! fed by SDS; a neighbour of the client's domain and a workload of an unfederated domain
//! refused; a CA rotation in bookstore.local under calls on both paths. With
//! `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets) a missing Envoy fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bookstore::mesh::{
    self, FEDERATION_REFRESH_HINT, FETCH_SLACK, FederatedDomains, PathKind, checks,
};
use bookstore::{MeshPki, MeshPolicy, Workload, WorkloadIdentities};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_on_both_paths_and_a_ca_rotation_crosses_over() {
    support::mesh_finds_envoy("the federation mesh runs its proxyless path only");
    // The proxyless refusals are counted by reason: this process's recorder, as the binary's.
    bookstore::metrics::record().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = MeshPolicy::federated();
    let pki = MeshPki::create(dir.path().join("pki"), &policy).unwrap();
    let domains = FederatedDomains::start(
        dir.path().join("federation"),
        &policy,
        FEDERATION_REFRESH_HINT,
    )
    .await
    .unwrap();
    // Three CAs, and each SVID from its own domain's agent.
    let subjects = [
        domains.bookstore_agent().ca().subject().to_owned(),
        domains.client_agent().ca().subject().to_owned(),
        domains.intruder_agent().ca().subject().to_owned(),
    ];
    assert_ne!(
        domains.bookstore_agent().bundle_pem(),
        domains.client_agent().bundle_pem()
    );
    assert_ne!(
        domains.client_agent().bundle_pem(),
        domains.intruder_agent().bundle_pem()
    );
    for (workload, id) in [
        (Workload::Bookstore, bookstore::SERVER_ID),
        (Workload::Client, bookstore::FEDERATED_CLIENT_ID),
        (Workload::Intruder, bookstore::UNFEDERATED_ID),
    ] {
        let svid = domains.identity(workload).unwrap().current();
        assert_eq!(svid.spiffe_id().unwrap().to_string(), id, "{subjects:?}");
        assert_eq!(
            svid.serial().to_string(),
            domains.issued_serial(workload).unwrap()
        );
    }
    // The sidecars validate with the *other* domain's bundle, over their own agent's SDS.
    for (workload, validation, node) in [
        (
            Workload::Bookstore,
            "spiffe://client.local",
            bookstore::agent::SERVER_SIDECAR_NODE_ID,
        ),
        (
            Workload::Client,
            "spiffe://bookstore.local",
            bookstore::agent::CLIENT_SIDECAR_NODE_ID,
        ),
    ] {
        match domains.envoy_certs(workload).unwrap() {
            bookstore::envoy::CertSource::Sds {
                validation: v,
                node_id,
                ..
            } => assert_eq!((v.as_str(), node_id.as_str()), (validation, node)),
            other => panic!("SDS expected, got {other:?}"),
        }
    }
    // Each agent fetched the other's bundle; the unfederated one fetched nothing.
    let bookstore_td = policy.trust_domain.clone();
    let client_td: mtls_core::TrustDomain = bookstore::CLIENT_TRUST_DOMAIN.parse().unwrap();
    let before_sequence = domains
        .client_agent()
        .federated_bundles()
        .get(&bookstore_td)
        .and_then(|b| b.sequence())
        .expect("client.local fetched bookstore.local's bundle");
    assert!(
        domains
            .bookstore_agent()
            .federated_bundles()
            .get(&client_td)
            .and_then(|b| b.sequence())
            .is_some()
    );
    assert!(domains.intruder_agent().federated_bundles().is_empty());

    let mut options = mesh::MeshOptions::default();
    options.calls = 18;
    options.require_envoy = support::envoy_required();
    options.federation = true;
    let outcome = mesh::run_federated(
        &options,
        &policy,
        &domains,
        pki.jwks_json(),
        &pki,
        dir.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("the federation mesh did not run: {e}"));
    println!("{}", outcome.table());

    let paths = support::paths_run(&outcome);
    for path in paths.iter().copied() {
        let check = |name: &str| support::check(&outcome, path, name);
        for name in [
            checks::SCENARIO,
            checks::BALANCE,
            checks::CALLER,
            checks::TLS,
            checks::FEDERATION,
            checks::NEIGHBOUR,
            checks::UNFEDERATED,
            checks::CA_ROTATION,
        ] {
            let c = check(name);
            assert!(c.passed, "{path} {name}: {c:?}\n{}", outcome.table());
        }
        let report = support::report(&outcome, path);
        assert_eq!(report.total(), 18, "{path}");
        assert_eq!(report.succeeded(), 18, "{path}");
        // The bookstore saw exactly the foreign client, on both paths.
        assert_eq!(
            report.callers.iter().collect::<Vec<_>>(),
            [bookstore::FEDERATED_CLIENT_ID],
            "{path}"
        );
        // Both refused in the handshake: no call reached a replica (what the caller saw
        // of the server's alert may vary; the server's figure below names the reason).
        for name in [checks::NEIGHBOUR, checks::UNFEDERATED] {
            let (code, message) = check(name).status.clone().unwrap();
            assert_eq!(code, Code::Unavailable, "{path} {name}: {message}");
        }
        // Refused for the right reason: the counter of that reason rose.
        let neighbour = &check(checks::NEIGHBOUR).observed;
        let unfederated = &check(checks::UNFEDERATED).observed;
        match path {
            PathKind::Proxyless => {
                assert!(
                    neighbour.contains("result=\"authorizer_denied\"}"),
                    "{neighbour}"
                );
                assert!(
                    unfederated.contains("result=\"unknown_ca\"}"),
                    "{unfederated}"
                );
            }
            _ => {
                assert!(neighbour.contains("ssl.fail_verify_san"), "{neighbour}");
                assert!(
                    unfederated.contains("ssl.fail_verify_error"),
                    "{unfederated}"
                );
            }
        }
    }

    // The CA rotation: a new root, at client.local's agent, in the client's source and the
    // client sidecar within one refresh hint; the bookstore then on the new CA; no call failed.
    let r = outcome.ca_rotation.as_ref().expect("the CA rotation ran");
    assert_eq!(r.error, None);
    assert_eq!(r.new_roots.len(), 1, "{r:?}");
    let within = FEDERATION_REFRESH_HINT + FETCH_SLACK;
    assert!(r.client_agent.unwrap() <= within, "{r:?}");
    assert!(r.client_source.unwrap() <= within, "{r:?}");
    assert!(r.sequence.1.unwrap() > r.sequence.0.unwrap(), "{r:?}");
    assert_eq!(r.sequence.0, Some(before_sequence));
    // The bookstore switched only once client.local held the new root.
    let activated = r.activated.unwrap();
    assert!(r.client_agent.unwrap() <= activated, "{r:?}");
    assert!(r.client_source.unwrap() <= activated, "{r:?}");
    assert_eq!(r.replicas_new.len(), 3, "{r:?}");
    assert!(r.replicas_new.iter().all(|(_, new)| *new), "{r:?}");
    assert!(matches!(r.fresh_call, Some(Ok(_))), "{r:?}");
    assert!(
        r.proxyless_calls.0 >= 9 && r.proxyless_calls.1 == 0,
        "{r:?}"
    );
    assert!(r.failures.is_empty(), "{r:?}");
    if paths.contains(&PathKind::Envoy) {
        assert!(r.client_sidecar.unwrap() <= within, "{r:?}");
        assert!(r.client_sidecar.unwrap() <= activated, "{r:?}");
        assert_eq!(r.sidecars_new.len(), 3, "{r:?}");
        assert!(r.sidecars_new.iter().all(|(_, new)| *new), "{r:?}");
        let (made, failed) = r.envoy_calls.unwrap();
        assert!(made >= 9 && failed == 0, "{r:?}");
    }
    // What client.local holds of bookstore.local now is what bookstore.local publishes
    // (old and new roots while the old SVIDs may live), and the bookstore's SVID is new.
    let held = domains
        .client_agent()
        .federated_bundles()
        .get(&bookstore_td)
        .unwrap()
        .to_pem();
    assert_eq!(
        mtls_certs::parse_certificates_pem(&held).unwrap(),
        mtls_certs::parse_certificates_pem(&domains.bookstore_agent().bundle_pem()).unwrap()
    );
    // The side-by-side figures: each refusal counted by its reason on both paths.
    println!("{}", outcome.stats_table());
    assert_eq!(outcome.stats.len(), 2, "{}", outcome.stats_table());
    for row in &outcome.stats {
        assert!(row.proxyless.1 >= Some(1), "{}", outcome.stats_table());
        if paths.contains(&PathKind::Envoy) {
            assert!(row.envoy.1 >= Some(1), "{}", outcome.stats_table());
        }
    }
    assert!(outcome.passed(), "{}", outcome.table());

    // Every Envoy it started is gone once the run returned.
    let left = support::envoy_pids_using(dir.path().to_str().unwrap());
    assert!(left.is_empty(), "Envoys still running: {left:?}");
}

/// The binary: `--federation` prints the federation rows on both paths, every one ok,
/// exits 0, and leaves no process or directory behind.
#[test]
fn mesh_binary_federation_prints_its_rows_and_stops_everything() {
    let envoy = support::mesh_finds_envoy("the binary runs its proxyless path only");
    let stdout = support::success_stdout(&support::run(
        "bookstore-mesh",
        &["--federation", "--calls", "18"],
    ));
    let dir = stdout
        .split("three mtls-agents in process in ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no identities line: {stdout}"))
        .to_owned();
    let paths = if envoy { 2 } else { 1 };
    for name in [checks::FEDERATION, checks::NEIGHBOUR, checks::UNFEDERATED] {
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("proxyless ") || l.starts_with("envoy "))
            .filter(|l| l.contains(&format!("  {name}  ")))
            .collect();
        assert_eq!(rows.len(), paths, "{name}: {stdout}");
        assert!(
            rows.iter().all(|r| r.trim_end().ends_with("ok")),
            "{rows:?}"
        );
    }
    assert!(stdout.contains("every expectation held"), "{stdout}");
    // The agents' directory went with the run, and no Envoy outlived it.
    let left = support::envoy_pids_using(&dir);
    assert!(left.is_empty(), "processes still using {dir}: {left:?}");
    let root = std::path::Path::new(&dir).parent().unwrap();
    assert!(!root.exists(), "{} was not removed", root.display());
}
