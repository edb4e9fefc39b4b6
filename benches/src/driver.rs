//! The closed-loop load driver: `concurrency` workers call as fast as answers come back;
//! after a warm-up, a fixed window is measured (latency, errors, and every process's CPU
//! and peak RSS from `/proc`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::child::{Measured, Role};
use crate::latency::LatencyRecorder;
use crate::procstat::{self, CpuTimes};
use crate::result::{PointResult, ProcessUsage};

/// One call: worker index in, success or an error message out.
pub type CallFn =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How long and how hard to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// Concurrent callers.
    pub concurrency: usize,
    /// Time driven before measuring (connections warm, caches full).
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
}

/// What a point is, for the report.
#[derive(Clone, Debug)]
pub struct PointLabel {
    /// Scenario name.
    pub scenario: String,
    /// Variant (handshake server), or empty.
    pub variant: String,
    /// Replica count.
    pub replicas: usize,
}

/// The load generator itself, as a measured process.
pub fn this_process() -> Measured {
    Measured {
        name: "client".into(),
        role: Role::Client,
        pid: std::process::id(),
    }
}

/// Drives `call` per `spec` and measures `processes` (the load generator is added as `client`).
pub async fn measure(
    spec: LoadSpec,
    label: PointLabel,
    processes: &[Measured],
    call: CallFn,
) -> PointResult {
    let mut processes = processes.to_vec();
    if !processes.iter().any(|p| p.pid == std::process::id()) {
        processes.insert(0, this_process());
    }
    let recorder = Arc::new(LatencyRecorder::new(spec.concurrency.min(16)));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));

    let mut workers = Vec::with_capacity(spec.concurrency);
    for worker in 0..spec.concurrency.max(1) {
        let (call, recorder, stop, measuring, errors, first_error) = (
            call.clone(),
            recorder.clone(),
            stop.clone(),
            measuring.clone(),
            errors.clone(),
            first_error.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let outcome = call(worker).await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match outcome {
                    Ok(()) => recorder.record(worker, start.elapsed()),
                    Err(message) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        first.get_or_insert(message);
                    }
                }
            }
        }));
    }

    tokio::time::sleep(spec.warmup).await;
    let window_only: Vec<bool> = processes
        .iter()
        .map(|p| procstat::reset_peak_rss(p.pid))
        .collect();
    let before: Vec<CpuTimes> = processes.iter().map(|p| cpu(p.pid)).collect();
    let machine_before = procstat::machine_busy().unwrap_or_default();
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(spec.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let after: Vec<CpuTimes> = processes.iter().map(|p| cpu(p.pid)).collect();
    let machine_cpu = procstat::machine_busy()
        .unwrap_or_default()
        .saturating_sub(machine_before);
    let peaks: Vec<u64> = processes
        .iter()
        .map(|p| procstat::peak_rss_kib(p.pid).unwrap_or(0))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        // A call stuck past the window must not hang the run.
        let abort = w.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    let latency = recorder.summary();
    let calls = latency.count;
    let per_1k = |cpu_s: f64| {
        if calls == 0 {
            0.0
        } else {
            cpu_s * 1000.0 / calls as f64
        }
    };
    let usage: Vec<ProcessUsage> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let d = after[i].since(&before[i]);
            ProcessUsage {
                name: p.name.clone(),
                role: p.role,
                pid: p.pid,
                cpu_s: d.total().as_secs_f64(),
                user_s: d.user.as_secs_f64(),
                system_s: d.system.as_secs_f64(),
                cpu_s_per_1k_calls: per_1k(d.total().as_secs_f64()),
                peak_rss_kib: peaks[i],
                peak_rss_window_only: window_only[i],
            }
        })
        .collect();
    let total_cpu: f64 = usage.iter().map(|u| u.cpu_s).sum();
    let server_cpu: f64 = usage
        .iter()
        .filter(|u| u.role.is_server_side())
        .map(|u| u.cpu_s)
        .sum();
    let first_error = first_error
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    PointResult {
        scenario: label.scenario,
        variant: label.variant,
        concurrency: spec.concurrency,
        replicas: label.replicas,
        warmup_s: spec.warmup.as_secs_f64(),
        duration_s: elapsed.as_secs_f64(),
        calls,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        throughput_per_s: calls as f64 / elapsed.as_secs_f64(),
        latency,
        processes: usage,
        cpu_s_per_1k_calls_total: per_1k(total_cpu),
        calls_per_server_cpu_s: if server_cpu > 0.0 {
            calls as f64 / server_cpu
        } else {
            0.0
        },
        machine_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        other_cpu_s: (machine_cpu.as_secs_f64() - total_cpu).max(0.0),
        hello: None,
        recycle_every_s: None,
    }
}

/// CPU times of `pid`, zero when it cannot be read (a process that died shows as zero and
/// its calls fail, which the error count reports).
fn cpu(pid: u32) -> CpuTimes {
    procstat::cpu_times(pid).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_calls_and_errors_and_accounts_the_client() {
        let n = Arc::new(AtomicU64::new(0));
        let call: CallFn = {
            let n = n.clone();
            Arc::new(move |_worker| {
                let n = n.clone();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if n.fetch_add(1, Ordering::Relaxed).is_multiple_of(10) {
                        Err("every tenth call fails".to_owned())
                    } else {
                        Ok(())
                    }
                })
            })
        };
        let spec = LoadSpec {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
        };
        let label = PointLabel {
            scenario: "test".into(),
            variant: String::new(),
            replicas: 1,
        };
        let r = measure(spec, label, &[], call).await;
        assert!(r.calls > 0, "{r:?}");
        assert!(r.errors > 0, "{r:?}");
        assert_eq!(r.first_error.as_deref(), Some("every tenth call fails"));
        assert_eq!(r.processes.len(), 1);
        assert_eq!(r.processes[0].name, "client");
        assert!(r.processes[0].peak_rss_kib > 0);
        assert!(r.latency.p50_us >= 1000.0, "{:?}", r.latency);
        assert_eq!(r.calls_per_server_cpu_s, 0.0);
    }
}
