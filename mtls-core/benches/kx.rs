//! The cost of post-quantum key exchange: the crypto bound of one handshake's key
//! exchange per group (client key generation + server encapsulation/agreement + client
//! decapsulation/agreement, through rustls' `SupportedKxGroup` on aws-lc-rs), and full
//! in-memory mTLS handshakes under the `classical` and `default` (hybrid) policies. Prints
//! the ClientHello / ServerHello flight sizes of both policies first.
//!
//! `cargo bench -p mtls-core --bench kx -- --quick`
// A bench may panic on setup errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, KxGroup, ServerConfigBuilder, TlsPolicy, TrustBundle,
};
use rustls::crypto::SupportedKxGroup;

#[path = "support/pump.rs"]
mod pump;

/// One key exchange as a handshake does it: client share, server answer, client secret.
fn exchange(group: &dyn SupportedKxGroup) {
    let client = group.start().unwrap();
    let server = group.start_and_complete(client.pub_key()).unwrap();
    let secret = client.complete(&server.pub_key).unwrap();
    assert_eq!(secret.secret_bytes(), server.secret.secret_bytes());
}

/// Full handshake in memory; returns (client first flight, server first flight) sizes.
fn handshake(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> (usize, usize) {
    let (server, sizes) = pump::handshake(server_cfg, client_cfg);
    assert_eq!(server.handshake_kind(), Some(rustls::HandshakeKind::Full));
    sizes
}

fn bench(c: &mut Criterion) {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // The policy's groups, and ML-KEM-768 alone (the hybrid's post-quantum half).
    let mut groups: Vec<(&str, &'static dyn SupportedKxGroup)> =
        [KxGroup::X25519, KxGroup::Secp256r1, KxGroup::X25519Mlkem768]
            .into_iter()
            .map(|kx| {
                let found = *provider
                    .kx_groups
                    .iter()
                    .find(|g| g.name() == kx.named_group())
                    .unwrap();
                (kx.envoy_name(), found)
            })
            .collect();
    groups.push(("MLKEM768", rustls::crypto::aws_lc_rs::kx_group::MLKEM768));

    // The whole exchange (for ML-KEM: keygen + encapsulate + decapsulate).
    let mut group = c.benchmark_group("kx");
    group.throughput(Throughput::Elements(1));
    for (name, kx) in &groups {
        group.bench_function(*name, |b| b.iter(|| exchange(*kx)));
    }
    group.finish();

    // The server's share of each exchange alone (for ML-KEM: encapsulation): answering a
    // client share that is made once, outside the loop — what a handshake server pays.
    let mut group = c.benchmark_group("kx_server");
    group.throughput(Throughput::Elements(1));
    for (name, kx) in groups {
        let client = kx.start().unwrap();
        let share = client.pub_key().to_vec();
        group.bench_function(name, |b| b.iter(|| kx.start_and_complete(&share).unwrap()));
    }
    group.finish();

    let root = CertificateAuthority::new_root(&CaParams::new("bench root")).unwrap();
    let issue = |id: &str| {
        let leaf = root
            .issue(&LeafParams::svid(SpiffeId::new(id).unwrap()))
            .unwrap();
        Arc::new(Identity::from_pem(leaf.chain_pem(), leaf.key_pem()).unwrap())
    };
    let (server_id, client_id) = (
        issue("spiffe://example.org/ns/prod/sa/api"),
        issue("spiffe://example.org/ns/prod/sa/web"),
    );
    let trust = Arc::new(
        TrustBundle::spiffe()
            .add_domain_pem("example.org".parse().unwrap(), root.cert_pem())
            .unwrap(),
    );
    let mut group = c.benchmark_group("mtls_handshake_policy");
    group.throughput(Throughput::Elements(1));
    for (name, policy) in [
        ("classical", TlsPolicy::classical()),
        ("hybrid", TlsPolicy::default()),
    ] {
        let client = Arc::new(
            ClientConfigBuilder::new(Arc::clone(&client_id), Arc::clone(&trust))
                .authorize(Authorize::exact(
                    "spiffe://example.org/ns/prod/sa/api".parse().unwrap(),
                ))
                .tls_policy(policy.clone())
                .build()
                .unwrap(),
        );
        let server = Arc::new(
            ServerConfigBuilder::new(Arc::clone(&server_id), Arc::clone(&trust))
                .authorize(Authorize::member_of("example.org".parse().unwrap()))
                .tls_policy(policy)
                .build()
                .unwrap(),
        );
        let (hello, server_flight) = handshake(&server, &client);
        println!(
            "{name}: ClientHello {hello} bytes; server's first flight (ServerHello..Finished) {server_flight} bytes"
        );
        group.bench_function(name, |b| b.iter(|| handshake(&server, &client)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
