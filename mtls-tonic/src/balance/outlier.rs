//! Outlier detection (Envoy `outlier_detection`, gRFC A50): endpoints that answer with
//! server failures are ejected for a while, so a replica that fails every call quickly
//! (and so looks fast to p2c) does not become a black hole.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tonic::Code;
use tracing::{debug, warn};

use super::{ctx::Ctx, endpoint::Shared};

/// Outlier detection settings: consecutive failures and failure percentage, with ejection
/// time growing per ejection and a cap on how much of the channel may be ejected.
///
/// A failure is a call that ended with UNAVAILABLE, INTERNAL, UNKNOWN or DATA_LOSS (what
/// Envoy counts as 5xx/gateway failures for gRPC) or a transport error; anything else is a
/// success. Ejected endpoints get no calls, show as [`EndpointState::Ejected`] in
/// [`BalancedChannel::endpoints`] and are logged at `warn`. The channel never ejects its last
/// ready endpoint, nor more than `max_ejection_percent` of its endpoints (but always allows
/// one).
///
/// On by default with Envoy's conservative settings: 5 consecutive failures, failure
/// percentage 85 % over at least 50 calls once 5 endpoints have that many, 10 s interval,
/// 30 s base ejection time (× the number of recent ejections, at most 300 s), at most 10 %.
///
/// ```
/// use std::time::Duration;
/// let detection = mtls_tonic::balance::OutlierDetection::default()
///     .consecutive_failures(Some(3))
///     .base_ejection_time(Duration::from_secs(5))
///     .max_ejection_percent(50);
/// assert!(detection.is_enabled());
/// assert!(!mtls_tonic::balance::OutlierDetection::disabled().is_enabled());
/// ```
///
/// [`EndpointState::Ejected`]: super::EndpointState::Ejected
/// [`BalancedChannel::endpoints`]: super::BalancedChannel::endpoints
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OutlierDetection {
    pub(crate) interval: Duration,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_percentage: Option<FailurePercentage>,
}

/// Failure-percentage ejection (Envoy's `failure_percentage_*`): at each interval, an
/// endpoint whose calls failed at least `threshold` % of the time over at least
/// `request_volume` calls is ejected, once `minimum_hosts` endpoints have that many calls
/// (default 85 %, 5, 50).
///
/// ```
/// use mtls_tonic::balance::{FailurePercentage, OutlierDetection};
/// let rule = FailurePercentage::new(50, 2, 20);
/// assert_eq!((rule.threshold, rule.minimum_hosts, rule.request_volume), (50, 2, 20));
/// assert_eq!(FailurePercentage::default().threshold, 85);
/// let detection = OutlierDetection::default().failure_percentage(Some(rule));
/// # let _ = detection;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePercentage {
    /// The failure rate, in percent, at which an endpoint is ejected (at most 100).
    pub threshold: u32,
    /// How many endpoints must have `request_volume` calls in the interval (at least 1).
    pub minimum_hosts: usize,
    /// Calls an endpoint needs in the interval to be judged (at least 1).
    pub request_volume: u64,
}

impl FailurePercentage {
    /// Eject at `threshold` % failures over `request_volume` calls, once `minimum_hosts`
    /// endpoints have that many.
    pub fn new(threshold: u32, minimum_hosts: usize, request_volume: u64) -> Self {
        Self {
            threshold,
            minimum_hosts,
            request_volume,
        }
    }
}

impl Default for FailurePercentage {
    fn default() -> Self {
        Self::new(85, 5, 50)
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            consecutive_failures: Some(5),
            failure_percentage: Some(FailurePercentage::default()),
        }
    }
}

impl OutlierDetection {
    /// No ejection at all.
    pub fn disabled() -> Self {
        Self {
            consecutive_failures: None,
            failure_percentage: None,
            ..Self::default()
        }
    }

    /// Eject after `n` failures in a row (`None`: off; default 5).
    pub fn consecutive_failures(mut self, n: Option<u32>) -> Self {
        self.consecutive_failures = n.map(|n| n.max(1));
        self
    }

    /// Eject, at each interval, endpoints whose failure rate is at least the rule's
    /// `threshold` % ([`FailurePercentage`]; default 85 % over 50 calls once 5 endpoints
    /// have that many; `None`: off).
    pub fn failure_percentage(mut self, rule: Option<FailurePercentage>) -> Self {
        self.failure_percentage = rule.map(|r| {
            FailurePercentage::new(
                r.threshold.min(100),
                r.minimum_hosts.max(1),
                r.request_volume.max(1),
            )
        });
        self
    }

    /// How often failure percentages are evaluated and ejection multipliers decay (10 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Ejection time for a first ejection; the n-th recent one lasts n times as long (30 s).
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.base_ejection_time = time;
        self
    }

    /// Cap on one ejection's duration (300 s, never below the base time).
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.max_ejection_time = time;
        self
    }

    /// At most this share of the endpoints is ejected at once (10 %; one is always allowed).
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = percent.min(100);
        self
    }

    /// Whether any ejection rule is on.
    pub fn is_enabled(&self) -> bool {
        self.consecutive_failures.is_some() || self.failure_percentage.is_some()
    }
}

/// Whether a call's status counts as a failure of the endpoint.
pub(crate) fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss
    )
}

/// Counts a finished call; returns the consecutive failures so far.
pub(crate) fn count(shared: &Shared, failed: bool) -> u32 {
    if !failed {
        shared.outcomes.ok.fetch_add(1, Ordering::Relaxed);
        if shared.outcomes.consecutive.load(Ordering::Relaxed) != 0 {
            shared.outcomes.consecutive.store(0, Ordering::Relaxed);
        }
        return 0;
    }
    shared.outcomes.failed.fetch_add(1, Ordering::Relaxed);
    shared.outcomes.consecutive.fetch_add(1, Ordering::AcqRel) + 1
}

/// `shared` reached the consecutive-failure limit.
pub(crate) fn consecutive_limit(ctx: &Ctx, shared: &Arc<Shared>) {
    if let Some(detection) = ctx.outlier.as_ref() {
        let consecutive = shared.outcomes.consecutive.load(Ordering::Acquire);
        try_eject(
            ctx,
            detection,
            shared,
            &format!("{consecutive} consecutive failures"),
        );
    }
}

/// Ejects `shared` unless the channel's limits forbid it.
fn try_eject(ctx: &Ctx, detection: &OutlierDetection, shared: &Arc<Shared>, why: &str) {
    let all = ctx.all();
    let live: Vec<_> = all.iter().filter(|s| !s.is_draining()).collect();
    let ejected = live.iter().filter(|s| s.is_ejected()).count();
    if shared.is_ejected() {
        return;
    }
    let total = live.len().max(1);
    let within_percent =
        ejected == 0 || (ejected + 1) * 100 <= total * detection.max_ejection_percent as usize;
    let another_ready = live.iter().any(|s| !Arc::ptr_eq(s, shared) && s.is_ready());
    if !within_percent || !another_ready {
        debug!(target = %ctx.target, endpoint = %shared.addr, why, ejected, total, "not ejecting: limit reached");
        return;
    }
    let duration = shared.eject(detection, why);
    warn!(target = %ctx.target, endpoint = %shared.addr, why, ?duration, "endpoint ejected (outlier detection)");
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        shared.uneject();
    });
}

/// The interval task: failure-percentage ejection, multiplier decay, fresh windows.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let Some(detection) = ctx.outlier.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(detection.interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let all = ctx.all();
        let windows: Vec<(Arc<Shared>, u64, u64)> = all
            .iter()
            .map(|s| {
                let ok = s.outcomes.ok.swap(0, Ordering::AcqRel);
                let failed = s.outcomes.failed.swap(0, Ordering::AcqRel);
                (s.clone(), ok, failed)
            })
            .collect();
        if let Some(FailurePercentage {
            threshold,
            minimum_hosts,
            request_volume: volume,
        }) = detection.failure_percentage
        {
            let enough: Vec<_> = windows
                .iter()
                .filter(|(_, ok, f)| ok + f >= volume)
                .collect();
            if enough.len() >= minimum_hosts {
                for (shared, ok, failed) in enough {
                    let percent = failed * 100 / (ok + failed).max(1);
                    if percent >= u64::from(threshold) {
                        try_eject(
                            &ctx,
                            &detection,
                            shared,
                            &format!("{percent} % of calls failed"),
                        );
                    }
                }
            }
        }
        for (shared, _, _) in &windows {
            shared.decay_ejections();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_percentage_rule_out_of_range_is_taken_within_bounds() {
        let detection =
            OutlierDetection::default().failure_percentage(Some(FailurePercentage::new(150, 0, 0)));
        assert_eq!(
            detection.failure_percentage,
            Some(FailurePercentage::new(100, 1, 1)),
            "expected threshold at most 100 %, at least one host and one call"
        );
        assert!(
            OutlierDetection::default()
                .failure_percentage(None)
                .is_enabled()
        );
        assert!(
            !OutlierDetection::disabled()
                .failure_percentage(None)
                .is_enabled()
        );
    }
}
