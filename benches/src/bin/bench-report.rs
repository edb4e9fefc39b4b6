//! `bench-report` — writes BENCHMARKS.md (and its SVG chart) from the load generator's
//! JSON files and criterion's estimates.
//!
//! ```text
//! bench-report --results target/bench/loadgen.json --criterion target/criterion \
//!              --out BENCHMARKS.md --chart benchmarks.svg --note "quiet machine"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mtls_benches::report::{self, Machine, ReportInput};
use mtls_benches::result::RunFile;

#[derive(Parser, Debug)]
#[command(
    name = "bench-report",
    about = "write BENCHMARKS.md from loadgen and criterion results"
)]
struct Cli {
    /// loadgen JSON files (`loadgen run` points, in order, and `loadgen ab` comparisons).
    #[arg(long, num_args = 1..)]
    results: Vec<PathBuf>,
    /// criterion's output directory (`<target>/criterion`).
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// The Markdown file to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The SVG chart, written next to the Markdown file.
    #[arg(long, default_value = "benchmarks.svg")]
    chart: String,
    /// A note on the conditions of the run.
    #[arg(long, env = "BENCH_NOTE", default_value = "")]
    note: String,
    /// `loadgen soak` JSON: adds the soak section.
    #[arg(long)]
    soak: Option<PathBuf>,
    /// A note on the conditions of the soak, replacing the one recorded by `loadgen soak`.
    #[arg(long, default_value = "")]
    soak_note: String,
    /// `loadgen abuse` JSON: adds the hostile-load section.
    #[arg(long)]
    abuse: Option<PathBuf>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut input = ReportInput {
        machine: Machine::describe(),
        note: cli.note.clone(),
        chart_file: cli.chart.clone(),
        ..ReportInput::default()
    };
    for path in &cli.results {
        let run: RunFile = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(run) => run,
            Err(e) => {
                eprintln!("bench-report: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if input.command.is_empty() {
            input.command = run.command.clone();
        }
        input.points.extend(run.points);
        input.ab.extend(run.ab);
        input.crypto = run.crypto.or(input.crypto.take());
        input.layers = run.layers.or(input.layers.take());
    }
    if let Some(path) = &cli.soak {
        match read_json::<mtls_benches::soak::SoakResult>(path) {
            Ok(mut soak) => {
                if !cli.soak_note.is_empty() {
                    soak.conditions.note = cli.soak_note.clone();
                }
                input.soak = Some(soak);
            }
            Err(e) => {
                eprintln!("bench-report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &cli.abuse {
        match read_json::<mtls_benches::abuse::AbuseResult>(path) {
            Ok(abuse) => input.abuse = Some(abuse),
            Err(e) => {
                eprintln!("bench-report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(dir) = &cli.criterion {
        input.estimates = mtls_benches::criterion::read_estimates(dir);
    }
    let chart_path = cli
        .out
        .parent()
        .map_or_else(|| PathBuf::from(&cli.chart), |d| d.join(&cli.chart));
    let markdown = report::markdown(&input);
    let written = std::fs::write(&cli.out, markdown).and_then(|()| {
        if input.points.is_empty() {
            Ok(())
        } else {
            std::fs::write(&chart_path, report::chart_svg(&input.points))
        }
    });
    match written {
        Ok(()) => {
            eprintln!(
                "bench-report: wrote {} ({} points, {} A/B comparisons, {} criterion estimates)",
                cli.out.display(),
                input.points.len(),
                input.ab.len(),
                input.estimates.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-report: cannot write {}: {e}", cli.out.display());
            ExitCode::FAILURE
        }
    }
}
