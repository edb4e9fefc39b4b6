//! CPU time and peak memory of a process, from the kernel's own accounting in `/proc`.
//!
//! CPU: `utime` + `stime` (fields 14 and 15 of `/proc/<pid>/stat`, all threads of the
//! process, in clock ticks of `USER_HZ`). Peak memory: `VmHWM` of `/proc/<pid>/status`,
//! which `reset_peak_rss` sets back to the current RSS (by writing `5` to `clear_refs`),
//! so every measurement window reports its own peak.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// CPU time a process has used since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user mode.
    pub user: Duration,
    /// Time in kernel mode (system calls, network stack work charged to the process).
    pub system: Duration,
}

impl CpuTimes {
    /// User + system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// `self - earlier`, saturating at zero.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(file)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// CPU time of process `pid` (all its threads).
///
/// ```
/// let t = mtls_benches::procstat::cpu_times(std::process::id())?;
/// assert!(t.total() >= std::time::Duration::ZERO);
/// # Ok::<(), mtls_benches::Error>(())
/// ```
pub fn cpu_times(pid: u32) -> Result<CpuTimes> {
    let path = proc_path(pid, "stat");
    parse_stat(&read(&path)?, clock_ticks_per_second()).map_err(|(expected, found)| Error::Proc {
        path,
        expected,
        found,
    })
}

/// Parses `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the **last** `)`.
fn parse_stat(text: &str, ticks: u64) -> std::result::Result<CpuTimes, (&'static str, String)> {
    let short = || text.chars().take(120).collect::<String>();
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or(("a `(comm)` field", short()))?;
    // After the comm: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> std::result::Result<Duration, (&'static str, String)> {
        let v: u64 = fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or(("numeric utime and stime fields", short()))?;
        Ok(Duration::from_nanos(
            v.saturating_mul(1_000_000_000) / ticks,
        ))
    };
    Ok(CpuTimes {
        user: tick(11)?,
        system: tick(12)?,
    })
}

/// Busy CPU time of the whole machine since boot, all CPUs together (the first line of
/// `/proc/stat`: everything but `idle` and `iowait`). The difference over a window, minus
/// what the measured processes used, is the load that *other* programs put on the machine.
pub fn machine_busy() -> Result<Duration> {
    let path = PathBuf::from("/proc/stat");
    let text = read(&path)?;
    parse_machine_busy(&text, clock_ticks_per_second()).ok_or_else(|| Error::Proc {
        path,
        expected: "a `cpu  user nice system idle iowait ...` first line",
        found: text.lines().next().unwrap_or_default().to_owned(),
    })
}

fn parse_machine_busy(text: &str, ticks: u64) -> Option<Duration> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = values.iter().take(8).sum::<u64>() - values[3] - values[4];
    Some(Duration::from_nanos(
        busy.saturating_mul(1_000_000_000) / ticks,
    ))
}

/// Peak resident set size of `pid` in KiB (`VmHWM`).
///
/// ```
/// assert!(mtls_benches::procstat::peak_rss_kib(std::process::id())? > 0);
/// # Ok::<(), mtls_benches::Error>(())
/// ```
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = proc_path(pid, "status");
    status_field_kib(&read(&path)?, "VmHWM:").ok_or_else(|| Error::Proc {
        path,
        expected: "a `VmHWM: <n> kB` line",
        found: String::new(),
    })
}

/// Current resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = proc_path(pid, "status");
    status_field_kib(&read(&path)?, "VmRSS:").ok_or_else(|| Error::Proc {
        path,
        expected: "a `VmRSS: <n> kB` line",
        found: String::new(),
    })
}

fn status_field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resets `VmHWM` of `pid` to its current RSS, so the next [`peak_rss_kib`] is the peak of
/// what happens from now on. Returns `false` where the kernel refuses (the peak then covers
/// the process's whole life, which is still an upper bound).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(proc_path(pid, "clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "4242 (envoy (main) x) S 1 4242 4242 0 -1 4194560 3058 0 0 0 250 75 0 0 20 0 9 0 1234 0 0";

    #[test]
    fn stat_fields_after_the_last_parenthesis() {
        let t = parse_stat(STAT, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
        assert_eq!(t.total(), Duration::from_millis(3250));
    }

    #[test]
    fn stat_without_comm_or_short_is_an_error() {
        let (expected, _) = parse_stat("4242 envoy S 1", 100).unwrap_err();
        assert_eq!(expected, "a `(comm)` field");
        let (expected, found) = parse_stat("4242 (envoy) S 1 2 3", 100).unwrap_err();
        assert_eq!(expected, "numeric utime and stime fields");
        assert!(found.contains("envoy"));
        let err = parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1", 100).unwrap_err();
        assert_eq!(err.0, "numeric utime and stime fields");
    }

    #[test]
    fn status_lines() {
        let s = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t  2000 kB\n";
        assert_eq!(status_field_kib(s, "VmHWM:"), Some(12345));
        assert_eq!(status_field_kib(s, "VmRSS:"), Some(2000));
        assert_eq!(status_field_kib("VmHWM: lots", "VmHWM:"), None);
        assert_eq!(status_field_kib("", "VmHWM:"), None);
    }

    #[test]
    fn machine_busy_skips_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5\n";
        assert_eq!(
            parse_machine_busy(text, 100),
            Some(Duration::from_millis(1610))
        );
        assert_eq!(parse_machine_busy("cpu0 1 2 3 4 5", 100), None);
        assert_eq!(parse_machine_busy("cpu  1 2 x 4 5", 100), None);
        assert_eq!(parse_machine_busy("cpu  1 2 3", 100), None);
        assert!(machine_busy().is_ok());
    }

    #[test]
    fn since_saturates() {
        let a = CpuTimes {
            user: Duration::from_secs(2),
            system: Duration::from_secs(1),
        };
        let b = CpuTimes {
            user: Duration::from_secs(1),
            system: Duration::from_secs(3),
        };
        assert_eq!(
            a.since(&b),
            CpuTimes {
                user: Duration::from_secs(1),
                system: Duration::ZERO
            }
        );
    }

    #[test]
    fn own_process_is_readable_and_missing_pid_is_an_error() {
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let err = cpu_times(u32::MAX).unwrap_err();
        assert!(err.to_string().contains("/proc/4294967295/stat"), "{err}");
    }
}
