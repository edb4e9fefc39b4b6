use super::*;
use crate::child::Role;
use crate::latency::LatencySummary;
use crate::result::ProcessUsage;

fn point(
    scenario: &str,
    variant: &str,
    replicas: usize,
    c: usize,
    thr: f64,
    p50: f64,
) -> PointResult {
    let usage = |name: &str, role, rss| ProcessUsage {
        name: name.into(),
        role,
        pid: 1,
        cpu_s: 1.0,
        user_s: 0.5,
        system_s: 0.5,
        cpu_s_per_1k_calls: 0.1,
        peak_rss_kib: rss,
        peak_rss_window_only: true,
    };
    let mut processes = vec![usage("client", Role::Client, 20 * 1024)];
    if scenario == "envoy" {
        processes.push(usage("envoy-client", Role::ClientProxy, 60 * 1024));
    }
    PointResult {
        scenario: scenario.into(),
        variant: variant.into(),
        concurrency: c,
        replicas,
        warmup_s: 1.0,
        duration_s: 5.0,
        calls: (thr * 5.0) as u64,
        errors: 0,
        first_error: None,
        throughput_per_s: thr,
        latency: LatencySummary {
            count: 1,
            p50_us: p50,
            p90_us: p50,
            p99_us: p50 * 2.0,
            max_us: p50 * 3.0,
            mean_us: p50,
        },
        processes,
        cpu_s_per_1k_calls_total: 0.2,
        calls_per_server_cpu_s: thr / 2.0,
        machine_cpus: 2,
        other_cpu_s: 1.0,
        hello: None,
        recycle_every_s: None,
    }
}

fn input() -> ReportInput {
    ReportInput {
        points: vec![
            point("proxyless", "", 3, 16, 40_000.0, 300.0),
            point("envoy", "", 3, 16, 10_000.0, 1500.0),
            point("plain-tonic", "", 3, 16, 50_000.0, 250.0),
            point("handshake", "mtls-core", 1, 16, 5000.0, 3000.0),
            point("handshake", "envoy", 1, 16, 5500.0, 3000.0),
        ],
        estimates: vec![
            Estimate {
                group: "ES256".into(),
                function: "mtls_jwt uncached".into(),
                mean_ns: 50_000.0,
                mean_ci_ns: (49_000.0, 51_000.0),
                median_ns: 50_000.0,
                elements: None,
            },
            Estimate {
                group: "ES256".into(),
                function: "jsonwebtoken::decode".into(),
                mean_ns: 49_000.0,
                mean_ci_ns: (48_000.0, 50_000.0),
                median_ns: 49_000.0,
                elements: None,
            },
        ],
        chart_file: "benchmarks.svg".into(),
        ..ReportInput::default()
    }
}

#[test]
fn acceptance_rows_carry_ratios_and_verdicts() {
    let md = markdown(&input());
    let row = |needle: &str| {
        md.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle:?} in\n{md}"))
            .to_owned()
    };
    let thr = row("throughput ≥ 3× `envoy` (3 replicas, concurrency 16)");
    assert!(
        thr.contains("4.00× (40000 vs 10000 calls/s)") && thr.contains("**met**"),
        "{thr}"
    );
    let p50 = row("p50 ≤ ⅓ of `envoy` (3 replicas, concurrency 16)");
    assert!(p50.contains("0.20") && p50.contains("**met**"), "{p50}");
    let floor = row(
        "`proxyless` ≥ 1.05× `plain-tonic` throughput (3 replicas, tonic `balance_list`, concurrency 16)",
    );
    assert!(
        floor.contains("0.80× (40000 vs 50000 calls/s)") && floor.contains("short"),
        "{floor}"
    );
    // The 1-replica floor has no 1-replica points here: not measured, not mixed with
    // points of another block.
    assert!(row("`plain-tonic` throughput (1 replica, concurrency 16)").contains("not measured"));
    let hs = row("mtls-core ≥ 1.2× Envoy (concurrency 16)");
    assert!(hs.contains("0.91×") && hs.contains("short"), "{hs}");
    assert!(row("session resumption measured separately").contains("not measured"));
    assert!(row("soak: ≥ 5 minutes").contains("not measured"));
    let jwt = row("raw jsonwebtoken (ES256");
    assert!(jwt.contains("0.98×") && jwt.contains("**met**"), "{jwt}");
    let rss = row(
        "peak RSS: proxyless client process (3 endpoints) < one Envoy sidecar (concurrency 16)",
    );
    assert!(
        rss.contains("20.0 MiB vs 60.0 MiB") && rss.contains("**met**"),
        "{rss}"
    );
    // Not measured in this input: said so, not guessed.
    assert!(row("(3 replicas, concurrency 128)").contains("not measured"));
    assert!(row("leaf issuance").contains("not measured"));
    // Other load: 1 CPU-s of 10 available.
    assert!(md.contains("averaged 10 %"), "{md}");
    assert!(md.contains("![throughput and p99"));
}

#[test]
fn the_metrics_row_compares_a_run_with_metrics_to_one_without() {
    let mut input = input();
    let row = |md: &str| {
        md.lines()
            .find(|l| l.contains("with metrics recorded"))
            .unwrap()
            .to_owned()
    };
    assert!(row(&markdown(&input)).contains("not measured"));
    let mut on = vec![point("proxyless", "", 3, 16, 39_200.0, 200.0)];
    crate::result::mark_metrics(&mut on);
    input.points.extend(on);
    let md = markdown(&input);
    assert!(
        row(&md).contains("0.98× (39200 vs 40000 calls/s)") && row(&md).contains("**met**"),
        "{}",
        row(&md)
    );
}

#[test]
fn interleaved_ab_results_decide_the_ratio_goals() {
    let mut input = input();
    input.ab.push(crate::ab::AbResult {
        name: "leaf_issuance_p256".into(),
        ours: "mtls_certs".into(),
        baseline: "raw_rcgen".into(),
        ours_ns: 30_000.0,
        baseline_ns: 27_000.0,
        speed_ratio: 0.91,
        ratio_range: (0.8, 1.1),
        rounds: 40,
        batch: 800,
    });
    let md = markdown(&input);
    let row = md
        .lines()
        .find(|l| l.contains("leaf issuance ≥ 0.9×"))
        .unwrap();
    assert!(
        row.contains("0.91× (30.00 µs vs 27.00 µs per leaf; interleaved A/B, median of 40 rounds)")
            && row.contains("**met**"),
        "{row}"
    );
    assert!(md.contains("### Interleaved A/B"), "{md}");
    assert!(md.contains("| `leaf_issuance_p256` | `mtls_certs` 30.00 µs | `raw_rcgen` 27.00 µs | 0.91× | 0.80 – 1.10 | 40 × 800 |"), "{md}");
}

#[test]
fn chart_has_a_series_per_scenario_and_replica_count() {
    let names: Vec<String> = chart_series(&input().points)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        [
            "proxyless (3 replicas)",
            "envoy (3 replicas)",
            "plain-tonic (3 replicas)",
            "handshake: mtls-core",
            "handshake: Envoy"
        ]
    );
    assert!(chart_svg(&input().points).contains("<polyline"));
}

#[test]
fn recycling_points_get_their_table() {
    let mut input = input();
    assert!(!markdown(&input).contains("### connection recycling"));
    let mut ours = point("recycling", "proxyless", 3, 16, 1000.0, 400.0);
    ours.recycle_every_s = Some(2.0);
    let mut envoy = point("recycling", "envoy", 3, 16, 500.0, 900.0);
    envoy.recycle_every_s = Some(2.0);
    envoy.errors = 7;
    input.points.extend([ours, envoy]);
    let md = markdown(&input);
    assert!(md.contains("recycled at 2 s of age"), "{md}");
    assert!(
        md.contains("| 3 | 16 | 5000 | 0 | 800 µs | 2500 | 7 | 1.80 ms |"),
        "{md}"
    );
}

/// A run with a point of every scenario and variant the report reads, at the issues'
/// concurrencies, and every other kind of input but soak and abuse (their sections are
/// rendered by `soak` and `abuse`); points and A/B results go through their JSON form, as
/// `bench-report` reads them.
fn fixture() -> ReportInput {
    let mut points = Vec::new();
    for (i, &c) in [1usize, 16, 128].iter().enumerate() {
        let k = (i + 1) as f64;
        for replicas in [1, 3] {
            let r = replicas as f64;
            points.push(point(
                "proxyless",
                "",
                replicas,
                c,
                9000.0 * k * r,
                110.0 * k,
            ));
            points.push(point("envoy", "", replicas, c, 2500.0 * k * r, 430.0 * k));
            points.push(point(
                "plain-tonic",
                "",
                replicas,
                c,
                8800.0 * k * r,
                95.0 * k,
            ));
            points.push(point(
                "plain-tonic-mtls",
                "",
                replicas,
                c,
                8100.0 * k * r,
                120.0 * k,
            ));
        }
        for (variant, thr) in [
            ("mtls-core", 1900.0),
            ("envoy", 1500.0),
            ("mtls-core-resumed", 6100.0),
            ("envoy-resumed", 4200.0),
            ("mtls-core-hybrid", 1700.0),
            ("envoy-hybrid", 1300.0),
        ] {
            let mut p = point("handshake", variant, 1, c, thr * k, 900.0 * k);
            p.calls_per_server_cpu_s = thr * 1.5;
            points.push(p);
        }
    }
    let mut metrics = vec![point("proxyless", "", 3, 16, 52_000.0, 230.0)];
    crate::result::mark_metrics(&mut metrics);
    points.extend(metrics);
    let mut ours = point("recycling", "proxyless", 3, 16, 21_000.0, 400.0);
    ours.recycle_every_s = Some(2.0);
    let mut envoy = point("recycling", "envoy", 3, 16, 6000.0, 1700.0);
    envoy.recycle_every_s = Some(2.0);
    envoy.errors = 3;
    points.extend([ours, envoy]);
    points[0].processes[0].peak_rss_kib = 31 * 1024;
    let points: Vec<PointResult> =
        serde_json::from_str(&serde_json::to_string(&points).unwrap()).unwrap();

    let ab = vec![
        crate::ab::AbResult {
            name: "leaf_issuance_p256".into(),
            ours: "mtls_certs".into(),
            baseline: "raw_rcgen".into(),
            ours_ns: 31_000.0,
            baseline_ns: 29_500.0,
            speed_ratio: 0.95,
            ratio_range: (0.88, 1.02),
            rounds: 40,
            batch: 800,
        },
        crate::ab::AbResult {
            name: "ES256".into(),
            ours: "mtls_jwt uncached".into(),
            baseline: "jsonwebtoken::decode".into(),
            ours_ns: 48_000.0,
            baseline_ns: 50_000.0,
            speed_ratio: 1.04,
            ratio_range: (0.97, 1.11),
            rounds: 40,
            batch: 200,
        },
    ];
    let ab: Vec<crate::ab::AbResult> =
        serde_json::from_str(&serde_json::to_string(&ab).unwrap()).unwrap();
    let estimate = |group: &str, function: &str, median_ns: f64, elements| Estimate {
        group: group.into(),
        function: function.into(),
        mean_ns: median_ns * 1.02,
        mean_ci_ns: (median_ns * 0.99, median_ns * 1.05),
        median_ns,
        elements,
    };
    let estimates = vec![
        estimate("leaf_issuance_p256", "mtls_certs", 31_000.0, None),
        estimate("leaf_issuance_p256", "raw_rcgen", 30_000.0, None),
        estimate("ES256", "mtls_jwt uncached", 48_000.0, None),
        estimate("ES256", "mtls_jwt cached", 900.0, None),
        estimate("ES256", "jsonwebtoken::decode", 50_000.0, None),
        estimate("RS256", "mtls_jwt uncached", 21_000.0, None),
        estimate("RS256", "jsonwebtoken::decode", 22_000.0, None),
        estimate(
            "mtls_handshake",
            "mtls_core_spiffe_verifier",
            410_000.0,
            None,
        ),
        estimate(
            "mtls_handshake",
            "rustls_webpki_client_verifier",
            400_000.0,
            None,
        ),
        estimate("kx", "X25519MLKEM768", 95_000.0, None),
        estimate("kx", "X25519", 40_000.0, None),
        estimate(
            "unary_calls",
            "balanced_channel_3_replicas",
            1_200_000.0,
            Some(100),
        ),
        estimate(
            "unary_calls",
            "tonic_channel_1_replica",
            1_100_000.0,
            Some(100),
        ),
    ];
    ReportInput {
        machine: Machine {
            cpu_model: "Fixture CPU @ 2.0GHz".into(),
            cpus: 2,
            kernel: "6.1.0-fixture".into(),
            memory: "7.8 GiB".into(),
            envoy: "envoy 1.40.0".into(),
            rustc: "rustc 1.90.0".into(),
            commit: "abc1234".into(),
            date: "2026-01-02 03:04 UTC".into(),
        },
        points,
        estimates,
        ab,
        note: "a fixture".into(),
        chart_file: "benchmarks.svg".into(),
        command: "loadgen run --fixture".into(),
        soak: None,
        abuse: None,
        crypto: Some(crate::crypto::OpensslSpeed {
            version: "OpenSSL 3.0.0".into(),
            seconds: 1,
            p256_sign_per_s: 40_000.0,
            p256_verify_per_s: 14_000.0,
            x25519_per_s: 25_000.0,
            p256_ecdh_per_s: 17_000.0,
        }),
        layers: Some(crate::layers::LayersResult {
            rounds: 3,
            window_ms: 500,
            rows: vec![
                crate::layers::LayerRow {
                    name: "tonic TLS".into(),
                    adds: "the floor".into(),
                    client_cpu_us: 40.0,
                    server_cpu_us: 35.0,
                    latency_us: 120.0,
                    calls: 9000,
                },
                crate::layers::LayerRow {
                    name: "+ mTLS transport".into(),
                    adds: "client certificates, SPIFFE authorization".into(),
                    client_cpu_us: 41.5,
                    server_cpu_us: 37.0,
                    latency_us: 124.0,
                    calls: 8800,
                },
            ],
        }),
    }
}

/// The whole document for the fixture, byte for byte as rendered before the report was
/// split into modules (`report/fixture.md`): a change to the rendering shows here as a
/// diff of that file, to be made on purpose.
#[test]
fn the_fixture_renders_as_before() {
    let md = markdown(&fixture());
    if let Ok(path) = std::env::var("MTLS_BENCH_WRITE_FIXTURE") {
        std::fs::write(path, &md).unwrap();
    }
    let expected = include_str!("fixture.md");
    if md != expected {
        let line = md
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(md.lines().count().min(expected.lines().count()));
        panic!(
            "report/fixture.md: expected the rendering to be unchanged; first difference at \
             line {}: expected {:?}, rendered {:?}",
            line + 1,
            expected.lines().nth(line),
            md.lines().nth(line)
        );
    }
}

#[test]
fn empty_input_renders_without_panicking() {
    let md = markdown(&ReportInput::default());
    assert!(md.contains("No criterion results found."));
    assert!(!md.contains("NaN"));
}
