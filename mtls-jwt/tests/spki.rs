//! `PublicKey::from_spki_der` reads DER, not "DER followed by anything": regressions from
//! the `spki` fuzz target (fuzz/README.md).
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mtls_jwt::{Algorithm, Error, PublicKey, SigningKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;

fn spki_of(alg: Algorithm) -> Vec<u8> {
    let key = SigningKey::generate(alg).unwrap();
    SubjectPublicKeyInfoDer::from_pem_slice(key.public_pem().as_bytes())
        .unwrap()
        .to_vec()
}

fn refused(der: &[u8]) -> String {
    match PublicKey::from_spki_der(der) {
        Err(e @ Error::InvalidKey { .. }) => e.to_string(),
        other => panic!("expected InvalidKey, got {other:?}"),
    }
}

#[test]
fn trailing_bytes_after_the_spki_are_refused() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let der = spki_of(alg);
        assert!(PublicKey::from_spki_der(&der).is_ok(), "{alg}");
        let mut trailing = der.clone();
        trailing.push(0);
        let e = refused(&trailing);
        assert!(e.contains("trailing"), "{alg}: {e}");
    }
}

#[test]
fn extra_elements_and_non_minimal_lengths_are_refused() {
    // P-256 SPKI: 30 59 30 13 <alg id> 03 42 00 04 <x y>. Append a NULL inside the outer
    // SEQUENCE (length 0x5b): an element after the key.
    let der = spki_of(Algorithm::ES256);
    assert_eq!(&der[..2], &[0x30, 0x59]);
    let mut extra = vec![0x30, 0x5b];
    extra.extend_from_slice(&der[2..]);
    extra.extend_from_slice(&[0x05, 0x00]);
    refused(&extra);

    // The same SPKI with its outer length in long form (81 59): BER, not DER.
    let mut long = vec![0x30, 0x81, 0x59];
    long.extend_from_slice(&der[2..]);
    refused(&long);
}

#[test]
fn rsa_key_with_bytes_after_the_exponent_is_refused() {
    // RSAPublicKey ::= SEQUENCE { n, e }: a third INTEGER inside is not an RSA key.
    let der = spki_of(Algorithm::RS256);
    // 30 82 01 22 | 30 0d <rsaEncryption NULL> | 03 82 01 0f 00 | 30 82 01 0a n e
    assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x22]);
    let mut body = der[4..].to_vec();
    // grow BIT STRING (offset 15..17 of body: 03 82 01 0f) and the RSAPublicKey SEQUENCE
    assert_eq!(&body[15..19], &[0x03, 0x82, 0x01, 0x0f]);
    body[18] += 3;
    assert_eq!(&body[20..24], &[0x30, 0x82, 0x01, 0x0a]);
    body[23] += 3;
    body.extend_from_slice(&[0x02, 0x01, 0x01]);
    let mut grown = vec![0x30, 0x82, 0x01, 0x25];
    grown.extend(body);
    refused(&grown);
}
