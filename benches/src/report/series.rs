//! The chart: a series per scenario and replica count, throughput and p99 against
//! concurrency.

use super::format::levels;
use crate::chart::{self, Series};
use crate::result::PointResult;

/// The chart's series: throughput and p99 against concurrency.
pub fn chart_series(points: &[PointResult]) -> Vec<Series> {
    let mut out = Vec::new();
    let mut add = |name: String, color: &str, dashed: bool, f: &dyn Fn(&PointResult) -> bool| {
        let pts: Vec<(f64, f64, f64)> = points
            .iter()
            .filter(|p| f(p))
            .map(|p| (p.concurrency as f64, p.throughput_per_s, p.latency.p99_us))
            .collect();
        if !pts.is_empty() {
            out.push(Series {
                name,
                color: color.to_owned(),
                dashed,
                points: pts,
            });
        }
    };
    let blues = ["#9ecae1", "#3182bd", "#08519c"];
    let reds = ["#fc9272", "#de2d26", "#a50f15"];
    let greys = ["#bdbdbd", "#7f7f7f", "#404040"];
    let purples = ["#bcbddc", "#807dba", "#54278f"];
    let replicas = levels(points, |p| p.replicas);
    for (i, r) in replicas.iter().enumerate() {
        let k = i.min(2);
        let plural = if *r == 1 { "replica" } else { "replicas" };
        add(format!("proxyless ({r} {plural})"), blues[k], false, &|p| {
            p.scenario == "proxyless" && p.replicas == *r
        });
        add(format!("envoy ({r} {plural})"), reds[k], false, &|p| {
            p.scenario == "envoy" && p.replicas == *r
        });
        add(
            format!("plain-tonic ({r} {plural})"),
            greys[k],
            false,
            &|p| p.scenario == "plain-tonic" && p.replicas == *r,
        );
        add(
            format!("plain-tonic-mtls ({r} {plural})"),
            purples[k],
            false,
            &|p| p.scenario == "plain-tonic-mtls" && p.replicas == *r,
        );
    }
    add("handshake: mtls-core".into(), "#31a354", true, &|p| {
        p.scenario == "handshake" && p.variant == "mtls-core"
    });
    add("handshake: Envoy".into(), "#e6550d", true, &|p| {
        p.scenario == "handshake" && p.variant == "envoy"
    });
    out
}

/// The chart as SVG.
pub fn chart_svg(points: &[PointResult]) -> String {
    let xs: Vec<f64> = levels(points, |p| p.concurrency)
        .into_iter()
        .map(|c| c as f64)
        .collect();
    chart::render(
        "mtls benchmarks: throughput and p99 vs concurrency",
        &xs,
        &chart_series(points),
    )
}
