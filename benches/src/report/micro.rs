//! "Micro-benchmarks": the interleaved A/B comparisons, criterion's pairs (ours against a
//! baseline, one table row each) and every criterion estimate.

use std::fmt::Write;

use super::ReportInput;
use super::format::{fx, ns, ratio};
use crate::criterion::find as find_estimate;

pub(super) fn micro(input: &ReportInput, md: &mut String) {
    if !input.ab.is_empty() {
        let _ = writeln!(
            md,
            "### Interleaved A/B (`loadgen ab`)\n\nEach round times a batch of ours and a batch \
             of the baseline back to back (order alternating), so drifting load hits both; the \
             ratio is the median of the per-round ratios.\n"
        );
        let _ = writeln!(
            md,
            "| comparison | ours | baseline | speed ratio (median) | per-round range | rounds × batch |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for a in &input.ab {
            let _ = writeln!(
                md,
                "| `{}` | `{}` {} | `{}` {} | {} | {:.2} – {:.2} | {} × {} |",
                a.name,
                a.ours,
                ns(a.ours_ns),
                a.baseline,
                ns(a.baseline_ns),
                fx(Some(a.speed_ratio)),
                a.ratio_range.0,
                a.ratio_range.1,
                a.rounds,
                a.batch
            );
        }
        let _ = writeln!(md, "\n### criterion\n");
    }
    let e = &input.estimates;
    if e.is_empty() {
        let _ = writeln!(md, "No criterion results found.\n");
        return;
    }
    let pairs: [(&str, &str, &str, &str); 12] = [
        (
            "leaf issuance (P-256)",
            "leaf_issuance_p256",
            "mtls_certs",
            "raw_rcgen",
        ),
        (
            "JWT ES256, no cache",
            "ES256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT ES256, token cache",
            "ES256",
            "mtls_jwt cached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT RS256, no cache",
            "RS256",
            "mtls_jwt uncached",
            "jsonwebtoken::decode",
        ),
        (
            "JWT RS256, token cache",
            "RS256",
            "mtls_jwt cached",
            "jsonwebtoken::decode",
        ),
        (
            "mTLS handshake in memory (client cert verified)",
            "mtls_handshake",
            "mtls_core_spiffe_verifier",
            "rustls_webpki_client_verifier",
        ),
        (
            "mTLS handshake in memory, hybrid X25519MLKEM768 vs classical X25519 (cost of PQ)",
            "mtls_handshake_policy",
            "hybrid",
            "classical",
        ),
        (
            "key exchange crypto bound: X25519MLKEM768 vs X25519",
            "kx",
            "X25519MLKEM768",
            "X25519",
        ),
        (
            "key exchange crypto bound: ML-KEM-768 (keygen + encaps + decaps) vs X25519",
            "kx",
            "MLKEM768",
            "X25519",
        ),
        (
            "key exchange crypto bound: P-256 vs X25519",
            "kx",
            "P-256",
            "X25519",
        ),
        (
            "unary calls, BalancedChannel (3 replicas) vs tonic Channel (1)",
            "unary_calls",
            "balanced_channel_3_replicas",
            "tonic_channel_1_replica",
        ),
        (
            "unary calls, BalancedChannel vs tonic Channel (same replica)",
            "unary_calls",
            "balanced_channel_1_replica",
            "tonic_channel_1_replica",
        ),
    ];
    let _ = writeln!(
        md,
        "Medians of criterion's samples (more robust than means to bursts of other load on a \
         shared machine); speed ratio = baseline time / our time.\n"
    );
    let _ = writeln!(
        md,
        "| comparison | ours | baseline | ours / baseline (speed) |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (label, group, ours, base) in pairs {
        let (Some(o), Some(b)) = (find_estimate(e, group, ours), find_estimate(e, group, base))
        else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {label} | `{ours}` {} | `{base}` {} | {} |",
            ns(o.median_ns),
            ns(b.median_ns),
            fx(ratio(b.median_ns, o.median_ns))
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "<details><summary>every criterion estimate (time per iteration)</summary>\n"
    );
    let _ = writeln!(
        md,
        "| benchmark | median | mean | 95 % CI of the mean | per second (median) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for est in e {
        let per_s = est.elements.unwrap_or(1) as f64 * 1e9 / est.median_ns;
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} – {} | {:.0} |",
            est.id(),
            ns(est.median_ns),
            ns(est.mean_ns),
            ns(est.mean_ci_ns.0),
            ns(est.mean_ci_ns.1),
            per_s
        );
    }
    let _ = writeln!(md, "\n</details>\n");
}
