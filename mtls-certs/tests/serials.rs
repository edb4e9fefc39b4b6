//! 1,000 issued serials are distinct, positive, and each carries at least 64 bits of entropy.
// Tests may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use mtls_certs::{CaParams, CertificateAuthority, CertificateSummary, LeafParams};

#[test]
fn thousand_serials_are_distinct_and_random() {
    let ca = CertificateAuthority::new_root(&CaParams::new("Serial Root")).unwrap();
    let mut seen = HashSet::new();
    let mut ones = [0u32; 160];
    for i in 0..1000 {
        let leaf = ca
            .issue(&LeafParams::server([format!("s{i}.internal")]))
            .unwrap();
        // read the serial back from the certificate itself
        let summary = CertificateSummary::from_der(leaf.cert_der()).unwrap();
        assert_eq!(&summary.serial, leaf.certificate().serial());
        let serial = summary.serial.as_bytes().to_vec();
        assert_eq!(serial.len(), 20, "160-bit field");
        assert!(serial[0] & 0x80 == 0, "positive");
        assert!(serial[0] != 0, "minimal encoding");
        let bits = 160 - serial[0].leading_zeros() as usize;
        assert!(
            bits >= 153,
            "serial has {bits} significant bits (< 64 would fail the bar)"
        );
        for (i, byte) in serial.iter().enumerate() {
            for b in 0..8 {
                if byte & (0x80 >> b) != 0 {
                    ones[i * 8 + b] += 1;
                }
            }
        }
        assert!(seen.insert(serial), "duplicate serial");
    }
    // Each of the 152 free bits (after the first byte) is set about half the time: a fixed or
    // counter-like serial would fail this. 1000 fair coin flips stay within 500 ± 120 with
    // overwhelming probability (7.6 sigma).
    for (bit, count) in ones.iter().enumerate().skip(8) {
        assert!(
            (380..=620).contains(count),
            "bit {bit} set {count}/1000 times"
        );
    }
    // So at least 152 bits of each serial are random: >= 64 bits of entropy.
}
