//! The acceptance table: one [`Goal`] per row, rendered by one loop ([`table`]). The ratio
//! goals are data (`RATIO_GOALS`: issue, text, the two points compared, the figure, the
//! bound), each evaluated at every concurrency level by [`compare`]; the others are built
//! from the run by small helpers ([`Goal::when`], [`Goal::measured`]). Adding a goal is adding
//! a row, not another copy of a block.

use std::fmt::Write;

use super::{ReportInput, find, fx, levels, mib, ns, ratio, us};
use crate::abuse::{AbuseResult, TargetResult, percentile_ms};
use crate::child::Role;
use crate::criterion::find as find_estimate;
use crate::result::PointResult;

/// One row of the acceptance table: what an issue asks, what this run measured, and
/// whether it holds (`None`: not measured in this run).
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    /// The issue(s) asking for it (`"8"`, `"17"`, `"8, 17"`).
    pub issues: &'static str,
    /// The goal, in words.
    pub text: String,
    /// The figures of this run ("–" when not measured).
    pub measured: String,
    /// Whether it holds; `None` when not measured.
    pub met: Option<bool>,
}

impl Goal {
    /// A goal not (yet) measured.
    pub fn new(issues: &'static str, text: impl Into<String>) -> Self {
        Self {
            issues,
            text: text.into(),
            measured: "–".into(),
            met: None,
        }
    }

    /// The same goal with this run's figures and verdict.
    pub fn measured(mut self, measured: impl Into<String>, met: bool) -> Self {
        self.measured = measured.into();
        self.met = Some(met);
        self
    }

    /// The same goal with figures when `value` is `Some` (`render` gives the figures and
    /// the verdict), else left as not measured.
    pub fn when<T>(self, value: Option<T>, render: impl FnOnce(T) -> (String, bool)) -> Self {
        match value {
            Some(v) => {
                let (text, met) = render(v);
                self.measured(text, met)
            }
            None => self,
        }
    }
}

/// What [`compare`] divides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Successful calls per second.
    Throughput,
    /// Median latency.
    P50,
    /// Calls (handshakes) per CPU-second of the serving side.
    PerServerCpu,
}

impl Metric {
    fn value(self, p: &PointResult) -> f64 {
        match self {
            Metric::Throughput => p.throughput_per_s,
            Metric::P50 => p.latency.p50_us,
            Metric::PerServerCpu => p.calls_per_server_cpu_s,
        }
    }

    fn show(self, r: Option<f64>, a: &PointResult, b: &PointResult) -> String {
        match self {
            Metric::Throughput => format!(
                "{} ({:.0} vs {:.0} calls/s)",
                fx(r),
                a.throughput_per_s,
                b.throughput_per_s
            ),
            Metric::P50 => format!(
                "{} ({} vs {})",
                r.map_or("–".into(), |r| format!("{r:.2}")),
                us(a.latency.p50_us),
                us(b.latency.p50_us)
            ),
            Metric::PerServerCpu => format!(
                "{} ({:.0} vs {:.0})",
                fx(r),
                a.calls_per_server_cpu_s,
                b.calls_per_server_cpu_s
            ),
        }
    }
}

/// The bound a ratio must keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// `a / b ≥` this.
    AtLeast(f64),
    /// `a / b ≤` this.
    AtMost(f64),
}

impl Bound {
    fn holds(self, r: f64) -> bool {
        match self {
            Bound::AtLeast(floor) => r >= floor,
            Bound::AtMost(ceiling) => r <= ceiling,
        }
    }
}

/// A goal on `metric(a) / metric(b)`, two points of the same block (measured back to back).
pub fn compare(
    issues: &'static str,
    text: impl Into<String>,
    a: Option<&PointResult>,
    b: Option<&PointResult>,
    metric: Metric,
    bound: Bound,
) -> Goal {
    Goal::new(issues, text).when(a.zip(b), |(a, b)| {
        let r = ratio(metric.value(a), metric.value(b));
        (metric.show(r, a, b), r.is_some_and(|r| bound.holds(r)))
    })
}

/// Soak goals: at least this long (seconds) at at least this concurrency.
pub const SOAK_MIN_S: f64 = 300.0;
/// Soak goals: concurrency.
pub const SOAK_MIN_CONCURRENCY: usize = 128;
/// "RSS slope ≈ 0": the slope over the soak's length grows no process by more than this
/// share of its RSS at the first sample used.
pub const SOAK_RSS_GROWTH_MAX: f64 = 0.05;
/// "fd slope ≈ 0": at most this many open fds per minute, in either direction.
pub const SOAK_FD_SLOPE_MAX: f64 = 0.5;
/// Accept-path flood: an honest new connection + call completes within this (worst trial).
pub const ACCEPT_FLOOD_MAX_MS: f64 = 200.0;
/// Handshake flood: honest p99 during the flood within this factor of the baseline p99.
pub const HANDSHAKE_FLOOD_P99_GROWTH_MAX: f64 = 2.0;

fn target<'a>(abuse: Option<&'a AbuseResult>, name: &str) -> Option<&'a TargetResult> {
    abuse?.targets.iter().find(|t| t.target == name)
}

fn worst(ms: &[f64]) -> f64 {
    percentile_ms(&mut ms.to_vec(), 100.0)
}

fn p99_growth(t: &TargetResult) -> Option<f64> {
    ratio(
        t.calls_flooded.latency.p99_us,
        t.calls_baseline.latency.p99_us,
    )
}

/// Peak RSS of the proxyless client process (3 endpoints) and of one Envoy sidecar (the
/// client-side Envoy of the `envoy` scenario, 3 replicas), at concurrency `c`.
fn rss_pair(points: &[PointResult], c: usize) -> Option<(u64, u64)> {
    let client = find(points, "proxyless", "", 3, c)?.max_rss_kib(Role::Client)?;
    let sidecar = find(points, "envoy", "", 3, c)?.max_rss_kib(Role::ClientProxy)?;
    Some((client, sidecar))
}

/// One point of a run: scenario, variant and replica count (the concurrency is the row's).
#[derive(Clone, Copy, Debug)]
struct Side {
    scenario: &'static str,
    variant: &'static str,
    replicas: usize,
}

const fn side(scenario: &'static str, variant: &'static str, replicas: usize) -> Side {
    Side {
        scenario,
        variant,
        replicas,
    }
}

/// A goal on `metric(ours) / metric(base)` at one concurrency level: what the issue asks
/// (`text` and `bound` may depend on the level), which two points of the same block, and the
/// figure compared.
struct RatioGoal {
    issues: &'static str,
    text: fn(usize) -> String,
    ours: Side,
    base: Side,
    metric: Metric,
    bound: fn(usize) -> Bound,
    /// Only at this concurrency (else at every level).
    only_at: Option<usize>,
}

impl RatioGoal {
    fn at(&self, pts: &[PointResult], c: usize) -> Goal {
        let point = |s: Side| find(pts, s.scenario, s.variant, s.replicas, c);
        compare(
            self.issues,
            (self.text)(c),
            point(self.ours),
            point(self.base),
            self.metric,
            (self.bound)(c),
        )
    }
}

/// `plain-tonic` floor over 3 replicas: 1.05× (0.95× at concurrency 1, and over 1 replica).
fn plain_tonic_floor(replicas: usize, c: usize) -> f64 {
    if replicas == 3 && c != 1 { 1.05 } else { 0.95 }
}

fn plain_tonic_text(replicas: usize, c: usize) -> String {
    let how = if replicas == 1 {
        "1 replica".to_owned()
    } else {
        format!("{replicas} replicas, tonic `balance_list`")
    };
    format!(
        "`proxyless` ≥ {:.2}× `plain-tonic` throughput ({how}, concurrency {c})",
        plain_tonic_floor(replicas, c)
    )
}

/// Issue 17's fair floor over `REPLICAS` replicas: `proxyless` against `plain-tonic` from
/// the same block, at every concurrency level.
const fn plain_tonic_goal<const REPLICAS: usize>() -> RatioGoal {
    RatioGoal {
        issues: "17",
        text: |c| plain_tonic_text(REPLICAS, c),
        ours: side("proxyless", "", REPLICAS),
        base: side("plain-tonic", "", REPLICAS),
        metric: Metric::Throughput,
        bound: |c| Bound::AtLeast(plain_tonic_floor(REPLICAS, c)),
        only_at: None,
    }
}

/// The ratio goals, in the table's order: each group's rows at every concurrency level, the
/// levels in order, then the next group.
const RATIO_GOALS: &[&[RatioGoal]] = &[
    // Issue 8 (kept by 17: no regression).
    &[
        RatioGoal {
            issues: "8, 17",
            text: |c| format!("`proxyless` throughput ≥ 3× `envoy` (3 replicas, concurrency {c})"),
            ours: side("proxyless", "", 3),
            base: side("envoy", "", 3),
            metric: Metric::Throughput,
            bound: |_| Bound::AtLeast(3.0),
            only_at: None,
        },
        RatioGoal {
            issues: "8, 17",
            text: |c| format!("`proxyless` p50 ≤ ⅓ of `envoy` (3 replicas, concurrency {c})"),
            ours: side("proxyless", "", 3),
            base: side("envoy", "", 3),
            metric: Metric::P50,
            bound: |_| Bound::AtMost(1.0 / 3.0),
            only_at: None,
        },
    ],
    // Issue 15: the libraries' metrics recorded (MTLS_BENCH_METRICS=1) cost ≤ 3 %.
    &[RatioGoal {
        issues: "15",
        text: |_| {
            "`proxyless` throughput with metrics recorded (`MTLS_BENCH_METRICS=1`) ≥ 0.97× \
             without (3 replicas, concurrency 16)"
                .to_owned()
        },
        ours: side("proxyless", crate::result::METRICS_VARIANT, 3),
        base: side("proxyless", "", 3),
        metric: Metric::Throughput,
        bound: |_| Bound::AtLeast(0.97),
        only_at: Some(16),
    }],
    // Issue 17: fair floors, each pair from the same block.
    &[plain_tonic_goal::<1>(), plain_tonic_goal::<3>()],
    &[RatioGoal {
        issues: "17",
        text: |c| {
            format!(
                "`proxyless` ≥ 1.0× `plain-tonic-mtls` throughput (3 replicas, concurrency {c}; \
                 same security, hand-rolled with tonic)"
            )
        },
        ours: side("proxyless", "", 3),
        base: side("plain-tonic-mtls", "", 3),
        metric: Metric::Throughput,
        bound: |_| Bound::AtLeast(1.0),
        only_at: None,
    }],
    &[RatioGoal {
        issues: "8, 17",
        text: |c| {
            format!(
                "full handshakes per server CPU-second: mtls-core ≥ 1.2× Envoy (concurrency {c})"
            )
        },
        ours: side("handshake", "mtls-core", 1),
        base: side("handshake", "envoy", 1),
        metric: Metric::PerServerCpu,
        bound: |_| Bound::AtLeast(1.2),
        only_at: None,
    }],
];

/// Every goal of the issues this report answers, with this run's figures.
pub fn goals(input: &ReportInput) -> Vec<Goal> {
    let pts = &input.points;
    // The issues' concurrencies always get a row (not measured, if absent), and any other
    // level measured too.
    let mut cs = levels(pts, |p| p.concurrency);
    cs.extend([1, 16, 128]);
    cs.sort_unstable();
    cs.dedup();
    let mut out = Vec::new();

    // The ratio goals: one row of RATIO_GOALS each, at every concurrency level (or one).
    for group in RATIO_GOALS {
        for &c in &cs {
            for goal in *group {
                if goal.only_at.is_some_and(|at| at != c) {
                    continue;
                }
                out.push(goal.at(pts, c));
            }
        }
    }
    let resumed: Vec<(&PointResult, &PointResult)> = cs
        .iter()
        .filter_map(|&c| {
            find(pts, "handshake", "mtls-core-resumed", 1, c).zip(find(
                pts,
                "handshake",
                "envoy-resumed",
                1,
                c,
            ))
        })
        .collect();
    out.push(
        Goal::new(
            "17",
            "session resumption measured separately from full handshakes (mtls-core vs Envoy, \
             resumed handshakes per server CPU-second)",
        )
        .when((!resumed.is_empty()).then_some(resumed), |rows| {
            let text = rows
                .iter()
                .map(|(a, b)| {
                    format!(
                        "c={}: {}",
                        a.concurrency,
                        fx(ratio(a.calls_per_server_cpu_s, b.calls_per_server_cpu_s))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            (format!("{text} (table below)"), true)
        }),
    );
    out.push(
        Goal::new(
            "17, 22",
            "crypto bound per handshake (P-256 sign + verify, X25519, ML-KEM-768; `openssl speed` \
             and criterion on this machine)",
        )
        .when(input.crypto.as_ref(), |c| {
            let bound = c.classical_bound_per_s();
            (
                format!(
                    "at most {bound:.0} full handshakes per server CPU-second (classical; table below)"
                ),
                bound.is_finite() && bound > 0.0,
            )
        }),
    );
    out.push(
        Goal::new(
            "22",
            "classical vs hybrid (X25519MLKEM768) handshake table, ours vs Envoy, with hello sizes",
        )
        .when(
            cs.iter().find_map(|&c| {
                find(pts, "handshake", "mtls-core-hybrid", 1, c).zip(find(
                    pts,
                    "handshake",
                    "envoy-hybrid",
                    1,
                    c,
                ))
            }),
            |(a, b)| {
                (
                    format!(
                        "hybrid, concurrency {}: {} per server CPU-s (mtls-core / Envoy)",
                        a.concurrency,
                        fx(ratio(a.calls_per_server_cpu_s, b.calls_per_server_cpu_s))
                    ),
                    true,
                )
            },
        ),
    );
    out.push(
        Goal::new(
            "17",
            "per-layer cost table at concurrency 1 (transport, balancer, token header, JWT \
             layer, authz layer)",
        )
        .when(input.layers.as_ref().filter(|l| !l.rows.is_empty()), |l| {
            (
                format!(
                    "{} configurations, {} rounds (table below)",
                    l.rows.len(),
                    l.rounds
                ),
                true,
            )
        }),
    );

    // Issue 19: hostile load.
    let abuse = input.abuse.as_ref();
    let (ours, envoy) = (target(abuse, "proxyless"), target(abuse, "envoy"));
    out.push(
        Goal::new(
            "19",
            format!(
                "with idle + slowloris + garbage connections held open, an honest new connection \
                 and call complete within {ACCEPT_FLOOD_MAX_MS:.0} ms (worst trial)"
            ),
        )
        .when(ours, |t| {
            let w = worst(&t.connect_flooded_ms);
            (
                format!(
                    "{w:.1} ms worst of {} ({} connections held; Envoy in the same run: {})",
                    t.connect_flooded_ms.len(),
                    t.flood_connections,
                    envoy.map_or("–".into(), |e| format!(
                        "{:.1} ms",
                        worst(&e.connect_flooded_ms)
                    ))
                ),
                w <= ACCEPT_FLOOD_MAX_MS,
            )
        }),
    );
    out.push(
        Goal::new(
            "19",
            "… on par with Envoy under the same flood (ours worst ≤ 1.5× Envoy's worst + 10 ms)",
        )
        .when(ours.zip(envoy), |(o, e)| {
            let (wo, we) = (worst(&o.connect_flooded_ms), worst(&e.connect_flooded_ms));
            (format!("{wo:.1} ms vs {we:.1} ms"), wo <= 1.5 * we + 10.0)
        }),
    );
    out.push(
        Goal::new(
            "19",
            format!(
                "handshake flood from one source: honest callers from other sources keep p99 \
                 within {HANDSHAKE_FLOOD_P99_GROWTH_MAX:.0}× of baseline"
            ),
        )
        .when(
            ours.and_then(|t| p99_growth(t).map(|g| (t, g))),
            |(t, g)| {
                (
                    format!(
                        "{} ({} → {} under {:.0} handshakes/s; Envoy: {})",
                        fx(Some(g)),
                        us(t.calls_baseline.latency.p99_us),
                        us(t.calls_flooded.latency.p99_us),
                        t.flood_handshakes_per_s,
                        envoy
                            .and_then(p99_growth)
                            .map_or("–".into(), |g| fx(Some(g)))
                    ),
                    g <= HANDSHAKE_FLOOD_P99_GROWTH_MAX,
                )
            },
        ),
    );
    let soak = input.soak.as_ref();
    out.push(
        Goal::new(
            "19",
            format!(
                "soak: ≥ {:.0} minutes at concurrency {SOAK_MIN_CONCURRENCY}, 0 errors",
                SOAK_MIN_S / 60.0
            ),
        )
        .when(soak, |s| {
            let p = &s.point;
            (
                format!(
                    "{:.0} s at concurrency {} over {} replicas: {} calls, {} errors",
                    p.duration_s, p.concurrency, p.replicas, p.calls, p.errors
                ),
                p.duration_s >= SOAK_MIN_S - 1.0
                    && p.concurrency >= SOAK_MIN_CONCURRENCY
                    && p.errors == 0
                    && p.calls > 0,
            )
        }),
    );
    out.push(
        Goal::new(
            "19",
            format!(
                "soak: RSS slope ≈ 0 (no process grows by more than {:.0} % of its RSS over the \
                 soak at its slope) and fd slope ≈ 0 (≤ {SOAK_FD_SLOPE_MAX} per minute)",
                SOAK_RSS_GROWTH_MAX * 100.0
            ),
        )
        .when(soak.filter(|s| !s.trends.is_empty()), |s| {
            let minutes = (s.point.duration_s + s.point.warmup_s - s.slopes_from_s).max(0.0) / 60.0;
            let worst_rss = s
                .trends
                .iter()
                .map(|t| t.rss_kib_per_min * minutes / (t.rss_first_kib.max(1) as f64))
                .fold(f64::MIN, f64::max);
            let worst_fd = s
                .trends
                .iter()
                .map(|t| t.fds_per_min.abs())
                .fold(0.0, f64::max);
            let largest = s
                .trends
                .iter()
                .max_by(|a, b| a.rss_kib_per_min.total_cmp(&b.rss_kib_per_min))
                .map_or(String::new(), |t| {
                    format!("; steepest RSS: {} {:+.1} KiB/min of {}", t.name, t.rss_kib_per_min, mib(t.rss_first_kib))
                });
            (
                format!(
                    "largest RSS growth at slope {:+.2} % over {minutes:.1} min, largest |fd slope| {worst_fd:.2}/min{largest}",
                    worst_rss * 100.0
                ),
                worst_rss <= SOAK_RSS_GROWTH_MAX && worst_fd <= SOAK_FD_SLOPE_MAX,
            )
        }),
    );

    // Issue 8: the micro-benchmark ratios.
    let micro: [(&str, &str, &str, &str, &str, f64, &str); 3] = [
        (
            "JWT validation ≥ 0.95× raw jsonwebtoken (ES256, no token cache)",
            "jwt_es256_uncached",
            "ES256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
            0.95,
            "validation",
        ),
        (
            "JWT validation ≥ 0.95× raw jsonwebtoken (RS256, no token cache)",
            "jwt_rs256_uncached",
            "RS256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
            0.95,
            "validation",
        ),
        (
            "leaf issuance ≥ 0.9× raw rcgen (P-256)",
            "leaf_issuance_p256",
            "leaf_issuance_p256",
            "mtls_certs",
            "raw_rcgen",
            0.9,
            "leaf",
        ),
    ];
    for (text, ab_name, group, ours, base, floor, unit) in micro {
        let criterion = find_estimate(&input.estimates, group, ours)
            .zip(find_estimate(&input.estimates, group, base))
            .and_then(|(o, b)| ratio(b.median_ns, o.median_ns));
        let goal = Goal::new("8", text);
        out.push(match input.ab.iter().find(|a| a.name == ab_name) {
            Some(a) => goal.measured(
                format!(
                    "{} ({} vs {} per {unit}; interleaved A/B, median of {} rounds{})",
                    fx(Some(a.speed_ratio)),
                    ns(a.ours_ns),
                    ns(a.baseline_ns),
                    a.rounds,
                    criterion.map_or(String::new(), |c| format!("; criterion medians: {c:.2}×"))
                ),
                a.speed_ratio >= floor,
            ),
            None => goal.when(criterion, |c| {
                (format!("{c:.2}× (criterion medians)"), c >= floor)
            }),
        });
    }
    for &c in &cs {
        out.push(
            Goal::new(
                "8",
                format!(
                    "peak RSS: proxyless client process (3 endpoints) < one Envoy sidecar \
                     (concurrency {c})"
                ),
            )
            .when(rss_pair(pts, c), |(a, b)| {
                (format!("{} vs {}", mib(a), mib(b)), a < b)
            }),
        );
    }
    out.push(Goal::new("8", "the bench run is not part of the default test command; a smoke run is").measured(
        "`./ci.sh` runs `benches/tests/smoke.rs` (every scenario, 1 point, ~0.5 s each); the full run is `./scripts/bench.sh`",
        true,
    ));
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "short",
        None => "not measured",
    }
}

/// The acceptance table of `goals`.
pub fn table(goals: &[Goal], md: &mut String) {
    let _ = writeln!(md, "| goal | issue | measured in this run | verdict |");
    let _ = writeln!(md, "|---|---|---|---|");
    for g in goals {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            g.text,
            g.issues,
            g.measured,
            verdict(g.met)
        );
    }
}
