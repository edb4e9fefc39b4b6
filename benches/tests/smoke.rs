//! A smoke run of the load generator: every scenario, one tiny point each (a few seconds
//! in all), and a sanity check of the JSON: calls made, no errors, every process of the
//! scenario present with its own accounting. Speed is not asserted here (benches measure
//! it; `./scripts/bench.sh` runs the real thing).
//!
//! Envoy scenarios need `.venv/bin/envoy` (or `$MTLS_ENVOY`); without it they are skipped
//! with a message, unless `MTLS_REQUIRE_ENVOY=1`, which makes their absence a failure.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use mtls_benches::child::Role;
use mtls_benches::result::{PointResult, RunFile};

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn envoy_required() -> bool {
    std::env::var("MTLS_REQUIRE_ENVOY").is_ok_and(|v| v == "1")
}

fn run(scenarios: &str) -> RunFile {
    run_with(
        scenarios,
        &[
            "--concurrency",
            "4",
            "--replicas",
            "2",
            "--warmup",
            "100ms",
            "--duration",
            "400ms",
        ],
    )
}

fn run_with(scenarios: &str, args: &[&str]) -> RunFile {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smoke.json");
    let output = loadgen()
        .args(["run", "--scenario", scenarios])
        .args(args)
        .args(["--server-threads", "1", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// `bench-report` over `run`: the folder it wrote in (the chart is there too) and the
/// text of the BENCHMARKS.md it wrote.
fn report(run: &RunFile) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    std::fs::write(&json, serde_json::to_string(run).unwrap()).unwrap();
    let md = dir.path().join("BENCHMARKS.md");
    let status = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--results")
        .arg(&json)
        .arg("--out")
        .arg(&md)
        .status()
        .unwrap();
    assert!(status.success(), "bench-report failed: {status}");
    let text = std::fs::read_to_string(&md).unwrap();
    (dir, text)
}

fn names(p: &PointResult) -> BTreeSet<&str> {
    p.processes.iter().map(|u| u.name.as_str()).collect()
}

fn check_sane(p: &PointResult, expected: &[&str]) {
    let what = format!(
        "{} {} c={} r={}",
        p.scenario, p.variant, p.concurrency, p.replicas
    );
    assert!(p.calls > 0, "{what}: no calls");
    assert_eq!(p.errors, 0, "{what}: errors, first: {:?}", p.first_error);
    assert!(p.throughput_per_s > 0.0, "{what}");
    assert!(
        p.latency.p50_us > 0.0 && p.latency.p50_us <= p.latency.p99_us,
        "{what}: {:?}",
        p.latency
    );
    assert!(
        p.latency.p99_us <= p.latency.max_us,
        "{what}: {:?}",
        p.latency
    );
    assert_eq!(
        names(p),
        expected.iter().copied().collect(),
        "{what}: processes"
    );
    for u in &p.processes {
        assert!(u.pid > 0, "{what}: {}", u.name);
        assert!(u.peak_rss_kib > 0, "{what}: {} has no RSS reading", u.name);
        assert!(u.cpu_s >= 0.0 && u.cpu_s.is_finite(), "{what}: {}", u.name);
    }
    assert_eq!(
        p.processes
            .iter()
            .filter(|u| u.role == Role::Client)
            .count(),
        1,
        "{what}: exactly one client process"
    );
    let total: f64 = p.processes.iter().map(|u| u.cpu_s).sum();
    assert!(total > 0.0, "{what}: no CPU time accounted at all");
}

#[test]
fn every_scenario_runs_and_reports_sane_json() {
    let envoy =
        mtls_benches::envoy::require_envoy("the smoke test's handshake and envoy scenarios");
    let scenarios = match &envoy {
        Ok(_) => "all",
        Err(e) if envoy_required() => panic!("MTLS_REQUIRE_ENVOY=1: {e}"),
        Err(e) => {
            eprintln!("skipping the Envoy scenarios (handshake, envoy): {e}");
            "plain-tonic,plain-tonic-mtls,proxyless"
        }
    };
    let run = run(scenarios);
    let find = |scenario: &str, variant: &str| {
        run.points
            .iter()
            .find(|p| p.scenario == scenario && p.variant == variant)
            .unwrap_or_else(|| panic!("no {scenario} {variant} point in {:#?}", run.points))
    };
    // The tonic baselines over the same replica count as proxyless (balance_list).
    check_sane(
        find("plain-tonic", ""),
        &["client", "replica-1", "replica-2"],
    );
    check_sane(
        find("plain-tonic-mtls", ""),
        &["client", "replica-1", "replica-2"],
    );
    check_sane(find("proxyless", ""), &["client", "replica-1", "replica-2"]);
    if envoy.is_ok() {
        let hs = find("handshake", "mtls-core");
        check_sane(hs, &["client", "server"]);
        assert!(hs.calls_per_server_cpu_s > 0.0);
        check_sane(find("handshake", "envoy"), &["client", "envoy-server"]);
        // The hybrid post-quantum rows, on both servers.
        check_sane(find("handshake", "mtls-core-hybrid"), &["client", "server"]);
        check_sane(
            find("handshake", "envoy-hybrid"),
            &["client", "envoy-server"],
        );
        // Resumed rows: servers of their own that issue tickets, and the connections did
        // resume (the counted one, and most of the point's).
        for (variant, server) in [
            ("mtls-core-resumed", "server-resumed"),
            ("envoy-resumed", "envoy-server-resumed"),
        ] {
            let p = find("handshake", variant);
            check_sane(p, &["client", server]);
            let hello = p.hello.as_ref().unwrap();
            assert_eq!(hello.kind, "resumed", "{variant}: {hello:?}");
            assert!(hello.resumed_share.unwrap() > 0.5, "{variant}: {hello:?}");
        }
        // Hello sizes read off the wire: the hybrid ClientHello carries a ~1.2 KB ML-KEM
        // share beside the X25519 one.
        let size = |v: &str| find("handshake", v).hello.clone().unwrap();
        let (classical, hybrid) = (size("mtls-core"), size("mtls-core-hybrid"));
        assert_eq!(
            (classical.kind.as_str(), classical.group.as_str()),
            ("full", "X25519")
        );
        assert_eq!(hybrid.group, "X25519MLKEM768", "{hybrid:?}");
        assert!(
            hybrid.client_hello > classical.client_hello + 1000
                && hybrid.server_flight > classical.server_flight + 1000,
            "{classical:?} vs {hybrid:?}"
        );
        assert_eq!(size("envoy-hybrid").group, "X25519MLKEM768");
        check_sane(
            find("envoy", ""),
            &[
                "client",
                "envoy-client",
                "envoy-server-1",
                "envoy-server-2",
                "replica-1",
                "replica-2",
            ],
        );
        check_sane(
            find("recycling", "proxyless"),
            &["client", "replica-1", "replica-2"],
        );
        // 6 handshake variants + 4 bookstore scenarios + recycling on both paths.
        assert_eq!(run.points.len(), 12, "{:#?}", run.points);
    }

    // The report renders from this run.
    let (dir, text) = report(&run);
    assert!(text.contains("## Acceptance goals vs this run"), "{text}");
    assert!(text.contains("### proxyless vs tonic by hand"), "{text}");
    if envoy.is_ok() {
        assert!(
            text.contains("### handshakes: classical X25519 vs hybrid X25519MLKEM768"),
            "{text}"
        );
        assert!(
            text.contains("### resumed handshakes: mtls-core vs Envoy"),
            "{text}"
        );
        assert!(text.contains("### handshake bytes on the wire"), "{text}");
    }
    let svg = std::fs::read_to_string(dir.path().join("benchmarks.svg")).unwrap();
    assert!(svg.contains("proxyless (2 replicas)"), "{svg}");
}

/// The recycling scenario: both paths while the servers recycle every connection at 300 ms
/// (about 6 GOAWAYs per connection in the window); the proxyless path loses no call, and
/// the report gets its table.
#[test]
fn recycling_scenario_measures_both_paths_and_proxyless_loses_no_call() {
    if let Err(e) = mtls_benches::envoy::require_envoy("the recycling smoke test") {
        assert!(!envoy_required(), "MTLS_REQUIRE_ENVOY=1: {e}");
        eprintln!("skipping: {e}");
        return;
    }
    let run = run_with(
        "recycling",
        &[
            "--concurrency",
            "8",
            "--replicas",
            "3",
            "--warmup",
            "300ms",
            "--duration",
            "2s",
            "--recycle-every",
            "300ms",
        ],
    );
    assert_eq!(run.points.len(), 2, "{:#?}", run.points);
    let find = |variant: &str| {
        run.points
            .iter()
            .find(|p| p.scenario == "recycling" && p.variant == variant)
            .unwrap_or_else(|| panic!("no recycling {variant} point in {:#?}", run.points))
    };
    let ours = find("proxyless");
    check_sane(ours, &["client", "replica-1", "replica-2", "replica-3"]);
    assert_eq!(ours.recycle_every_s, Some(0.3));
    let envoy = find("envoy");
    assert!(envoy.calls > 0, "{envoy:#?}");
    assert_eq!(envoy.recycle_every_s, Some(0.3));

    let (_dir, text) = report(&run);
    let row = format!("| 3 | 8 | {} | 0 |", ours.calls);
    assert!(
        text.contains("### connection recycling: proxyless vs Envoy") && text.contains(&row),
        "{text}"
    );
}

#[test]
fn envoy_scenarios_fail_clearly_without_envoy() {
    let output = loadgen()
        .env("MTLS_ENVOY", "/nonexistent/envoy")
        .args([
            "run",
            "--scenario",
            "envoy",
            "--duration",
            "100ms",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Envoy not found at /nonexistent/envoy")
            && stderr.contains("envoy scenario"),
        "{stderr}"
    );
}

#[test]
fn unknown_scenario_is_named() {
    let output = loadgen()
        .args(["run", "--scenario", "sidecarless", "--quiet"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("expected handshake, plain-tonic, plain-tonic-mtls, proxyless, envoy or recycling, found \"sidecarless\""),
        "{stderr}"
    );
}

fn run_json<T: serde::de::DeserializeOwned>(args: &[&str]) -> T {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let output = loadgen()
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[test]
fn soak_samples_every_process_and_reports_slopes() {
    let result: mtls_benches::soak::SoakResult = run_json(&[
        "soak",
        "--replicas",
        "2",
        "--concurrency",
        "4",
        "--warmup",
        "200ms",
        "--duration",
        "2s",
        "--sample-every",
        "500ms",
        "--server-threads",
        "1",
    ]);
    assert!(
        result.point.calls > 0 && result.point.errors == 0,
        "{:?}",
        result.point
    );
    assert!(
        result.samples.len() >= 4,
        "{} samples",
        result.samples.len()
    );
    let names: Vec<&str> = result.trends.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["client", "replica-1", "replica-2"]);
    for t in &result.trends {
        assert!(t.rss_first_kib > 0 && t.fds_first > 0, "{t:?}");
    }
}

#[test]
fn abuse_compares_ours_with_envoy() {
    if mtls_benches::envoy::require_envoy("abuse").is_err() && !envoy_required() {
        eprintln!("skipped: no Envoy (.venv/bin/envoy or $MTLS_ENVOY)");
        return;
    }
    let result: mtls_benches::abuse::AbuseResult = run_json(&[
        "abuse",
        "--idle",
        "40",
        "--slowloris",
        "10",
        "--garbage",
        "10",
        "--trials",
        "2",
        "--flood-workers",
        "2",
        "--flood-duration",
        "1s",
        "--server-threads",
        "1",
    ]);
    let targets: Vec<&str> = result.targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(targets, ["proxyless", "envoy"]);
    for t in &result.targets {
        assert_eq!(t.flood_connections, 60, "{}", t.target);
        assert!(
            t.connect_flooded_ms.iter().all(|ms| *ms < 5000.0),
            "{}: an honest connection failed under the flood: {:?}",
            t.target,
            t.connect_flooded_ms
        );
        assert!(
            t.calls_flooded.calls > 0 && t.calls_flooded.errors == 0,
            "{}",
            t.target
        );
        assert!(
            t.flood_handshakes_per_s > 0.0,
            "{}: no flood handshake completed",
            t.target
        );
    }
}

#[test]
fn layers_switch_one_layer_at_a_time() {
    let run: RunFile = run_json(&[
        "layers",
        "--rounds",
        "1",
        "--window",
        "300ms",
        "--server-threads",
        "1",
    ]);
    let layers = run.layers.expect("a layers result");
    let names: Vec<&str> = layers.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tonic TLS",
            "+ mTLS transport",
            "+ balancer",
            "+ token header",
            "+ JWT layer",
            "+ authz layer"
        ]
    );
    for r in &layers.rows {
        assert!(r.calls > 0 && r.latency_us > 0.0, "{r:?}");
        // CPU comes in clock ticks (10 ms): a short window of a slow debug build may see
        // none for one process, never negative figures.
        assert!(
            r.client_cpu_us >= 0.0 && r.server_cpu_us >= 0.0 && r.client_cpu_us.is_finite(),
            "{r:?}"
        );
    }
    assert!(
        layers.rows.iter().map(|r| r.server_cpu_us).sum::<f64>() > 0.0,
        "{layers:?}"
    );
    assert!(layers.markdown().contains("| + authz layer |"));
}

#[test]
fn crypto_bound_reads_openssl_speed() {
    let run: RunFile = run_json(&["crypto-bound", "--seconds", "1"]);
    let c = run.crypto.expect("openssl figures");
    assert!(c.version.starts_with("OpenSSL"), "{c:?}");
    assert!(
        c.p256_sign_per_s > 100.0 && c.p256_verify_per_s > 100.0,
        "{c:?}"
    );
    assert!(c.x25519_per_s > 100.0 && c.p256_ecdh_per_s > 100.0, "{c:?}");
    // One sign + two verifies + two X25519 operations bound the handshakes per CPU-second.
    assert!(c.classical_bound_per_s() < c.p256_sign_per_s, "{c:?}");
}
