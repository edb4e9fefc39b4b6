//! The agent's HTTP/2 `:authority` rewriter, on a Unix socket any local process can reach.

use fluke_hpack::Decoder;
use mtls_agent::{AuthorityRewriter, MAX_FRAME_SIZE};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const LIMIT: u32 = 16 * 1024;

/// `data` = a mode byte, then client-to-server bytes (after the preface when the mode is
/// even; the preface itself is fuzzed when it is odd). Fed at once and in pieces of
/// `mode / 2` bytes, the rewriter must give the same verdict and the same bytes; once it
/// fails it keeps failing; what it writes is the preface followed by whole frames no larger
/// than SETTINGS_MAX_FRAME_SIZE, whose header blocks decode on their own (no dynamic table)
/// within the header-list limit and carry only valid `:authority` values.
pub fn authority(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode % 2 == 0 {
        [PREFACE, rest].concat()
    } else {
        rest.to_vec()
    };

    let mut whole = AuthorityRewriter::new(LIMIT);
    let mut out = Vec::new();
    let verdict = whole.feed(&input, &mut out);

    let step = usize::from(mode / 2).max(1);
    let mut pieces = AuthorityRewriter::new(LIMIT);
    let mut out_pieces = Vec::new();
    let mut verdict_pieces = Ok(());
    for piece in input.chunks(step) {
        verdict_pieces = pieces.feed(piece, &mut out_pieces);
        if verdict_pieces.is_err() {
            break;
        }
    }
    match (&verdict, &verdict_pieces) {
        (Ok(()), Ok(())) => assert_eq!(out, out_pieces, "output depends on how input arrives"),
        (Err(_), Err(_)) => {
            assert!(
                whole.feed(b"", &mut Vec::new()).is_err(),
                "a failed rewriter recovered"
            );
        }
        _ => panic!("fed at once: {verdict:?}; in {step}-byte pieces: {verdict_pieces:?}"),
    }
    assert!(
        out.len() <= input.len() * 64 + 64 * 1024,
        "{} bytes out for {} in",
        out.len(),
        input.len()
    );
    check_output(&out);
}

/// The preface, then whole frames; header blocks decodable without a dynamic table.
fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let mut rest = out
        .strip_prefix(PREFACE)
        .unwrap_or_else(|| panic!("output does not start with the preface"));
    let mut block: Option<Vec<u8>> = None;
    while !rest.is_empty() {
        assert!(rest.len() >= 9, "a partial frame header in the output");
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert!(
            len <= MAX_FRAME_SIZE,
            "a frame of {len} bytes in the output"
        );
        assert!(rest.len() >= 9 + len, "a partial frame in the output");
        let (kind, flags, payload) = (rest[3], rest[4], &rest[9..9 + len]);
        match (kind, &mut block) {
            (HEADERS, None) => block = Some(payload.to_vec()),
            (CONTINUATION, Some(b)) => b.extend_from_slice(payload),
            (HEADERS | CONTINUATION, _) => panic!("header blocks out of order in the output"),
            (_, Some(_)) => panic!("a frame inside a header block in the output"),
            _ => {}
        }
        if matches!(kind, HEADERS | CONTINUATION)
            && flags & END_HEADERS != 0
            && let Some(b) = block.take()
        {
            let mut fresh = Decoder::new();
            let fields = fresh
                .decode(&b)
                .unwrap_or_else(|e| panic!("an output header block does not decode: {e:?}"));
            let size: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
            assert!(size <= LIMIT as usize, "header list of {size} bytes passed");
            for (name, value) in &fields {
                if name == b":authority" {
                    assert!(
                        http::uri::Authority::try_from(value.as_slice()).is_ok(),
                        "invalid :authority {value:?} passed"
                    );
                }
            }
        }
        rest = &rest[9 + len..];
    }
}
