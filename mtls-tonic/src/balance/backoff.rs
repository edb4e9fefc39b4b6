//! Exponential backoff with jitter, gRPC's connection-backoff algorithm.

use std::time::Duration;

/// Reconnect backoff: `initial × multiplier^n`, capped at `max`, each delay spread by
/// `± jitter` (a fraction). [`Backoff::default`] is gRPC's: 1 s × 1.6, jitter 0.2, cap 120 s.
///
/// ```
/// use std::time::Duration;
/// let backoff = mtls_tonic::balance::Backoff::default()
///     .initial(Duration::from_millis(100))
///     .max(Duration::from_secs(2));
/// assert_eq!(backoff.initial, Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// First delay (default 1 s).
    pub initial: Duration,
    /// Growth per attempt (default 1.6; values below 1 are taken as 1).
    pub multiplier: f64,
    /// Random spread as a fraction of each delay (default 0.2; taken within 0..=1).
    pub jitter: f64,
    /// Largest delay before jitter (default 120 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

impl Backoff {
    /// First delay (default 1 s).
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Growth per attempt (default 1.6; values below 1 are taken as 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Random spread as a fraction of each delay (default 0.2, clamped to 0..=1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Largest delay before jitter (default 120 s).
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The sequence of these delays; a multiplier below 1 (or not finite) is taken as 1, a
    /// jitter outside 0..=1 (or not finite) as the nearest bound (0 when not finite).
    pub(crate) fn start(mut self) -> BackoffState {
        self.multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        self.jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        BackoffState {
            config: self,
            current: self.initial,
        }
    }
}

/// One endpoint's position in its backoff sequence.
#[derive(Debug)]
pub(crate) struct BackoffState {
    config: Backoff,
    current: Duration,
}

impl BackoffState {
    /// The next delay (jittered) and advance.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current.min(self.config.max);
        let grown = base.as_secs_f64() * self.config.multiplier;
        self.current = Duration::from_secs_f64(grown.min(self.config.max.as_secs_f64()));
        jittered(base, self.config.jitter)
    }

    /// Back to the first delay (after a connection became ready).
    pub(crate) fn reset(&mut self) {
        self.current = self.config.initial;
    }
}

/// `d` spread uniformly over `d × (1 ± jitter)`.
pub(crate) fn jittered(d: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return d;
    }
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    Duration::from_secs_f64((d.as_secs_f64() * factor).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_multiplier_until_cap() {
        let mut state = Backoff::default()
            .jitter(0.0)
            .max(Duration::from_secs(3))
            .start();
        let delays: Vec<_> = (0..5).map(|_| state.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![1000, 1600, 2560, 3000, 3000]);
        state.reset();
        assert_eq!(state.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn fields_out_of_range_are_taken_within_bounds() {
        let mut config = Backoff::default().jitter(f64::NAN).multiplier(0.5);
        config.max = Duration::from_secs(10);
        let mut state = config.start();
        let delays: Vec<_> = (0..3).map(|_| state.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            vec![1000, 1000, 1000],
            "multiplier 0.5 taken as 1, NaN jitter as 0"
        );
        let mut state = Backoff::default().jitter(7.0).start();
        assert!(
            state.next_delay() <= Duration::from_secs(2),
            "jitter 7 taken as 1"
        );
    }

    #[test]
    fn jitter_stays_in_band() {
        let mut state = Backoff::default().start();
        for _ in 0..100 {
            let d = state.next_delay();
            state.reset();
            assert!(
                d >= Duration::from_millis(800) && d <= Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }
}
