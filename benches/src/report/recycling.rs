//! The `recycling` scenario's table: failed calls and p99 while the servers recycle every
//! connection, proxyless next to Envoy.

use std::fmt::Write;

use super::{ReportInput, find, levels, us};

/// Appends the "connection recycling" table, if the run has `recycling` points.
pub(crate) fn section(input: &ReportInput, md: &mut String) {
    let points: Vec<_> = input
        .points
        .iter()
        .filter(|p| p.scenario == "recycling")
        .cloned()
        .collect();
    let Some(first) = points.first() else {
        return;
    };
    let every = first
        .recycle_every_s
        .map_or_else(|| "?".to_owned(), |s| format!("{s} s"));
    let _ = writeln!(md, "### connection recycling: proxyless vs Envoy\n");
    let _ = writeln!(
        md,
        "Every server-side connection is recycled at {every} of age while the calls run: the \
         proxyless replicas with `ServerOptions::max_connection_age` (GOAWAY, 10 s grace), \
         the Envoy server sidecars with `max_connection_duration` (GOAWAY, drain). Clients \
         reconnect; a call the GOAWAY refused must be re-sent, not failed.\n"
    );
    let _ = writeln!(
        md,
        "| replicas | concurrency | proxyless: calls | failed | p99 | envoy: calls | failed | p99 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in levels(&points, |p| p.replicas) {
        for c in levels(&points, |p| p.concurrency) {
            let cell = |variant: &str| {
                find(&points, "recycling", variant, r, c).map_or_else(
                    || "– | – | –".to_owned(),
                    |p| format!("{} | {} | {}", p.calls, p.errors, us(p.latency.p99_us)),
                )
            };
            let _ = writeln!(
                md,
                "| {r} | {c} | {} | {} |",
                cell("proxyless"),
                cell("envoy")
            );
        }
    }
    let _ = writeln!(md);
}
