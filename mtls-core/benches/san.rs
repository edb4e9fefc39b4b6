//! SAN matching (Envoy's `match_typed_subject_alt_names` semantics): the per-handshake
//! policy check, for each matcher kind, for a list where only the last matcher matches,
//! and the SAN extraction from a certificate that precedes it.
//!
//! `cargo bench -p mtls-core --bench san -- --quick`
// A bench may panic on setup errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{PeerIdentity, SanMatcher, SubjectAltName};

fn matcher(yaml: &str) -> Vec<SanMatcher> {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn bench(c: &mut Criterion) {
    let sans = [
        SubjectAltName::Dns("api.prod.svc.cluster.local".into()),
        SubjectAltName::Uri("spiffe://example.org/ns/prod/sa/web".into()),
    ];
    let cases = [
        (
            "uri_exact",
            r#"[{san_type: URI, matcher: {exact: "spiffe://example.org/ns/prod/sa/web"}}]"#,
        ),
        (
            "uri_prefix",
            r#"[{san_type: URI, matcher: {prefix: "spiffe://example.org/ns/prod/"}}]"#,
        ),
        (
            "uri_prefix_ignore_case",
            r#"[{san_type: URI, matcher: {prefix: "SPIFFE://Example.org/ns/prod/", ignore_case: true}}]"#,
        ),
        (
            "uri_safe_regex",
            r#"[{san_type: URI, matcher: {safe_regex: {regex: "spiffe://example\\.org/ns/[a-z]+/sa/web"}}}]"#,
        ),
        (
            "dns_exact_vs_wildcard_san",
            r#"[{san_type: DNS, matcher: {exact: "api.prod.svc.cluster.local"}}]"#,
        ),
        (
            "list_of_5_last_matches",
            r#"[
              {san_type: DNS, matcher: {exact: "other.internal"}},
              {san_type: EMAIL, matcher: {suffix: "@example.org"}},
              {san_type: URI, matcher: {prefix: "spiffe://example.org/ns/staging/"}},
              {san_type: IP_ADDRESS, matcher: {exact: "10.0.0.1"}},
              {san_type: URI, matcher: {suffix: "/sa/web"}}
            ]"#,
        ),
        (
            "no_match_list_of_3",
            r#"[
              {san_type: URI, matcher: {prefix: "spiffe://example.org/ns/staging/"}},
              {san_type: DNS, matcher: {suffix: ".staging.internal"}},
              {san_type: URI, matcher: {contains: "/sa/admin"}}
            ]"#,
        ),
    ];
    let wildcard = [SubjectAltName::Dns("*.prod.svc.cluster.local".into())];

    let mut group = c.benchmark_group("san_matching");
    for (name, yaml) in cases {
        let policy = matcher(yaml);
        let presented: &[SubjectAltName] = if name.starts_with("dns_") {
            &wildcard
        } else {
            &sans
        };
        let expected = !name.starts_with("no_match");
        assert_eq!(
            SanMatcher::matches_any(&policy, presented),
            expected,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| SanMatcher::matches_any(black_box(&policy), black_box(presented)))
        });
    }

    // What precedes the match on every handshake: the leaf's SANs read from DER.
    let ca = CertificateAuthority::new_root(&CaParams::new("bench root")).unwrap();
    let leaf = ca
        .issue(
            &LeafParams::svid(SpiffeId::new("spiffe://example.org/ns/prod/sa/web").unwrap())
                .add_dns_name("web.prod.svc.cluster.local"),
        )
        .unwrap();
    let chain = leaf.cert_chain();
    group.bench_function("peer_identity_from_chain", |b| {
        b.iter(|| PeerIdentity::from_chain(black_box(&chain)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
