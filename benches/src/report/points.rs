//! "Every point": one row per load generator point, with CPU and memory per role.

use std::fmt::Write;

use super::ReportInput;
use super::format::{mib, us};
use crate::child::Role;
use crate::result::PointResult;

/// CPU s per 1k calls of the processes whose role passes `pred`, or "–" if there are none.
fn cpu_of(p: &PointResult, pred: impl Fn(Role) -> bool) -> String {
    let mut matched = p.processes.iter().filter(|u| pred(u.role)).peekable();
    if matched.peek().is_none() {
        return "–".into();
    }
    format!("{:.3}", matched.map(|u| u.cpu_s_per_1k_calls).sum::<f64>())
}

pub(super) fn all_points(input: &ReportInput, md: &mut String) {
    let _ = writeln!(
        md,
        "| scenario | replicas | concurrency | calls/s | p50 | p90 | p99 | max | errors | CPU s / 1k calls: client | servers | proxies | total | peak RSS: client | largest server | largest proxy | other load |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &input.points {
        let name = if p.variant.is_empty() {
            p.scenario.clone()
        } else {
            format!("{} ({})", p.scenario, p.variant)
        };
        let rss = |roles: &[Role]| {
            p.processes
                .iter()
                .filter(|u| roles.contains(&u.role))
                .map(|u| u.peak_rss_kib)
                .max()
                .map_or("–".into(), mib)
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.0} % |",
            p.replicas,
            p.concurrency,
            p.throughput_per_s,
            us(p.latency.p50_us),
            us(p.latency.p90_us),
            us(p.latency.p99_us),
            us(p.latency.max_us),
            p.errors,
            cpu_of(p, |r| r == Role::Client),
            cpu_of(p, |r| r == Role::Server),
            cpu_of(p, |r| matches!(r, Role::ClientProxy | Role::ServerProxy)),
            p.cpu_s_per_1k_calls_total,
            rss(&[Role::Client]),
            rss(&[Role::Server]),
            rss(&[Role::ClientProxy, Role::ServerProxy]),
            p.other_load() * 100.0,
        );
    }
    let _ = writeln!(md);
}
