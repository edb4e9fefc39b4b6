//! `bench-report` — writes BENCHMARKS.md from the load generator's JSON and criterion's estimates.

fn main() {}
