//! Rate-limited warnings: a flood of failed handshakes is a few lines per second with
//! counts, never one line per attempt.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Detailed lines allowed per kind and window; the rest are counted.
const LINES_PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of event (e.g. "handshake failed"): at most [`LINES_PER_WINDOW`] detailed lines
/// per second, the others counted and reported by [`LogLimiter::take_suppressed`].
#[derive(Debug)]
pub(crate) struct LogLimiter {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new() -> Self {
        Self {
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether this event gets its own line; if not, it is counted.
    pub(crate) fn allow(&self) -> bool {
        let now = Instant::now();
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match window.start {
            Some(start) if now.duration_since(start) < WINDOW => {}
            _ => {
                window.start = Some(now);
                window.logged = 0;
            }
        }
        if window.logged < LINES_PER_WINDOW {
            window.logged += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// The events counted but not logged since the last call.
    pub(crate) fn take_suppressed(&self) -> u64 {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut window.suppressed)
    }
}

/// The server's rate-limited event kinds, reported together once per second.
#[derive(Debug)]
pub(crate) struct ServerLog {
    pub(crate) handshake_failed: LogLimiter,
    pub(crate) handshake_timed_out: LogLimiter,
    pub(crate) handshake_shed: LogLimiter,
    pub(crate) handshake_rate_limited: LogLimiter,
    pub(crate) http2_flood: LogLimiter,
}

impl ServerLog {
    pub(crate) const fn new() -> Self {
        Self {
            handshake_failed: LogLimiter::new(),
            handshake_timed_out: LogLimiter::new(),
            handshake_shed: LogLimiter::new(),
            handshake_rate_limited: LogLimiter::new(),
            http2_flood: LogLimiter::new(),
        }
    }

    /// One summary line for everything suppressed since the last call, if anything was.
    pub(crate) fn report_suppressed(&self) {
        let failed = self.handshake_failed.take_suppressed();
        let timed_out = self.handshake_timed_out.take_suppressed();
        let shed = self.handshake_shed.take_suppressed();
        let rate_limited = self.handshake_rate_limited.take_suppressed();
        let flood = self.http2_flood.take_suppressed();
        if failed + timed_out + shed + rate_limited + flood > 0 {
            tracing::warn!(
                failed,
                timed_out,
                shed,
                rate_limited,
                http2_flood = flood,
                "more mTLS server events than logged in the last second (counts of the unlogged ones)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_a_few_lines_and_counts_the_rest() {
        let limiter = LogLimiter::new();
        let logged = (0..1000).filter(|_| limiter.allow()).count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert_eq!(
            limiter.take_suppressed(),
            1000 - u64::from(LINES_PER_WINDOW)
        );
        assert_eq!(limiter.take_suppressed(), 0);
    }
}
