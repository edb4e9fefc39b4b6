//! HTTP/2 frame headers in a byte stream, without decoding frames: where frames begin and
//! end, and which kind each is. The server's control-frame guard and connection recycling
//! use it on the bytes passing to and from h2; the balanced channel uses it to notice a
//! server's GOAWAY the moment it arrives.

pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const FRAME_HEAD: usize = 9;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const ACK: u8 = 0x1;

/// Where a byte stream is in its frame sequence.
#[derive(Debug)]
pub(crate) struct Scanner {
    preface_left: usize,
    head: [u8; FRAME_HEAD],
    head_len: usize,
    payload_left: usize,
}

/// A frame header the scanner completed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHead {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
}

impl Scanner {
    pub(crate) fn new(preface: bool) -> Self {
        Self {
            preface_left: if preface { PREFACE.len() } else { 0 },
            head: [0; FRAME_HEAD],
            head_len: 0,
            payload_left: 0,
        }
    }

    pub(crate) fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.head_len == 0 && self.payload_left == 0
    }

    /// Feeds `bytes`; calls `on_head` for each completed frame header with the offset just
    /// past it. Returns `Err(())` if the preface does not match (not HTTP/2) and stops
    /// early at the offset where `on_head` returned `false`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut on_head: impl FnMut(FrameHead) -> bool,
    ) -> Result<Option<usize>, ()> {
        let mut at = 0;
        while at < bytes.len() {
            if self.preface_left > 0 {
                let start = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(bytes.len() - at);
                if bytes[at..at + n] != PREFACE[start..start + n] {
                    return Err(());
                }
                self.preface_left -= n;
                at += n;
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() - at);
                self.payload_left -= n;
                at += n;
            } else {
                let n = (FRAME_HEAD - self.head_len).min(bytes.len() - at);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[at..at + n]);
                self.head_len += n;
                at += n;
                if self.head_len == FRAME_HEAD {
                    self.head_len = 0;
                    let h = self.head;
                    self.payload_left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let head = FrameHead {
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    if !on_head(head) {
                        return Ok(Some(at - FRAME_HEAD.min(at)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// How many of `bytes` may be written so that the write ends at a frame boundary (all of
    /// them if no boundary is crossed... then the caller writes them and asks again).
    pub(crate) fn until_boundary(&self, bytes: &[u8]) -> usize {
        let mut probe = Scanner {
            preface_left: 0,
            head: self.head,
            head_len: self.head_len,
            payload_left: self.payload_left,
        };
        let mut at = 0;
        while at < bytes.len() {
            if probe.payload_left > 0 {
                let n = probe.payload_left.min(bytes.len() - at);
                probe.payload_left -= n;
                at += n;
                if probe.payload_left == 0 {
                    return at;
                }
            } else {
                let n = (FRAME_HEAD - probe.head_len).min(bytes.len() - at);
                probe.head[probe.head_len..probe.head_len + n].copy_from_slice(&bytes[at..at + n]);
                probe.head_len += n;
                at += n;
                if probe.head_len == FRAME_HEAD {
                    probe.head_len = 0;
                    let h = probe.head;
                    probe.payload_left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    if probe.payload_left == 0 {
                        return at;
                    }
                }
            }
        }
        at
    }
}

/// A GOAWAY frame: `last_stream` (`0x7fff_ffff`: "no new streams, every open one may
/// finish"), error `code`, `debug` data.
pub(crate) fn goaway(last_stream: u32, code: u32, debug: &[u8]) -> Vec<u8> {
    let len = 8 + debug.len();
    let mut frame = Vec::with_capacity(FRAME_HEAD + len);
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_be_bytes()[1..]);
    frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(debug);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goaway_frames_are_seen_byte_by_byte() {
        let mut bytes = goaway(7, 0, b"bye");
        bytes.extend(goaway(0x7fff_ffff, 0, b""));
        let mut scanner = Scanner::new(false);
        let mut seen = Vec::new();
        for b in &bytes {
            scanner
                .feed(std::slice::from_ref(b), |head| {
                    seen.push(head.kind);
                    true
                })
                .unwrap();
        }
        assert_eq!(seen, [GOAWAY, GOAWAY]);
        assert!(scanner.at_boundary());
        assert_eq!(&bytes[9..13], &7u32.to_be_bytes());
    }
}
