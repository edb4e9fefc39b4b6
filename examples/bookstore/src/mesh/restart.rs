//! The rolling restart: every replica in turn restarts under concurrent callers.

use std::time::Duration;

use super::*;
use crate::{Result, Scenario};

/// Calls made and failed while every replica in turn restarted.
#[derive(Clone, Debug, Default)]
pub struct RollingRestart {
    /// Calls made during the restarts.
    pub calls: usize,
    /// Calls that failed, and the first few failures.
    pub failed: usize,
    /// Up to three failure messages.
    pub samples: Vec<String>,
    /// Retries the path's retry policy made meanwhile (proxyless: `grpc.client.call.retries`;
    /// Envoy: the client sidecar's `upstream_rq_retry`), when read.
    pub retries: Option<u64>,
    /// Envoy: retries the client sidecar's circuit breaker refused meanwhile
    /// (`upstream_rq_retry_overflow`), when read: 0 unless the cap is back at Envoy's
    /// default `max_retries` of 3 in flight (the mesh lifts it as Istio does; the proxyless
    /// channel has no such cap either, gRFC A6 throttling is off).
    pub retries_refused: Option<u64>,
}

/// Concurrent callers over `channel` while each replica in turn shuts down gracefully and
/// comes back on the same address.
pub(super) async fn rolling_restart(
    replicas: &mut Replicas,
    channel: crate::scenario::BoxChannel,
    token: &str,
    mut back: impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Result<RollingRestart> {
    const CALLERS: usize = 8;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let results = std::sync::Mutex::new(RollingRestart::default());
    // Callers and restarts run in this task (the client future is not `Send`-general).
    let callers = futures_util::future::join_all((0..CALLERS).map(|_| {
        let mut scenario = Scenario::new(channel.clone(), Some(token.to_owned()));
        let (results, stopped) = (&results, stopped.clone());
        async move {
            while !*stopped.borrow() {
                let result = scenario.probe().await;
                let mut r = results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.calls += 1;
                if let Err(status) = result {
                    r.failed += 1;
                    if r.samples.len() < 3 {
                        r.samples
                            .push(format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
        }
    }));
    let restarts = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut outcome = Ok(());
        for index in 0..replicas.replicas.len() {
            if let Err(e) = replicas.restart(index, Duration::from_millis(200)).await {
                outcome = Err(e);
                break;
            }
            back().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.send_replace(true);
        outcome
    };
    let (_, restarted) = tokio::join!(callers, restarts);
    restarted?;
    let r = results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(r)
}

pub(super) fn rolling_restart_check(path: PathKind, r: &RollingRestart) -> Check {
    let mut observed = format!("{} calls, {} failed", r.calls, r.failed);
    if let Some(retries) = r.retries {
        observed.push_str(&format!(", {retries} retries"));
    }
    if let Some(refused) = r.retries_refused.filter(|n| *n > 0) {
        observed.push_str(&format!(", {refused} refused (upstream_rq_retry_overflow)"));
    }
    if let Some(sample) = r.samples.first() {
        observed.push_str(&format!(" ({sample})"));
    }
    let (expected, passed) = match path {
        // Transparent retry of calls that never reached a replica: nothing is lost.
        PathKind::Proxyless => ("0 failed calls".to_owned(), r.failed == 0 && r.calls > 0),
        // Reported side by side under the same retry policy (Envoy retries what the
        // draining replica answers UNAVAILABLE); the library's promise is the proxyless one.
        PathKind::Envoy => (
            "calls counted (same retry policy, failures shown)".to_owned(),
            r.calls > 0,
        ),
    };
    Check {
        path,
        name: checks::ROLLING_RESTART,
        expected,
        observed,
        passed,
        status: None,
    }
}
