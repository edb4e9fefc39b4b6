//! Accepting gRPC clients that send a socket path as `:authority`.
//!
//! gRPC C-core (Python, Ruby, PHP, C++; since 1.57), grpc-java and grpc-swift send the
//! percent-encoded socket path (`tmp%2Fagent%2Fworkload.sock`) as the HTTP/2 `:authority`
//! of a call over a Unix socket. The `h2` crate under tonic rejects that value as a
//! malformed authority and resets the stream (PROTOCOL_ERROR), and has no option to relax
//! the check (hyperium/h2#487 is still open; h2 0.4's server parses `:authority` with
//! `http::uri::Authority` unconditionally). SPIRE's Go server accepts it — so a SPIFFE
//! Workload API must too: py-spiffe, for one, cannot be told to send anything else.
//!
//! So each accepted Workload API connection goes through [`AuthorityRewriter`] before tonic
//! sees it: client-to-server HTTP/2 frames are parsed; every header block (HEADERS +
//! CONTINUATION) is HPACK-decoded with the client's dynamic table, an `:authority` that is
//! not a valid URI authority is replaced by `localhost`, and the block is re-encoded with
//! literals that do not touch the server's dynamic table. All other frames, and the whole
//! server-to-client direction, are copied unchanged.
//!
//! The rewriter runs before any identity is known, so it enforces h2's limits itself and
//! never holds more than one frame plus one bounded header block per connection:
//! - a frame header announcing more than [`MAX_FRAME_SIZE`] (the servers'
//!   SETTINGS_MAX_FRAME_SIZE) is refused as soon as its 9 bytes arrive;
//! - a header block (HEADERS + CONTINUATIONs) may hold at most twice the header-list limit
//!   in encoded bytes and [`MAX_CONTINUATIONS`] CONTINUATION frames;
//! - HPACK decoding counts the decoded header-list size (RFC 7541 §4.1: name + value + 32
//!   per field) and stops keeping fields past the limit, so an entry indexed a million
//!   times is counted, not copied; the block is then refused;
//! - dynamic-table size updates above the servers' SETTINGS_HEADER_TABLE_SIZE (4096) or
//!   after the first field are refused, and every HPACK representation is checked to be
//!   complete before the decoder sees it.
//!
//! A refusal closes the connection (h2 would answer such input with a connection error).

use fluke_hpack::Decoder;

use crate::error::{Error, Result};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest HTTP/2 frame payload the agent's servers accept (their
/// SETTINGS_MAX_FRAME_SIZE: the protocol's initial value, 16 KiB).
pub const MAX_FRAME_SIZE: usize = 16_384;
/// The most CONTINUATION frames one header block may have (legitimate clients send one or
/// two; this stops a flood of empty ones).
pub const MAX_CONTINUATIONS: usize = 32;
/// SETTINGS_HEADER_TABLE_SIZE of the servers (HPACK's default): the largest dynamic table a
/// client may ask for.
const HEADER_TABLE_SIZE: usize = 4096;

/// The client-to-server half of a Workload API connection: HTTP/2 bytes in, the same
/// frames out with header blocks re-encoded and a bad `:authority` replaced by `localhost`.
///
/// A pure function of the bytes fed (no I/O, no clock), so it can be driven by a fuzzer:
/// whatever the input, it returns an error or output, never panics, and holds at most one
/// frame plus one bounded header block.
///
/// ```
/// use mtls_agent::AuthorityRewriter;
/// let mut rewriter = AuthorityRewriter::new(16 * 1024);
/// let mut out = Vec::new();
/// rewriter.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &mut out)?;
/// assert!(rewriter.preface_done());
/// // A frame header announcing a 16 MiB payload is refused at once.
/// assert!(rewriter.feed(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0], &mut out).is_err());
/// # Ok::<(), mtls_agent::Error>(())
/// ```
pub struct AuthorityRewriter {
    buf: Vec<u8>,
    preface_done: bool,
    failed: bool,
    decoder: Decoder<'static>,
    max_header_list_size: usize,
    /// A HEADERS frame waiting for its CONTINUATIONs.
    pending: Option<Pending>,
}

struct Pending {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    continuations: usize,
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("buffered", &self.buf.len())
            .field("preface_done", &self.preface_done)
            .field("failed", &self.failed)
            .field("max_header_list_size", &self.max_header_list_size)
            .finish_non_exhaustive()
    }
}

fn refuse(reason: impl Into<String>) -> Error {
    Error::Http2 {
        reason: reason.into(),
    }
}

impl AuthorityRewriter {
    /// A rewriter refusing header blocks whose decoded size (RFC 7541 §4.1) exceeds
    /// `max_header_list_size` (the servers' SETTINGS_MAX_HEADER_LIST_SIZE).
    pub fn new(max_header_list_size: u32) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            buf: Vec::new(),
            preface_done: false,
            failed: false,
            decoder,
            max_header_list_size: max_header_list_size as usize,
            pending: None,
        }
    }

    /// Whether the whole HTTP/2 connection preface has arrived.
    pub fn preface_done(&self) -> bool {
        self.preface_done
    }

    /// Feeds bytes read from the client; appends what to send to the server to `out`.
    /// Input may arrive in any pieces. After an error, every later call fails too.
    ///
    /// # Errors
    /// [`Error::Http2`] naming the violated limit or the malformed part (never echoing
    /// the client's bytes): the connection must then be closed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(refuse("the connection already failed"));
        }
        let result = self.feed_inner(input, out);
        if result.is_err() {
            self.failed = true;
            self.buf = Vec::new();
            self.pending = None;
        }
        result
    }

    fn feed_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.buf.extend_from_slice(input);
        if !self.preface_done {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                return Err(refuse(
                    "not an HTTP/2 connection: expected the prior-knowledge preface",
                ));
            }
            if self.buf.len() < PREFACE.len() {
                return Ok(());
            }
            out.extend(self.buf.drain(..PREFACE.len()));
            self.preface_done = true;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0;
        let result = loop {
            let rest = &buf[at..];
            if rest.len() < 9 {
                break Ok(());
            }
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            if len > MAX_FRAME_SIZE {
                break Err(refuse(format!(
                    "frame of {len} bytes announced; expected at most {MAX_FRAME_SIZE} (SETTINGS_MAX_FRAME_SIZE)"
                )));
            }
            if rest.len() < 9 + len {
                break Ok(());
            }
            let frame = &rest[..9 + len];
            at += 9 + len;
            if let Err(e) = self.frame(frame, out) {
                break Err(e);
            }
        };
        self.buf = buf;
        self.buf.drain(..at);
        result
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        let max_block = self.max_header_list_size.saturating_mul(2);
        match kind {
            HEADERS => {
                if self.pending.is_some() {
                    return Err(refuse("HEADERS while a header block is open"));
                }
                let fragment = header_fragment(flags, payload)?;
                if fragment.len() > max_block {
                    return Err(refuse(format!(
                        "header block of {} bytes; expected at most {max_block}",
                        fragment.len()
                    )));
                }
                let pending = Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    block: fragment.to_vec(),
                    continuations: 0,
                };
                if flags & END_HEADERS != 0 {
                    self.emit(pending, out)?;
                } else {
                    self.pending = Some(pending);
                }
            }
            CONTINUATION => {
                let Some(mut pending) = self.pending.take() else {
                    return Err(refuse("CONTINUATION without HEADERS"));
                };
                if pending.stream != stream {
                    return Err(refuse("CONTINUATION on another stream"));
                }
                pending.continuations += 1;
                if pending.continuations > MAX_CONTINUATIONS {
                    return Err(refuse(format!(
                        "more than {MAX_CONTINUATIONS} CONTINUATION frames in one header block"
                    )));
                }
                if pending.block.len() + payload.len() > max_block {
                    return Err(refuse(format!(
                        "header block of more than {max_block} bytes; expected at most {max_block}"
                    )));
                }
                pending.block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.emit(pending, out)?;
                } else {
                    self.pending = Some(pending);
                }
            }
            _ if self.pending.is_some() => {
                return Err(refuse("frame interleaved in a header block"));
            }
            _ => out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn emit(&mut self, pending: Pending, out: &mut Vec<u8>) -> Result<()> {
        let Pending {
            stream,
            end_stream,
            block,
            ..
        } = pending;
        check_representations(&block)?;
        let limit = self.max_header_list_size;
        let mut size = 0usize;
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.decoder
            .decode_with_cb(&block, |name, value| {
                // Count every field, keep only while within the limit: an entry indexed a
                // million times costs a million additions, not a million copies.
                size = size.saturating_add(name.len() + value.len() + 32);
                if size <= limit {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| refuse(format!("HPACK: {}", mtls_identity::debug_words(&e))))?;
        if size > limit {
            return Err(refuse(format!(
                "decoded header list of {size} bytes; expected at most {limit} (SETTINGS_MAX_HEADER_LIST_SIZE)"
            )));
        }
        let mut encoded = Vec::with_capacity(block.len() * 2);
        // What the server is sent must fit its limit too: `localhost` may be longer than
        // the value it replaces.
        let mut forwarded = 0usize;
        for (name, value) in &fields {
            let value: &[u8] = if name == b":authority" && !valid_authority(value) {
                tracing::trace!(presented = %crate::logging::shown_bytes(value), "replacing :authority with localhost");
                b"localhost"
            } else {
                value
            };
            forwarded = forwarded.saturating_add(name.len() + value.len() + 32);
            if forwarded > limit {
                return Err(refuse(format!(
                    "rewritten header list of more than {limit} bytes; expected at most {limit} (SETTINGS_MAX_HEADER_LIST_SIZE)"
                )));
            }
            // Literal header field without indexing, new name (RFC 7541 §6.2.2).
            encoded.push(0);
            encode_string(name, &mut encoded);
            encode_string(value, &mut encoded);
        }
        let mut chunks = encoded.chunks(MAX_FRAME_SIZE).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let kind = if first { HEADERS } else { CONTINUATION };
            let mut flags = 0;
            if first && end_stream {
                flags |= END_STREAM;
            }
            if last {
                flags |= END_HEADERS;
            }
            write_frame(kind, flags, stream, chunk, out);
            first = false;
        }
        if encoded.is_empty() {
            write_frame(
                HEADERS,
                END_HEADERS | if end_stream { END_STREAM } else { 0 },
                stream,
                &[],
                out,
            );
        }
        Ok(())
    }
}

fn header_fragment(flags: u8, payload: &[u8]) -> Result<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or_else(|| refuse("PADDED HEADERS without a pad length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p
            .get(5..)
            .ok_or_else(|| refuse("PRIORITY HEADERS too short"))?;
    }
    let end = p
        .len()
        .checked_sub(pad)
        .ok_or_else(|| refuse("padding longer than the frame"))?;
    Ok(&p[..end])
}

/// Walks the HPACK representations of `block` (RFC 7541 §6) without decoding them: every
/// integer and string must be complete, and a dynamic-table size update may only come
/// first (§4.2) and stay within SETTINGS_HEADER_TABLE_SIZE. (The HPACK decoder panics on a
/// truncated size update; this keeps such input away from it.)
fn check_representations(block: &[u8]) -> Result<()> {
    let mut at = 0;
    let mut fields = false;
    while at < block.len() {
        let rest = &block[at..];
        let first = rest[0];
        let used = if first & 0x80 != 0 {
            fields = true;
            hpack_int(rest, 7)?.1
        } else if first & 0x40 != 0 {
            fields = true;
            literal_len(rest, 6)?
        } else if first & 0x20 != 0 {
            if fields {
                return Err(refuse(
                    "HPACK dynamic table size update after a header field",
                ));
            }
            let (size, used) = hpack_int(rest, 5)?;
            if size > HEADER_TABLE_SIZE {
                return Err(refuse(format!(
                    "HPACK dynamic table size {size}; expected at most {HEADER_TABLE_SIZE}"
                )));
            }
            used
        } else {
            fields = true;
            literal_len(rest, 4)?
        };
        at += used;
    }
    Ok(())
}

fn literal_len(rest: &[u8], prefix: u32) -> Result<usize> {
    let (index, mut used) = hpack_int(rest, prefix)?;
    if index == 0 {
        used += string_len(&rest[used..])?;
    }
    Ok(used + string_len(&rest[used..])?)
}

fn string_len(rest: &[u8]) -> Result<usize> {
    let (len, used) = hpack_int(rest, 7)?;
    match used.checked_add(len) {
        Some(total) if total <= rest.len() => Ok(total),
        _ => Err(refuse("HPACK string longer than its header block")),
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1): (value, octets used). At most
/// four continuation octets (values up to 2^28), as the decoder allows.
fn hpack_int(buf: &[u8], n: u32) -> Result<(usize, usize)> {
    let truncated = || refuse("HPACK integer cut short");
    let max = (1usize << n) - 1;
    let first = usize::from(*buf.first().ok_or_else(truncated)?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() > 5 {
        Err(refuse("HPACK integer too long"))
    } else {
        Err(truncated())
    }
}

fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn write_frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A raw (not Huffman) HPACK string literal: 7-bit prefix length, then the octets.
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_int(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn encode_int(mut value: usize, n: u32, first_bits: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u32 = 16 * 1024;

    fn headers_frame(block: &[u8], flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        write_frame(HEADERS, flags, 1, block, &mut f);
        f
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = fluke_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut block = Vec::new();
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            if kind == HEADERS || kind == CONTINUATION {
                block.extend_from_slice(&rest[9..9 + len]);
                if flags & END_HEADERS != 0 {
                    out.push(d.decode(&block).unwrap());
                    block.clear();
                }
            }
            rest = &rest[9 + len..];
        }
        out
    }

    #[test]
    fn socket_path_authority_becomes_localhost_and_the_dynamic_table_stays_in_sync() {
        let mut enc = fluke_hpack::Encoder::new();
        let first: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", b"tmp%2Fagent%2Fworkload.sock"),
            (b"workload.spiffe.io", b"true"),
        ];
        let b1 = enc.encode(first.iter().copied());
        // The second call reuses the client's dynamic table (indexed :authority).
        let b2 = enc.encode(first.iter().copied());
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&b1, END_HEADERS));
        // Split the second block across HEADERS + CONTINUATION, with padding.
        let (a, b) = b2.split_at(b2.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(headers_frame(&padded, PADDED | END_STREAM));
        let mut cont = Vec::new();
        write_frame(CONTINUATION, END_HEADERS, 1, b, &mut cont);
        input.extend(cont);
        let mut out = Vec::new();
        let mut r = AuthorityRewriter::new(LIMIT);
        // Byte by byte: frames may arrive in any pieces.
        for byte in &input {
            r.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for block in &blocks {
            let auth = block.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"localhost");
            assert!(
                block
                    .iter()
                    .any(|(n, v)| n == b"workload.spiffe.io" && v == b"true")
            );
        }
        // END_STREAM of the second HEADERS is kept.
        let second = &out[PREFACE.len() + 9 + usize::from(out[PREFACE.len() + 2])..];
        assert_eq!(second[4] & END_STREAM, END_STREAM);
    }

    #[test]
    fn valid_authorities_and_other_frames_pass_unchanged() {
        let mut enc = fluke_hpack::Encoder::new();
        let b = enc.encode([(&b":authority"[..], &b"localhost:1234"[..])]);
        let mut input = PREFACE.to_vec();
        let settings = [0u8, 0, 0, 0x4, 0, 0, 0, 0, 0];
        input.extend_from_slice(&settings);
        input.extend(headers_frame(&b, END_HEADERS));
        let mut out = Vec::new();
        AuthorityRewriter::new(LIMIT)
            .feed(&input, &mut out)
            .unwrap();
        assert_eq!(&out[PREFACE.len()..PREFACE.len() + 9], &settings);
        assert_eq!(decode_all(&out)[0][0].1, b"localhost:1234");
    }

    #[test]
    fn not_http2_and_garbage_are_refused() {
        let err = AuthorityRewriter::new(LIMIT)
            .feed(b"GET / HTTP/1.1\r\n\r\n", &mut Vec::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected the prior-knowledge preface"),
            "{err}"
        );
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&[0xff, 0xff, 0xff], END_HEADERS));
        assert!(
            AuthorityRewriter::new(LIMIT)
                .feed(&input, &mut Vec::new())
                .is_err()
        );
        let mut input = PREFACE.to_vec();
        let mut cont = Vec::new();
        write_frame(CONTINUATION, END_HEADERS, 1, &[], &mut cont);
        input.extend(cont);
        let mut r = AuthorityRewriter::new(LIMIT);
        let err = r.feed(&input, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("CONTINUATION without HEADERS"),
            "{err}"
        );
        // Once failed, always failed.
        assert!(r.feed(PREFACE, &mut Vec::new()).is_err());
    }

    #[test]
    fn an_oversized_frame_header_is_refused_before_its_payload() {
        let mut r = AuthorityRewriter::new(LIMIT);
        let mut out = Vec::new();
        r.feed(PREFACE, &mut out).unwrap();
        // DATA frame announcing 16 MiB - 1: refused on its 9-byte header alone.
        let err = r
            .feed(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1], &mut out)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("frame of 16777215 bytes announced; expected at most 16384"),
            "{err}"
        );
        assert_eq!(out, PREFACE, "nothing of the oversized frame is forwarded");
        // Exactly the maximum passes.
        let mut r = AuthorityRewriter::new(LIMIT);
        let mut input = PREFACE.to_vec();
        write_frame(0x0, 0, 1, &vec![0u8; MAX_FRAME_SIZE], &mut input);
        let mut out = Vec::new();
        r.feed(&input, &mut out).unwrap();
        assert_eq!(out, input);
        assert!(r.buf.is_empty());
    }

    /// The HPACK bomb: one 4 KB entry added to the dynamic table, then indexed over and
    /// over (1 byte each) across CONTINUATIONs. Refused without copying it out.
    #[test]
    fn the_hpack_bomb_is_refused() {
        let mut block = vec![0x40]; // literal with incremental indexing, new name
        encode_string(b"x-bomb", &mut block);
        encode_string(&vec![b'a'; 4000], &mut block);
        block.extend(std::iter::repeat_n(0xbe, LIMIT as usize)); // index 62: the new entry
        let mut input = PREFACE.to_vec();
        let mut chunks = block.chunks(MAX_FRAME_SIZE);
        write_frame(HEADERS, 0, 1, chunks.next().unwrap(), &mut input);
        for chunk in chunks {
            write_frame(CONTINUATION, 0, 1, chunk, &mut input);
        }
        let mut tail = Vec::new();
        write_frame(CONTINUATION, END_HEADERS, 1, &[], &mut tail);
        input.extend(tail);
        let err = AuthorityRewriter::new(LIMIT)
            .feed(&input, &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("decoded header list of"), "{err}");
        assert!(err.to_string().contains("expected at most 16384"), "{err}");

        // The same references within a legitimate budget decode fine.
        let mut block = vec![0x40];
        encode_string(b"x-ok", &mut block);
        encode_string(b"1", &mut block);
        block.extend([0xbe, 0xbe]);
        let mut out = Vec::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&block, END_HEADERS));
        AuthorityRewriter::new(LIMIT)
            .feed(&input, &mut out)
            .unwrap();
        assert_eq!(decode_all(&out)[0].len(), 3);
    }

    #[test]
    fn header_blocks_are_bounded_in_bytes_and_continuations() {
        // Too many bytes in one block (HEADERS + CONTINUATIONs of 16 KiB).
        let mut input = PREFACE.to_vec();
        write_frame(HEADERS, 0, 1, &vec![0u8; MAX_FRAME_SIZE], &mut input);
        write_frame(CONTINUATION, 0, 1, &vec![0u8; MAX_FRAME_SIZE], &mut input);
        write_frame(CONTINUATION, 0, 1, &vec![0u8; MAX_FRAME_SIZE], &mut input);
        let err = AuthorityRewriter::new(LIMIT)
            .feed(&input, &mut Vec::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("header block of more than 32768 bytes"),
            "{err}"
        );
        // A flood of empty CONTINUATIONs.
        let mut input = PREFACE.to_vec();
        write_frame(HEADERS, 0, 1, &[], &mut input);
        for _ in 0..=MAX_CONTINUATIONS {
            write_frame(CONTINUATION, 0, 1, &[], &mut input);
        }
        let err = AuthorityRewriter::new(LIMIT)
            .feed(&input, &mut Vec::new())
            .unwrap_err();
        assert!(
            err.to_string().contains("more than 32 CONTINUATION frames"),
            "{err}"
        );
    }

    #[test]
    fn malformed_or_oversized_table_size_updates_are_refused_not_panicking() {
        for (block, expected) in [
            (&[0x3f][..], "HPACK integer cut short"),
            (
                &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x01][..],
                "HPACK integer too long",
            ),
            (&[0x3f, 0xe1, 0x1f][..], "dynamic table size 4096"),
            (&[0x3f, 0xe2, 0x1f, 0x82][..], "expected at most 4096"),
            (&[0x82, 0x20][..], "size update after a header field"),
            (&[0x0f][..], "HPACK integer cut short"),
            (
                &[0x00, 0x05, b'a'][..],
                "HPACK string longer than its header block",
            ),
        ] {
            let mut input = PREFACE.to_vec();
            input.extend(headers_frame(block, END_HEADERS));
            let result = AuthorityRewriter::new(LIMIT).feed(&input, &mut Vec::new());
            if expected == "dynamic table size 4096" {
                // 4096 itself is allowed (then the block ends in a size update: refused
                // by the decoder, but not for its size).
                let err = result.unwrap_err().to_string();
                assert!(!err.contains("expected at most 4096"), "{err}");
                continue;
            }
            let err = result.unwrap_err().to_string();
            assert!(err.contains(expected), "{block:02x?}: {err}");
        }
    }

    #[test]
    fn hpack_integers_decode_per_rfc7541() {
        assert_eq!(hpack_int(&[31, 154, 10], 5).unwrap(), (1337, 3));
        assert_eq!(hpack_int(&[10], 5).unwrap(), (10, 1));
        assert_eq!(hpack_int(&[127, 0], 7).unwrap(), (127, 2));
        assert!(hpack_int(&[], 7).is_err());
    }

    #[test]
    fn integers_encode_per_rfc7541() {
        // C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_int(1337, 5, 0, &mut out);
        assert_eq!(out, [31, 154, 10]);
    }
}
