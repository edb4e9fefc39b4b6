//! BENCHMARKS.md: machine, method, acceptance goals against measured figures, pairwise
//! ratios (each pair measured back to back in the same run), every point, the chart, and
//! the criterion micro-benchmarks.

use std::fmt::Write;

use crate::criterion::Estimate;
use crate::result::PointResult;

mod format;
pub mod goals;
mod intro;
mod machine;
mod micro;
mod pairs;
mod points;
mod recycling;
mod series;
#[cfg(test)]
mod tests;

pub(crate) use format::{find, fx, levels, mib, ns, ratio, us};
pub use goals::{Bound, Goal, Metric, compare, goals};
pub use machine::Machine;
pub use series::{chart_series, chart_svg};

/// Everything the report is made of.
#[derive(Clone, Debug, Default)]
pub struct ReportInput {
    /// The machine.
    pub machine: Machine,
    /// Load generator points, in the order measured.
    pub points: Vec<PointResult>,
    /// Criterion estimates.
    pub estimates: Vec<Estimate>,
    /// Interleaved A/B comparisons (preferred over criterion for the ratio goals).
    pub ab: Vec<crate::ab::AbResult>,
    /// A free-text note on the conditions (e.g. what else ran on the machine).
    pub note: String,
    /// File name of the chart, relative to BENCHMARKS.md.
    pub chart_file: String,
    /// The command that produced the run.
    pub command: String,
    /// `loadgen soak`, if run.
    pub soak: Option<crate::soak::SoakResult>,
    /// `loadgen abuse`, if run.
    pub abuse: Option<crate::abuse::AbuseResult>,
    /// `openssl speed` on this machine (`loadgen crypto-bound`), if run.
    pub crypto: Option<crate::crypto::OpensslSpeed>,
    /// `loadgen layers`, if run.
    pub layers: Option<crate::layers::LayersResult>,
}

/// The variant suffix of the handshake scenario's hybrid (X25519MLKEM768) points.
pub const HYBRID_SUFFIX: &str = "-hybrid";

/// BENCHMARKS.md.
pub fn markdown(input: &ReportInput) -> String {
    let pts = &input.points;
    let mut md = String::new();
    intro::intro(input, &mut md);

    let _ = writeln!(md, "## Acceptance goals vs this run\n");
    goals::table(&goals(input), &mut md);
    let _ = writeln!(md);

    let _ = writeln!(md, "## Ratios, pair by pair\n");
    pairs::pairwise(input, &mut md);
    pairs::layers(input, &mut md);
    recycling::section(input, &mut md);

    if !input.chart_file.is_empty() && !pts.is_empty() {
        let _ = writeln!(md, "## Chart\n");
        let _ = writeln!(
            md,
            "![throughput and p99 latency vs concurrency, per scenario]({})\n",
            input.chart_file
        );
    }

    let _ = writeln!(md, "## Every point\n");
    points::all_points(input, &mut md);

    let _ = writeln!(md, "## Micro-benchmarks\n");
    micro::micro(input, &mut md);

    if let Some(soak) = &input.soak {
        md.push_str(&crate::soak::section(soak));
    }
    if let Some(abuse) = &input.abuse {
        md.push_str(&crate::abuse::section(abuse));
    }
    md
}
