//! The machine the numbers come from: CPU, memory, kernel, Envoy, rustc, commit, date.

use std::process::Command;

/// The machine the numbers come from.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// `lscpu` model name.
    pub cpu_model: String,
    /// Online CPUs (`nproc`).
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Total memory.
    pub memory: String,
    /// `envoy --version`.
    pub envoy: String,
    /// `rustc -V`.
    pub rustc: String,
    /// The git commit measured.
    pub commit: String,
    /// UTC date.
    pub date: String,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Machine {
    /// Describes this machine (lscpu, nproc, uname, /proc/meminfo, envoy, rustc, git, date).
    pub fn describe() -> Self {
        let lscpu = command_output("lscpu", &[]).unwrap_or_default();
        let field = |name: &str| {
            lscpu
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kib: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu_model: field("Model name").unwrap_or_else(|| "unknown".into()),
            cpus: command_output("nproc", &[])
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            kernel: command_output("uname", &["-r"]).unwrap_or_default(),
            memory,
            envoy: crate::envoy::envoy_version().unwrap_or_else(|| "not installed".into()),
            rustc: command_output("rustc", &["-V"]).unwrap_or_default(),
            commit: command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        }
    }
}
