//! Log hygiene for input from unauthenticated peers: escaped and bounded fields, and a
//! budget for events a peer can trigger at will.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many characters of a client-controlled value a log line or status message shows.
pub(crate) const SHOWN_CHARS: usize = 128;

/// Client-controlled text as a log field or in a status message: control characters and
/// newlines escaped (`\n`, `\u{1b}`), cut after [`SHOWN_CHARS`] characters with the full
/// length noted, so a value can neither forge log lines nor flood the log.
#[derive(Clone, Copy)]
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(SHOWN_CHARS) {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_str(c.encode_utf8(&mut [0; 4]))?;
            }
        }
        if chars.next().is_some() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// [`Shown`] of bytes (invalid UTF-8 replaced), noting the full length in bytes.
pub(crate) fn shown_bytes(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(SHOWN_CHARS)];
    let mut text = Shown(&String::from_utf8_lossy(cut)).to_string();
    if cut.len() < bytes.len() {
        text.push_str(&format!("…({} bytes)", bytes.len()));
    }
    text
}

/// Length of one budget window.
const WINDOW: Duration = Duration::from_secs(10);

/// A per-event log budget: at most `per_window` lines every 10 s; the first line of the
/// next window tells how many were suppressed.
///
/// ```text
/// static REFUSED: LogBudget = LogBudget::new(10);
/// if let Some(suppressed) = REFUSED.allow() {
///     tracing::warn!(suppressed, "connection refused");
/// }
/// ```
#[derive(Debug)]
pub(crate) struct LogBudget {
    per_window: u32,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub(crate) const fn new(per_window: u32) -> Self {
        Self {
            per_window,
            state: Mutex::new(BudgetState {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(number of lines suppressed since the last one logged)` when this event may be
    /// logged now, `None` when it is over budget (and counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            s.window_start = Some(now);
            s.used = 0;
        }
        if s.used < self.per_window {
            s.used += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_newlines_and_bounds_length() {
        assert_eq!(
            Shown("/tmp/x\n2026-01-01 INFO forged").to_string(),
            "/tmp/x\\n2026-01-01 INFO forged"
        );
        assert_eq!(Shown("a\u{1b}[31mb\\").to_string(), "a\\u{1b}[31mb\\\\");
        let long = "a".repeat(1_000_000);
        let shown = Shown(&long).to_string();
        assert_eq!(shown.len(), SHOWN_CHARS + "…(1000000 bytes)".len());
        assert!(shown.ends_with("…(1000000 bytes)"));
        assert_eq!(shown_bytes(b"ok\xff\n"), "ok\u{fffd}\\n");
        assert!(shown_bytes(&vec![b'x'; 10_000]).ends_with("…(10000 bytes)"));
    }

    #[test]
    fn the_budget_suppresses_and_reports() {
        let budget = LogBudget::new(2);
        let t0 = Instant::now();
        assert_eq!(budget.allow_at(t0), Some(0));
        assert_eq!(budget.allow_at(t0), Some(0));
        assert_eq!(budget.allow_at(t0), None);
        assert_eq!(budget.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(budget.allow_at(t0 + WINDOW), Some(2));
        assert_eq!(budget.allow_at(t0 + WINDOW), Some(0));
        assert_eq!(budget.allow_at(t0 + WINDOW), None);
        assert_eq!(budget.allow_at(t0 + WINDOW * 2), Some(1));
    }
}
