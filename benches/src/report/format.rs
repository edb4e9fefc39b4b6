//! Finding points and writing figures: ratios (`1.23×`), µs/ms, ns, MiB.

use crate::result::PointResult;

pub(crate) fn find<'a>(
    points: &'a [PointResult],
    scenario: &str,
    variant: &str,
    replicas: usize,
    concurrency: usize,
) -> Option<&'a PointResult> {
    points.iter().find(|p| {
        p.scenario == scenario
            && p.variant == variant
            && p.replicas == replicas
            && p.concurrency == concurrency
    })
}

pub(crate) fn levels(points: &[PointResult], f: impl Fn(&PointResult) -> usize) -> Vec<usize> {
    let mut v: Vec<usize> = points.iter().map(f).collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

pub(crate) fn fx(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

pub(crate) fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn ns(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2} ms", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else {
        format!("{v:.1} ns")
    }
}
