//! SPIFFE authorization: the per-handshake `Authorizer` decision for the named policies
//! and combinators, plus parsing the presented SPIFFE ID that feeds it.
//!
//! `cargo bench -p mtls-core --bench authorize -- --quick`
// A bench may panic on setup errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mtls_core::{Authorize, Authorizer, SpiffeId};

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn bench(c: &mut Criterion) {
    let peer = id("spiffe://example.org/ns/prod/sa/web");
    let many: Vec<SpiffeId> = (0..100)
        .map(|i| id(&format!("spiffe://example.org/ns/prod/sa/svc-{i}")))
        .chain([peer.clone()])
        .collect();
    let cases: Vec<(&str, Authorize)> = vec![
        ("exact", Authorize::exact(peer.clone())),
        ("one_of_101_last", Authorize::one_of(many)),
        (
            "member_of",
            Authorize::member_of("example.org".parse().unwrap()),
        ),
        (
            "member_of_and_path_prefix",
            Authorize::member_of("example.org".parse().unwrap())
                .and(Authorize::path_prefix("/ns/prod")),
        ),
        (
            "or_chain_of_3_last",
            Authorize::exact(id("spiffe://example.org/ns/prod/sa/a"))
                .or(Authorize::path_prefix("/ns/staging"))
                .or(Authorize::member_of("example.org".parse().unwrap())),
        ),
        (
            "custom_closure",
            Authorize::custom("service accounts named web", |id: &SpiffeId| {
                id.path().ends_with("/sa/web")
            }),
        ),
    ];

    let mut group = c.benchmark_group("spiffe_authorization");
    for (name, policy) in &cases {
        assert!(policy.authorize(&peer), "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| black_box(policy).authorize(black_box(&peer)))
        });
    }
    let rejecting = Authorize::member_of("example.org".parse().unwrap())
        .and(Authorize::path_prefix("/ns/production"));
    assert!(!rejecting.authorize(&peer));
    group.bench_function("path_prefix_rejects_sibling", |b| {
        b.iter(|| black_box(&rejecting).authorize(black_box(&peer)))
    });
    // The ID the authorizer sees is parsed from the URI SAN on every handshake.
    group.bench_function("spiffe_id_parse", |b| {
        b.iter(|| SpiffeId::new(black_box("spiffe://example.org/ns/prod/sa/web")).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
