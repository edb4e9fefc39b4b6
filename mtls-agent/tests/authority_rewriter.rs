//! `AuthorityRewriter` never forwards a header list larger than the limit it enforces, even
//! after replacing `:authority` values with the (longer) `localhost`. Regression from the
//! `authority` fuzz target (fuzz/README.md).
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mtls_agent::AuthorityRewriter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn headers_frame(block: &[u8]) -> Vec<u8> {
    let len = block.len();
    let mut f = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0x1,
        0x4,
        0,
        0,
        0,
        1,
    ];
    f.extend_from_slice(block);
    f
}

/// `n` literal `:authority` fields (without indexing) with an empty value: 42 bytes each
/// in the RFC 7541 §4.1 size, 51 once the rewriter has made each `localhost`.
fn empty_authorities(n: usize) -> Vec<u8> {
    let mut block = Vec::new();
    for _ in 0..n {
        block.push(0);
        block.push(10);
        block.extend_from_slice(b":authority");
        block.push(0);
    }
    block
}

#[test]
fn a_rewritten_header_list_over_the_limit_is_refused() {
    let limit = 16 * 1024;
    // 390 * 42 = 16380 bytes as sent (within the limit), 390 * 51 = 19890 as rewritten.
    let mut input = PREFACE.to_vec();
    input.extend(headers_frame(&empty_authorities(390)));
    let mut out = Vec::new();
    let err = AuthorityRewriter::new(limit)
        .feed(&input, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("expected at most 16384"), "{err}");
}

#[test]
fn a_rewritten_header_list_within_the_limit_passes() {
    // 300 * 51 = 15300 bytes after the rewrite: forwarded.
    let mut input = PREFACE.to_vec();
    input.extend(headers_frame(&empty_authorities(300)));
    let mut out = Vec::new();
    AuthorityRewriter::new(16 * 1024)
        .feed(&input, &mut out)
        .unwrap();
    assert!(out.len() > PREFACE.len() + 300 * 9);
}
