//! Full mTLS handshakes per second: mtls-core's client-certificate verifier (SPIFFE bundle
//! set + X509-SVID rules + authorizer) against rustls' own `WebPkiClientVerifier`, in the
//! same run, same certificates, same client, in memory (no sockets: this measures CPU).
//!
//! `cargo bench -p mtls-core --bench handshake -- --quick`
// A bench may panic on setup errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{Authorize, ClientConfigBuilder, Identity, ServerConfigBuilder, TrustBundle};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;

#[path = "support/pump.rs"]
mod pump;

fn handshake(server_cfg: &Arc<rustls::ServerConfig>, client_cfg: &Arc<rustls::ClientConfig>) {
    pump::handshake(server_cfg, client_cfg);
}

fn bench(c: &mut Criterion) {
    let root = CertificateAuthority::new_root(&CaParams::new("bench root")).unwrap();
    let int = root
        .new_intermediate(&CaParams::new("bench intermediate"))
        .unwrap();
    let issue = |id: &str| {
        int.issue(&LeafParams::svid(SpiffeId::new(id).unwrap()))
            .unwrap()
    };
    let server_leaf = issue("spiffe://example.org/ns/prod/sa/api");
    let client_leaf = issue("spiffe://example.org/ns/prod/sa/web");
    let server_id =
        Arc::new(Identity::from_pem(server_leaf.chain_pem(), server_leaf.key_pem()).unwrap());
    let client_id =
        Arc::new(Identity::from_pem(client_leaf.chain_pem(), client_leaf.key_pem()).unwrap());
    let spiffe = Arc::new(
        TrustBundle::spiffe()
            .add_domain_pem("example.org".parse().unwrap(), root.cert_pem())
            .unwrap(),
    );

    let client = Arc::new(
        ClientConfigBuilder::new(Arc::clone(&client_id), Arc::clone(&spiffe))
            .authorize(Authorize::exact(
                "spiffe://example.org/ns/prod/sa/api".parse().unwrap(),
            ))
            .build()
            .unwrap(),
    );
    let ours = Arc::new(
        ServerConfigBuilder::new(Arc::clone(&server_id), Arc::clone(&spiffe))
            .authorize(
                Authorize::member_of("example.org".parse().unwrap())
                    .and(Authorize::path_prefix("/ns/prod")),
            )
            .build()
            .unwrap(),
    );
    // rustls' stock verifier, otherwise configured like ours (TLS 1.3, no resumption, h2).
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(root.cert_der().clone()).unwrap();
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .unwrap();
    let mut stock = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(webpki)
        .with_single_cert(server_leaf.cert_chain(), server_leaf.private_key_der())
        .unwrap();
    stock.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    stock.send_tls13_tickets = 0;
    stock.alpn_protocols = vec![b"h2".to_vec()];
    let stock = Arc::new(stock);

    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rustls_webpki_client_verifier", |b| {
        b.iter(|| handshake(&stock, &client))
    });
    group.bench_function("mtls_core_spiffe_verifier", |b| {
        b.iter(|| handshake(&ours, &client))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
