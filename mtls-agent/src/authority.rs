//! Accepting gRPC clients that send a socket path as `:authority`.
//!
//! gRPC C-core (Python, Ruby, PHP, C++; since 1.57), grpc-java and grpc-swift send the
//! percent-encoded socket path (`tmp%2Fagent%2Fworkload.sock`) as the HTTP/2 `:authority`
//! of a call over a Unix socket. The `h2` crate under tonic rejects that value as a
//! malformed authority and resets the stream (PROTOCOL_ERROR), and has no option to relax
//! the check (hyperium/h2#487 is still open). SPIRE's Go server accepts it — so a SPIFFE
//! Workload API must too: py-spiffe, for one, cannot be told to send anything else.
//!
//! So each accepted Unix connection goes through a small rewriter before tonic sees it:
//! client-to-server HTTP/2 frames are parsed; every header block (HEADERS + CONTINUATION) is
//! HPACK-decoded with the client's dynamic table, an `:authority` that is not a valid URI
//! authority is replaced by `localhost`, and the block is re-encoded with literals that do
//! not touch the server's dynamic table. All other frames, and the whole server-to-client
//! direction, are copied unchanged. The peer credentials of the real socket travel with
//! the connection ([`PeerConn`]), so caller attestation is unaffected.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value: the most a server must accept.
const MAX_FRAME: usize = 16_384;
/// Bound on one header block (tonic's default max header list size is 16 KiB; be generous).
const MAX_BLOCK: usize = 256 * 1024;

/// One accepted connection, after the rewriter, with the credentials of the real socket.
#[derive(Debug)]
pub(crate) struct PeerConn {
    io: DuplexStream,
    info: UdsConnectInfo,
}

impl Connected for PeerConn {
    type ConnectInfo = UdsConnectInfo;
    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts on `listener`, putting each connection behind the rewriter.
pub(crate) fn incoming(listener: UnixListener) -> ReceiverStream<io::Result<PeerConn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let conn = match accepted {
                Ok((stream, _)) => {
                    let info = stream.connect_info();
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(pump(stream, ours));
                    Ok(PeerConn { io: theirs, info })
                }
                Err(e) => Err(e),
            };
            if tx.send(conn).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Copies server→client unchanged and client→server through the [`Rewriter`].
async fn pump(client: UnixStream, server: DuplexStream) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = tokio::io::split(server);
    let down = async {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    let up = async {
        let mut rewriter = Rewriter::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(16 * 1024);
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            out.clear();
            if let Err(reason) = rewriter.feed(&buf[..n], &mut out) {
                tracing::debug!(%reason, "closing a Workload API connection with an unparsable HTTP/2 stream");
                break;
            }
            if server_w.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = server_w.shutdown().await;
    };
    tokio::join!(down, up);
}

/// The client-to-server half: HTTP/2 frames in, the same frames out with header blocks
/// re-encoded and a bad `:authority` replaced.
#[derive(Default)]
pub(crate) struct Rewriter {
    buf: Vec<u8>,
    state: State,
    decoder: fluke_hpack::Decoder<'static>,
    /// A HEADERS frame waiting for its CONTINUATIONs: (stream id, END_STREAM, block).
    pending: Option<(u32, bool, Vec<u8>)>,
}

#[derive(Default, PartialEq, Eq)]
enum State {
    #[default]
    Preface,
    Frames,
    /// Not HTTP/2 with prior knowledge: copy as is and let the server answer.
    Passthrough,
}

impl Rewriter {
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.state == State::Passthrough {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.buf.extend_from_slice(input);
        if self.state == State::Preface {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                self.state = State::Passthrough;
                out.append(&mut self.buf);
                return Ok(());
            }
            if self.buf.len() < PREFACE.len() {
                return Ok(());
            }
            out.extend(self.buf.drain(..PREFACE.len()));
            self.state = State::Frames;
        }
        loop {
            if self.buf.len() < 9 {
                return Ok(());
            }
            let len = usize::from(self.buf[0]) << 16
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]);
            if self.buf.len() < 9 + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.buf.drain(..9 + len).collect();
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            let payload = &frame[9..];
            match kind {
                HEADERS => {
                    if self.pending.is_some() {
                        return Err("HEADERS while a header block is open".into());
                    }
                    let fragment = header_fragment(flags, payload)?;
                    let block = (stream, flags & END_STREAM != 0, fragment.to_vec());
                    if flags & END_HEADERS != 0 {
                        self.emit(block, out)?;
                    } else {
                        self.pending = Some(block);
                    }
                }
                CONTINUATION => {
                    let Some(mut block) = self.pending.take() else {
                        return Err("CONTINUATION without HEADERS".into());
                    };
                    if block.0 != stream {
                        return Err("CONTINUATION on another stream".into());
                    }
                    block.2.extend_from_slice(payload);
                    if block.2.len() > MAX_BLOCK {
                        return Err("header block too large".into());
                    }
                    if flags & END_HEADERS != 0 {
                        self.emit(block, out)?;
                    } else {
                        self.pending = Some(block);
                    }
                }
                _ if self.pending.is_some() => {
                    return Err("frame interleaved in a header block".into());
                }
                _ => out.extend_from_slice(&frame),
            }
        }
    }

    fn emit(
        &mut self,
        (stream, end_stream, block): (u32, bool, Vec<u8>),
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let fields = self
            .decoder
            .decode(&block)
            .map_err(|e| format!("HPACK: {e:?}"))?;
        let mut encoded = Vec::with_capacity(block.len() * 2);
        for (name, value) in &fields {
            let value: &[u8] = if name == b":authority" && !valid_authority(value) {
                tracing::trace!(presented = %String::from_utf8_lossy(value), "replacing :authority with localhost");
                b"localhost"
            } else {
                value
            };
            // Literal header field without indexing, new name (RFC 7541 §6.2.2).
            encoded.push(0);
            encode_string(name, &mut encoded);
            encode_string(value, &mut encoded);
        }
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
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

fn header_fragment(flags: u8, payload: &[u8]) -> Result<&[u8], String> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or("PADDED HEADERS without a pad length")?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..).ok_or("PRIORITY HEADERS too short")?;
    }
    p.get(
        ..p.len()
            .checked_sub(pad)
            .ok_or("padding longer than the frame")?,
    )
    .ok_or_else(|| "bad padding".to_owned())
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
        let mut r = Rewriter::default();
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
        Rewriter::default().feed(&input, &mut out).unwrap();
        assert_eq!(&out[PREFACE.len()..PREFACE.len() + 9], &settings);
        assert_eq!(decode_all(&out)[0][0].1, b"localhost:1234");
    }

    #[test]
    fn not_http2_passes_through_and_garbage_is_refused() {
        let mut out = Vec::new();
        Rewriter::default()
            .feed(b"GET / HTTP/1.1\r\n\r\n", &mut out)
            .unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&[0xff, 0xff, 0xff], END_HEADERS));
        assert!(Rewriter::default().feed(&input, &mut Vec::new()).is_err());
        let mut input = PREFACE.to_vec();
        let mut cont = Vec::new();
        write_frame(CONTINUATION, END_HEADERS, 1, &[], &mut cont);
        input.extend(cont);
        let err = Rewriter::default()
            .feed(&input, &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("CONTINUATION without HEADERS"), "{err}");
    }

    #[test]
    fn integers_encode_per_rfc7541() {
        // C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_int(1337, 5, 0, &mut out);
        assert_eq!(out, [31, 154, 10]);
    }
}
