//! A budget for HTTP/2 control frames in front of h2.
//!
//! h2 answers every PING and applies every SETTINGS frame, with no limit of its own, so a
//! peer can keep a core busy with tiny frames. This guard reads the frame headers of the
//! bytes passing to h2 (nothing is copied or reordered), charges PING and SETTINGS frames
//! (not their acknowledgements) to a token bucket, and when the peer is over budget sends
//! GOAWAY `ENHANCE_YOUR_CALM` at the next frame boundary of the outgoing bytes and ends the
//! connection. Anything that does not start with the HTTP/2 client preface passes untouched.

use std::time::Instant;

use crate::frames::{ACK, HEADERS, PING, SETTINGS, Scanner};

const ENHANCE_YOUR_CALM: u32 = 0xb;
const DEBUG_DATA: &[u8] = b"too many control frames";

/// The token bucket of control frames.
#[derive(Debug)]
struct Budget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the guard decided about the bytes just read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Pass all bytes to h2.
    Pass,
    /// Over budget: pass only the first `n` bytes (up to the offending frame) and close.
    Flood { keep: usize },
}

/// The HTTP/2 guard of one connection.
#[derive(Debug)]
pub(crate) struct FrameGuard {
    inbound: Scanner,
    outbound: Scanner,
    budget: Budget,
    last_stream: u32,
    off: bool,
}

impl FrameGuard {
    pub(crate) fn new(burst: u32, per_second: u32) -> Self {
        Self {
            inbound: Scanner::new(true),
            outbound: Scanner::new(false),
            budget: Budget {
                burst: f64::from(burst),
                per_second: f64::from(per_second),
                tokens: f64::from(burst),
                refilled: Instant::now(),
            },
            last_stream: 0,
            off: false,
        }
    }

    /// Scans bytes read from the peer.
    pub(crate) fn inbound(&mut self, bytes: &[u8]) -> Verdict {
        if self.off {
            return Verdict::Pass;
        }
        let budget = &mut self.budget;
        let last_stream = &mut self.last_stream;
        match self.inbound.feed(bytes, |head| {
            if head.kind == HEADERS {
                *last_stream = (*last_stream).max(head.stream);
            }
            let control = matches!(head.kind, PING | SETTINGS) && head.flags & ACK == 0;
            !control || budget.spend()
        }) {
            Ok(None) => Verdict::Pass,
            Ok(Some(keep)) => Verdict::Flood { keep },
            Err(()) => {
                self.off = true;
                Verdict::Pass
            }
        }
    }

    /// Records bytes h2 wrote (to know where the frames end).
    pub(crate) fn outbound(&mut self, bytes: &[u8]) {
        if !self.off {
            let _ = self.outbound.feed(bytes, |_| true);
        }
    }

    /// Whether the peer turned out not to speak HTTP/2 (the guard stepped aside).
    pub(crate) fn is_off(&self) -> bool {
        self.off
    }

    /// Whether the bytes written so far end at a frame boundary (a GOAWAY may go next).
    pub(crate) fn outbound_at_boundary(&self) -> bool {
        self.off || self.outbound.at_boundary()
    }

    /// How many of `bytes` h2 may still write before the GOAWAY goes out.
    pub(crate) fn outbound_until_boundary(&self, bytes: &[u8]) -> usize {
        self.outbound.until_boundary(bytes)
    }

    /// The GOAWAY frame to send when closing for a flood.
    pub(crate) fn goaway(&self) -> Vec<u8> {
        crate::frames::goaway(self.last_stream, ENHANCE_YOUR_CALM, DEBUG_DATA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{GOAWAY, PREFACE};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn pings_over_budget_are_a_flood_cut_at_the_offending_frame() {
        let mut guard = FrameGuard::new(3, 0);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(PING, ACK, 0, &[0; 8]));
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
        let keep = bytes.len();
        assert_eq!(guard.inbound(&bytes), Verdict::Pass);
        let mut more = frame(PING, 0, 0, &[0; 8]);
        more.extend(frame(PING, 0, 0, &[0; 8]));
        // Budget 3: SETTINGS + PING spent two; the next PING is the third, the one after
        // is over.
        assert_eq!(guard.inbound(&more), Verdict::Flood { keep: 17 });
        assert!(keep > 0);
    }

    #[test]
    fn byte_by_byte_is_the_same_as_all_at_once() {
        let mut guard = FrameGuard::new(1, 0);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 4, 7, &[1, 2, 3]));
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
        let verdicts: Vec<_> = bytes.iter().map(|b| guard.inbound(&[*b])).collect();
        assert_eq!(verdicts.iter().filter(|v| **v != Verdict::Pass).count(), 1);
        assert_eq!(guard.last_stream, 7);
    }

    #[test]
    fn not_http2_passes_untouched() {
        let mut guard = FrameGuard::new(1, 0);
        assert_eq!(guard.inbound(b"GET / HTTP/1.1\r\n\r\n"), Verdict::Pass);
        for _ in 0..10 {
            assert_eq!(guard.inbound(&frame(PING, 0, 0, &[0; 8])), Verdict::Pass);
        }
    }

    #[test]
    fn outbound_boundaries() {
        let mut guard = FrameGuard::new(1, 0);
        assert!(guard.outbound_at_boundary());
        let mut bytes = frame(SETTINGS, 0, 0, &[0; 6]);
        bytes.extend(frame(PING, ACK, 0, &[0; 8]));
        assert_eq!(guard.outbound_until_boundary(&bytes), 15);
        guard.outbound(&bytes[..10]);
        assert!(!guard.outbound_at_boundary());
        assert_eq!(guard.outbound_until_boundary(&bytes[10..]), 5);
        guard.outbound(&bytes[10..]);
        assert!(guard.outbound_at_boundary());
        let goaway = guard.goaway();
        assert_eq!(goaway[3], GOAWAY);
        assert_eq!(&goaway[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
    }
}
