//! P-256 leaf issuance: mtls-certs (all the careful defaults) against raw rcgen doing the
//! same work (fresh P-256 key, same SANs, same KU/EKU and AKI, signed by a P-256 CA).
//!
//! Run briefly: `cargo bench -p mtls-certs --bench issuance -- --quick`.
// A bench may panic on setup failure; there is no caller to return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const SANS: [&str; 2] = ["bench.internal", "127.0.0.1"];

fn issuance(c: &mut Criterion) {
    let mut group = c.benchmark_group("leaf_issuance_p256");

    let ca = CertificateAuthority::new_root(&CaParams::new("Bench Root")).unwrap();
    let params = LeafParams::server(SANS);
    group.bench_function("mtls_certs", |b| {
        b.iter(|| black_box(ca.issue(black_box(&params)).unwrap()))
    });

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    group.bench_function("raw_rcgen", |b| {
        b.iter(|| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(SANS.map(String::from).to_vec()).unwrap();
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&key, &issuer).unwrap();
            black_box((cert, key))
        })
    });
    group.finish();
}

criterion_group!(benches, issuance);
criterion_main!(benches);
