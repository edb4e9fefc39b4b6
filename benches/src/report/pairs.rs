//! The pairwise tables: each compares points of one block (measured back to back).

use std::fmt::Write;

use super::{HYBRID_SUFFIX, ReportInput, find, fx, levels, mib, ratio, us};
use crate::child::Role;
use crate::result::PointResult;

pub(super) fn pairwise(input: &ReportInput, md: &mut String) {
    let pts = &input.points;
    let cs = levels(pts, |p| p.concurrency);
    let rs = levels(pts, |p| p.replicas);

    if pts
        .iter()
        .any(|p| p.scenario == "proxyless" || p.scenario == "envoy")
    {
        let _ = writeln!(md, "### proxyless vs envoy\n");
        let _ = writeln!(
            md,
            "| replicas | concurrency | proxyless calls/s | envoy calls/s | throughput ratio | proxyless p50 | envoy p50 | p50 ratio | proxyless p99 | envoy p99 | CPU s / 1k calls proxyless | envoy | CPU ratio (envoy / proxyless) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (r, c, a, b) in same_block(pts, "proxyless", "envoy") {
            let _ = writeln!(
                md,
                "| {r} | {c} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {} | {} | {:.3} | {:.3} | {} |",
                a.throughput_per_s,
                b.throughput_per_s,
                fx(ratio(a.throughput_per_s, b.throughput_per_s)),
                us(a.latency.p50_us),
                us(b.latency.p50_us),
                ratio(a.latency.p50_us, b.latency.p50_us).unwrap_or(f64::NAN),
                us(a.latency.p99_us),
                us(b.latency.p99_us),
                a.cpu_s_per_1k_calls_total,
                b.cpu_s_per_1k_calls_total,
                fx(ratio(
                    b.cpu_s_per_1k_calls_total,
                    a.cpu_s_per_1k_calls_total
                )),
            );
        }
        let _ = writeln!(md);
    }

    if pts
        .iter()
        .any(|p| p.scenario == "plain-tonic" || p.scenario == "plain-tonic-mtls")
    {
        let _ = writeln!(
            md,
            "### proxyless vs tonic by hand: `plain-tonic` (the floor) and `plain-tonic-mtls` (same security)\n"
        );
        let _ = writeln!(
            md,
            "Same replica count, same block (measured back to back). Over more than one replica \
             both tonic baselines use `Channel::balance_list`.\n"
        );
        let _ = writeln!(
            md,
            "| replicas | concurrency | proxyless calls/s | plain-tonic | ratio | plain-tonic-mtls | ratio | CPU s / 1k: proxyless | plain-tonic | plain-tonic-mtls | p50: proxyless | plain-tonic | plain-tonic-mtls |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &r in &rs {
            for &c in &cs {
                let px = find(pts, "proxyless", "", r, c);
                let pl = find(pts, "plain-tonic", "", r, c);
                let pm = find(pts, "plain-tonic-mtls", "", r, c);
                if pl.is_none() && pm.is_none() {
                    continue;
                }
                let thr = |p: Option<&PointResult>| {
                    p.map_or("–".into(), |p| format!("{:.0}", p.throughput_per_s))
                };
                let vs = |b: Option<&PointResult>| {
                    fx(px
                        .zip(b)
                        .and_then(|(a, b)| ratio(a.throughput_per_s, b.throughput_per_s)))
                };
                let cpu = |p: Option<&PointResult>| {
                    p.map_or("–".into(), |p| {
                        format!("{:.3}", p.cpu_s_per_1k_calls_total)
                    })
                };
                let p50 =
                    |p: Option<&PointResult>| p.map_or("–".into(), |p| us(p.latency.p50_us));
                let _ = writeln!(
                    md,
                    "| {r} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    thr(px),
                    thr(pl),
                    vs(pl),
                    thr(pm),
                    vs(pm),
                    cpu(px),
                    cpu(pl),
                    cpu(pm),
                    p50(px),
                    p50(pl),
                    p50(pm),
                );
            }
        }
        let _ = writeln!(md);
    }

    if pts
        .iter()
        .any(|p| p.scenario == "handshake" && p.variant.ends_with(HYBRID_SUFFIX))
    {
        let _ = writeln!(
            md,
            "### handshakes: classical X25519 vs hybrid X25519MLKEM768, mtls-core vs Envoy\n"
        );
        let _ = writeln!(
            md,
            "The client offers one group (X25519, or X25519MLKEM768 with its X25519 share) so both servers do the same work. Server CPU per handshake; *cost* = classical / hybrid handshakes per CPU-second.\n"
        );
        let _ = writeln!(
            md,
            "| concurrency | mtls-core X25519 per CPU-s | mtls-core hybrid per CPU-s | mtls-core cost | Envoy X25519 per CPU-s | Envoy hybrid per CPU-s | Envoy cost | hybrid: mtls-core / Envoy |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for &c in &cs {
            let get = |v: &str| find(pts, "handshake", v, 1, c);
            let (Some(oc), Some(oh), Some(ec), Some(eh)) = (
                get("mtls-core"),
                get(&format!("mtls-core{HYBRID_SUFFIX}")),
                get("envoy"),
                get(&format!("envoy{HYBRID_SUFFIX}")),
            ) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {c} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {} | {} |",
                oc.calls_per_server_cpu_s,
                oh.calls_per_server_cpu_s,
                fx(ratio(oc.calls_per_server_cpu_s, oh.calls_per_server_cpu_s)),
                ec.calls_per_server_cpu_s,
                eh.calls_per_server_cpu_s,
                fx(ratio(ec.calls_per_server_cpu_s, eh.calls_per_server_cpu_s)),
                fx(ratio(oh.calls_per_server_cpu_s, eh.calls_per_server_cpu_s)),
            );
        }
        let _ = writeln!(md);
    }

    hello_sizes(input, md);
    crypto_bound(input, md);
    resumed(input, md);

    if pts.iter().any(|p| p.scenario == "handshake") {
        let _ = writeln!(md, "### handshakes: mtls-core vs Envoy\n");
        let _ = writeln!(
            md,
            "| concurrency | mtls-core handshakes/s | Envoy handshakes/s | mtls-core per server CPU-s | Envoy per server CPU-s | ratio | mtls-core p50 | Envoy p50 | server peak RSS mtls-core | Envoy |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for &c in &cs {
            let (Some(a), Some(b)) = (
                find(pts, "handshake", "mtls-core", 1, c),
                find(pts, "handshake", "envoy", 1, c),
            ) else {
                continue;
            };
            let rss = |p: &PointResult| {
                p.processes
                    .iter()
                    .filter(|u| u.role.is_server_side())
                    .map(|u| u.peak_rss_kib)
                    .max()
                    .map_or("–".into(), mib)
            };
            let _ = writeln!(
                md,
                "| {c} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                a.throughput_per_s,
                b.throughput_per_s,
                a.calls_per_server_cpu_s,
                b.calls_per_server_cpu_s,
                fx(ratio(a.calls_per_server_cpu_s, b.calls_per_server_cpu_s)),
                us(a.latency.p50_us),
                us(b.latency.p50_us),
                rss(a),
                rss(b),
            );
        }
        let _ = writeln!(md);
    }

    if pts.iter().any(|p| p.scenario == "proxyless") && pts.iter().any(|p| p.scenario == "envoy") {
        let _ = writeln!(
            md,
            "### memory: proxyless client vs Envoy sidecars (peak RSS)\n"
        );
        let _ = writeln!(
            md,
            "| replicas | concurrency | proxyless client process | envoy scenario: client process | client Envoy | largest server Envoy | largest replica |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (r, c, a, b) in same_block(pts, "proxyless", "envoy") {
            let m = |p: &PointResult, role| p.max_rss_kib(role).map_or("–".into(), mib);
            let _ = writeln!(
                md,
                "| {r} | {c} | {} | {} | {} | {} | {} |",
                m(a, Role::Client),
                m(b, Role::Client),
                m(b, Role::ClientProxy),
                m(b, Role::ServerProxy),
                m(b, Role::Server),
            );
        }
        let _ = writeln!(md);
    }
}

/// The per-layer cost table (`loadgen layers`).
pub(super) fn layers(input: &ReportInput, md: &mut String) {
    let Some(l) = input.layers.as_ref().filter(|l| !l.rows.is_empty()) else {
        return;
    };
    let _ = writeln!(
        md,
        "### per-layer cost at concurrency 1 (`loadgen layers`)\n\nOne replica, one caller; \
         each configuration adds one layer to the one above; {} interleaved rounds of {} ms per \
         configuration, medians over rounds. Δ = this row minus the row above.\n",
        l.rounds, l.window_ms
    );
    md.push_str(&l.markdown());
    let _ = writeln!(md);
}

/// `(replicas, concurrency, a, b)` for every block where both scenarios were measured
/// (plain variants), in replica then concurrency order.
fn same_block<'a>(
    pts: &'a [PointResult],
    a: &'a str,
    b: &'a str,
) -> impl Iterator<Item = (usize, usize, &'a PointResult, &'a PointResult)> + 'a {
    let cs = levels(pts, |p| p.concurrency);
    levels(pts, |p| p.replicas).into_iter().flat_map(move |r| {
        let cs = cs.clone();
        cs.into_iter()
            .filter_map(move |c| Some((r, c, find(pts, a, "", r, c)?, find(pts, b, "", r, c)?)))
    })
}

/// ClientHello / server flight sizes of each handshake variant (one connection each).
fn hello_sizes(input: &ReportInput, md: &mut String) {
    let mut seen = Vec::new();
    for p in &input.points {
        if let Some(h) = &p.hello
            && p.scenario == "handshake"
            && !seen.iter().any(|(v, _): &(String, _)| *v == p.variant)
        {
            seen.push((p.variant.clone(), h.clone()));
        }
    }
    if seen.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### handshake bytes on the wire\n\nOne connection per variant, counted at the client's \
         socket: *ClientHello* = bytes written before the server's first byte; *server flight* = \
         bytes read before the client writes again (ServerHello … Finished, certificate \
         included).\n"
    );
    let _ = writeln!(
        md,
        "| variant | group | handshake | ClientHello bytes | server flight bytes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (variant, h) in seen {
        let _ = writeln!(
            md,
            "| {variant} | {} | {} | {} | {} |",
            h.group, h.kind, h.client_hello, h.server_flight
        );
    }
    let _ = writeln!(md);
}

/// The physical limit: public-key work per handshake from `openssl speed` (and criterion's
/// server-side key exchange for the hybrid group), beside what each server reached.
fn crypto_bound(input: &ReportInput, md: &mut String) {
    let Some(c) = &input.crypto else {
        return;
    };
    let kx =
        |f: &str| crate::criterion::find(&input.estimates, "kx_server", f).map(|e| e.median_ns);
    let hybrid_extra_s = kx("X25519MLKEM768")
        .zip(kx("X25519"))
        .map(|(h, x)| (h - x) / 1e9);
    let _ = writeln!(
        md,
        "### crypto bound per handshake (this machine)\n\n`{}` (`openssl speed -mr -seconds {}`, \
         operations per CPU-second): P-256 ECDSA sign {:.0}/s, verify {:.0}/s; X25519 {:.0}/s; \
         P-256 ECDH {:.0}/s. A server-side mTLS handshake with P-256 certificates does 1 sign \
         (CertificateVerify), 2 verifies (the client leaf's signature, the client's \
         CertificateVerify) and 2 X25519 operations (ephemeral key, shared secret): **at most \
         {:.0} full handshakes per server CPU-second** classical{}. Server-side key exchange \
         alone (criterion `kx_server`, aws-lc-rs through rustls): {}.\n",
        c.version,
        c.seconds,
        c.p256_sign_per_s,
        c.p256_verify_per_s,
        c.x25519_per_s,
        c.p256_ecdh_per_s,
        c.classical_bound_per_s(),
        hybrid_extra_s.map_or(String::new(), |e| format!(
            ", {:.0} with X25519MLKEM768 (adds {:.0} µs of server key exchange)",
            c.bound_per_s_with(e),
            e * 1e6
        )),
        ["X25519", "P-256", "MLKEM768", "X25519MLKEM768"]
            .iter()
            .map(|g| format!(
                "{g} {}",
                kx(g).map_or("–".into(), |ns| format!("{:.1} µs", ns / 1000.0))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cs = levels(&input.points, |p| p.concurrency);
    let rows: Vec<String> = cs
        .iter()
        .filter_map(|&c_| {
            let ours = find(&input.points, "handshake", "mtls-core", 1, c_)?;
            let envoy = find(&input.points, "handshake", "envoy", 1, c_);
            let bound = c.classical_bound_per_s();
            Some(format!(
                "| {c_} | {:.0} | {:.0} % | {} | {} |",
                bound,
                ours.calls_per_server_cpu_s / bound * 100.0,
                envoy.map_or("–".into(), |e| format!(
                    "{:.0} %",
                    e.calls_per_server_cpu_s / bound * 100.0
                )),
                fx(envoy
                    .and_then(|e| ratio(ours.calls_per_server_cpu_s, e.calls_per_server_cpu_s)))
            ))
        })
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            md,
            "| concurrency | bound (classical) per CPU-s | mtls-core reaches | Envoy reaches | mtls-core / Envoy |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for r in rows {
            let _ = writeln!(md, "{r}");
        }
        let _ = writeln!(md);
    }
}

/// Resumed handshakes (session tickets), measured apart from full ones.
fn resumed(input: &ReportInput, md: &mut String) {
    let pts = &input.points;
    let cs = levels(pts, |p| p.concurrency);
    let rows: Vec<String> = cs
        .iter()
        .filter_map(|&c| {
            let (a, b) = (
                find(pts, "handshake", "mtls-core-resumed", 1, c)?,
                find(pts, "handshake", "envoy-resumed", 1, c)?,
            );
            let full = find(pts, "handshake", "mtls-core", 1, c);
            let share = |p: &PointResult| {
                p.hello
                    .as_ref()
                    .and_then(|h| h.resumed_share)
                    .map_or("–".into(), |s| format!("{:.0} %", s * 100.0))
            };
            Some(format!(
                "| {c} | {:.0} | {:.0} | {} | {} | {} | {} | {} / {} |",
                a.calls_per_server_cpu_s,
                b.calls_per_server_cpu_s,
                fx(ratio(a.calls_per_server_cpu_s, b.calls_per_server_cpu_s)),
                full.map_or("–".into(), |f| fx(ratio(
                    a.calls_per_server_cpu_s,
                    f.calls_per_server_cpu_s
                ))),
                us(a.latency.p50_us),
                us(b.latency.p50_us),
                share(a),
                share(b),
            ))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### resumed handshakes: mtls-core vs Envoy\n\nBoth servers issue TLS 1.3 session \
         tickets (mtls-core: `ServerConfigBuilder::resumption(Resumption::Tickets)`, Envoy: its \
         default stateless tickets); the client resumes from the last ticket on each new \
         connection (`ClientConfigBuilder::enable_resumption`). Not re-verified: see the builder \
         docs for what resumption gives up.\n"
    );
    let _ = writeln!(
        md,
        "| concurrency | mtls-core resumed per server CPU-s | Envoy resumed per server CPU-s | ratio | mtls-core resumed / full | mtls-core p50 | Envoy p50 | connections resumed (mtls-core / Envoy) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(md, "{r}");
    }
    let _ = writeln!(md);
}
