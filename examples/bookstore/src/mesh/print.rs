//! Progress output (with [`MeshOptions::verbose`]).

use super::*;
use crate::Report;

pub(super) fn print_report(options: &MeshOptions, report: &Report) {
    if !options.verbose {
        return;
    }
    for call in report.calls.iter().take(crate::scenario::CALLS_PER_ROUND) {
        println!("    {call}");
    }
    if report.calls.len() > crate::scenario::CALLS_PER_ROUND {
        println!(
            "    ... {} more calls",
            report.calls.len() - crate::scenario::CALLS_PER_ROUND
        );
    }
    for call in report.failures().take(5) {
        println!("    FAILED {call}");
    }
    println!(
        "    {} / {} calls ok; calls per replica:",
        report.succeeded(),
        report.total()
    );
    println!("{}", report.distribution());
}

pub(super) fn print_checks(options: &MeshOptions, outcome: &MeshOutcome, path: PathKind) {
    for c in outcome.checks.iter().filter(|c| {
        c.path == path
            && ![
                checks::SCENARIO,
                checks::BALANCE,
                checks::CALLER,
                checks::TLS,
                checks::AGENT_IDENTITIES,
                checks::ROTATION,
                checks::ROLLING_RESTART,
                checks::RETRIES,
                checks::FEDERATION,
                checks::CA_ROTATION,
            ]
            .contains(&c.name)
    }) {
        say!(
            options,
            "    {:<22} {} — {}",
            c.name,
            if c.passed {
                "refused as expected"
            } else {
                "NOT AS EXPECTED"
            },
            c.observed
        );
    }
}
