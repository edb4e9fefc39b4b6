//! What the mesh saw: [`MeshOutcome`], its [`Check`]s and the summary table.

use std::fmt;

use tonic::Code;

use super::*;
use crate::Report;

/// The path a check ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathKind {
    /// In-process mTLS + JWT (mtls-tonic).
    Proxyless,
    /// Through Envoy sidecars.
    Envoy,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Proxyless => "proxyless",
            PathKind::Envoy => "envoy",
        })
    }
}

/// One expectation and what was seen.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Check {
    /// Which path.
    pub path: PathKind,
    /// What was checked, e.g. "no token".
    pub name: &'static str,
    /// What should happen.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// Whether it matched.
    pub passed: bool,
    /// The gRPC status of a refused call, when there was one.
    pub status: Option<(Code, String)>,
}

/// What [`run`](super::run) saw.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MeshOutcome {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The proxyless scenario.
    pub proxyless: Option<Report>,
    /// The Envoy scenario, if it ran.
    pub envoy: Option<Report>,
    /// Why the Envoy path did not run, if it did not.
    pub envoy_skipped: Option<String>,
    /// The server sidecars' `ssl.fail_verify_san` before and after the intruder's attempt.
    pub fail_verify_san: Option<(u64, u64)>,
    /// Agent mode: the rotation forced on each path.
    pub rotations: Vec<Rotation>,
    /// The rolling restart on the proxyless path.
    pub proxyless_restart: Option<RollingRestart>,
    /// The rolling restart on the Envoy path, if it ran.
    pub envoy_restart: Option<RollingRestart>,
    /// The side-by-side stats: each event's proxyless figure (our metrics) and Envoy
    /// figure (the sidecars' `/stats`).
    pub stats: Vec<StatRow>,
    /// `--federation`: the CA rotation in `bookstore.local` and where its new root was seen.
    pub ca_rotation: Option<CaRotation>,
}

impl MeshOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The check `name` on `path`.
    pub fn check(&self, path: PathKind, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.path == path && c.name == name)
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "path".to_owned(),
            "check".to_owned(),
            "expected".to_owned(),
            "observed".to_owned(),
            "".to_owned(),
        ]];
        for c in &self.checks {
            rows.push([
                c.path.to_string(),
                c.name.to_owned(),
                c.expected.clone(),
                truncate(&c.observed, 60),
                if c.passed { "ok" } else { "FAILED" }.to_owned(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
                out.push('\n');
            }
        }
        if let Some(reason) = &self.envoy_skipped {
            out.push_str(&format!("envoy      (skipped: {reason})\n"));
        }
        out
    }
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}
