//! Federation over loopback HTTPS, both profiles: an in-process bundle endpoint (tokio-rustls,
//! HTTP/1.1) whose bundle and certificate the test changes. `https_spiffe` follows the
//! fetched bundle (the endpoint's new certificate verifies against it, not the initial one),
//! a lower sequence is refused, an endpoint that goes down leaves the last good bundle in
//! place, a wrong SPIFFE ID is refused naming what was presented and expected; `https_web`
//! checks the server with WebPKI rules; one domain's endpoint failing leaves another's alone;
//! mTLS configs over the source verify a foreign SVID against its own domain's roots only.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mtls_certs::{CaParams, CertificateAuthority, Credential, LeafParams, SpiffeId};
use mtls_core::{BundleEndpoint, FederatedTrustSource, SpiffeBundle, TrustDomain, TrustSource};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENDPOINT_ID: &str = "spiffe://other.org/bundle-endpoint";

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn bundle(name: &str, cas: &[&CertificateAuthority], seq: u64) -> SpiffeBundle {
    let pem: String = cas.iter().map(|ca| ca.cert_pem()).collect();
    SpiffeBundle::new(td(name))
        .add_x509_authorities_pem(pem)
        .unwrap()
        .spiffe_sequence(seq)
        .spiffe_refresh_hint(Duration::from_secs(1))
}

fn svid(ca: &CertificateAuthority, id: &str) -> Credential {
    ca.issue(&LeafParams::svid(SpiffeId::new(id).unwrap()))
        .unwrap()
}

/// A loopback HTTPS bundle endpoint: serves `body` with the current certificate.
struct BundleServer {
    addr: SocketAddr,
    state: Arc<Mutex<(Arc<rustls::ServerConfig>, String)>>,
    task: tokio::task::JoinHandle<()>,
}

fn server_config(cert: &Credential) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl BundleServer {
    async fn start(cert: &Credential, body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((server_config(cert), body)));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (config, body) = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("https://{}/bundle", self.addr)
    }

    fn serve(&self, cert: Option<&Credential>, body: String) {
        let mut state = self.state.lock().unwrap();
        if let Some(cert) = cert {
            state.0 = server_config(cert);
        }
        state.1 = body;
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sequence(source: &FederatedTrustSource, name: &str) -> Option<u64> {
    source
        .bundles()
        .get(&td(name))
        .and_then(SpiffeBundle::sequence)
}

fn last_error(source: &FederatedTrustSource, name: &str) -> String {
    source
        .status(&td(name))
        .and_then(|s| s.last_error)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_spiffe_follows_the_fetched_bundle_refuses_older_and_keeps_the_last_good() {
    let ca1 = CertificateAuthority::new_root(&CaParams::new("other.org CA 1")).unwrap();
    let ca2 = CertificateAuthority::new_root(&CaParams::new("other.org CA 2")).unwrap();
    let own = CertificateAuthority::new_root(&CaParams::new("example.org CA")).unwrap();
    let server = BundleServer::start(
        &svid(&ca1, ENDPOINT_ID),
        bundle("other.org", &[&ca1, &ca2], 2).to_json(),
    )
    .await;
    let source = FederatedTrustSource::builder()
        .local(bundle("example.org", &[&own], 1))
        .endpoint(
            BundleEndpoint::https_spiffe(
                td("other.org"),
                &server.url(),
                ENDPOINT_ID.parse().unwrap(),
                bundle("other.org", &[&ca1], 1),
            )
            .unwrap(),
        )
        .min_refresh(Duration::from_millis(200))
        .retry_initial(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually("sequence 2", || sequence(&source, "other.org") == Some(2)).await;
    assert_eq!(source.current().roots(Some(&td("other.org"))).len(), 2);

    // The endpoint moves to CA 2, which only the fetched bundle (not the initial) holds.
    server.serve(
        Some(&svid(&ca2, ENDPOINT_ID)),
        bundle("other.org", &[&ca2], 3).to_json(),
    );
    eventually("sequence 3", || sequence(&source, "other.org") == Some(3)).await;
    assert_eq!(
        source.current().roots(Some(&td("other.org"))),
        [ca2.cert_der().clone()]
    );

    // A lower sequence never replaces a higher one.
    server.serve(None, bundle("other.org", &[&ca1, &ca2], 1).to_json());
    eventually("the stale bundle refused", || {
        last_error(&source, "other.org").contains("sequence 1 is older than the current 3")
    })
    .await;
    assert_eq!(sequence(&source, "other.org"), Some(3));

    // The endpoint goes down: the last good bundle stays, and so does our own domain's.
    drop(server);
    eventually("a connection failure", || {
        last_error(&source, "other.org").contains("cannot connect")
    })
    .await;
    let status = source.status(&td("other.org")).unwrap();
    assert!(status.failures >= 1, "{status:?}");
    assert_eq!(
        source.current().roots(Some(&td("other.org"))),
        [ca2.cert_der().clone()]
    );
    assert_eq!(
        source.current().roots(Some(&td("example.org"))),
        [own.cert_der().clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_spiffe_id_is_refused_naming_presented_and_expected() {
    let ca = CertificateAuthority::new_root(&CaParams::new("other.org CA")).unwrap();
    let server = BundleServer::start(
        &svid(&ca, "spiffe://other.org/impostor"),
        bundle("other.org", &[&ca], 9).to_json(),
    )
    .await;
    let endpoint = BundleEndpoint::https_spiffe(
        td("other.org"),
        &server.url(),
        ENDPOINT_ID.parse().unwrap(),
        bundle("other.org", &[&ca], 1),
    )
    .unwrap();
    let err = endpoint
        .fetch(None, Duration::from_secs(5))
        .await
        .unwrap_err();
    let expected = format!(
        "bundle endpoint {}: the endpoint is refused: peer presented spiffe://other.org/impostor; expected {ENDPOINT_ID}",
        server.url()
    );
    assert_eq!(err.to_string(), expected);

    // Through the source: the initial bundle stays, the status names the refusal.
    let source = FederatedTrustSource::builder()
        .endpoint(endpoint)
        .retry_initial(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually("the refusal", || {
        last_error(&source, "other.org") == expected
    })
    .await;
    assert_eq!(sequence(&source, "other.org"), Some(1));

    // The right ID is accepted by the same client.
    server.serve(
        Some(&svid(&ca, ENDPOINT_ID)),
        bundle("other.org", &[&ca], 9).to_json(),
    );
    eventually("sequence 9", || sequence(&source, "other.org") == Some(9)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_checks_the_server_by_webpki_and_keeps_the_last_good() {
    let web = CertificateAuthority::new_root(&CaParams::new("Web CA")).unwrap();
    let rogue = CertificateAuthority::new_root(&CaParams::new("Rogue CA")).unwrap();
    let domain = CertificateAuthority::new_root(&CaParams::new("other.org CA")).unwrap();
    let site = web.issue(&LeafParams::server(["127.0.0.1"])).unwrap();
    let server = BundleServer::start(&site, bundle("other.org", &[&domain], 4).to_json()).await;
    let source = FederatedTrustSource::builder()
        .endpoint(
            BundleEndpoint::https_web(td("other.org"), &server.url(), web.cert_pem()).unwrap(),
        )
        .min_refresh(Duration::from_millis(200))
        .retry_initial(Duration::from_millis(100))
        .start()
        .unwrap();
    // https_web starts with no bundle for the domain.
    eventually("sequence 4", || sequence(&source, "other.org") == Some(4)).await;
    assert_eq!(
        source.current().roots(Some(&td("other.org"))),
        [domain.cert_der().clone()]
    );

    // A certificate of a CA we do not trust for the web: refused, last good kept.
    server.serve(
        Some(&rogue.issue(&LeafParams::server(["127.0.0.1"])).unwrap()),
        bundle("other.org", &[&rogue], 5).to_json(),
    );
    eventually("the rogue server refused", || {
        last_error(&source, "other.org").contains("does not chain to the CA bundle")
    })
    .await;
    // A certificate for another name: refused.
    server.serve(
        Some(
            &web.issue(&LeafParams::server(["bundles.other.org"]))
                .unwrap(),
        ),
        bundle("other.org", &[&rogue], 6).to_json(),
    );
    eventually("the wrong name refused", || {
        last_error(&source, "other.org").contains("is not valid for 127.0.0.1")
    })
    .await;
    assert_eq!(sequence(&source, "other.org"), Some(4));
    drop(server);
    eventually("a connection failure", || {
        last_error(&source, "other.org").contains("cannot connect")
    })
    .await;
    assert_eq!(
        source.current().roots(Some(&td("other.org"))),
        [domain.cert_der().clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_domain_failing_leaves_the_others_alone() {
    let web = CertificateAuthority::new_root(&CaParams::new("Web CA")).unwrap();
    let b = CertificateAuthority::new_root(&CaParams::new("b.org CA")).unwrap();
    let site = web.issue(&LeafParams::server(["127.0.0.1"])).unwrap();
    let up = BundleServer::start(&site, bundle("b.org", &[&b], 1).to_json()).await;
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let source = FederatedTrustSource::builder()
        .endpoint(
            BundleEndpoint::https_web(td("a.org"), &format!("https://{dead}/"), web.cert_pem())
                .unwrap(),
        )
        .endpoint(BundleEndpoint::https_web(td("b.org"), &up.url(), web.cert_pem()).unwrap())
        .retry_initial(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually("b.org installed", || sequence(&source, "b.org") == Some(1)).await;
    eventually("a.org failing", || {
        last_error(&source, "a.org").contains("cannot connect")
    })
    .await;
    assert!(source.bundles().get(&td("a.org")).is_none());
    assert_eq!(
        source
            .current()
            .trust_domains()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["b.org"]
    );
}

/// The source is a trust for mTLS configs: after the fetch, a server of example.org admits
/// an SVID of the federated other.org, verified against other.org's roots only — the
/// federated CA cannot mint an identity of example.org, and example.org's CA cannot mint
/// one of other.org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_configs_verify_foreign_svids_against_their_own_domain_only() {
    use mtls_core::{Authorize, ClientConfigBuilder, IdentityHandle, ServerConfigBuilder};
    let own = CertificateAuthority::new_root(&CaParams::new("example.org CA")).unwrap();
    let foreign = CertificateAuthority::new_root(&CaParams::new("other.org CA")).unwrap();
    let web = CertificateAuthority::new_root(&CaParams::new("Web CA")).unwrap();
    let site = web.issue(&LeafParams::server(["127.0.0.1"])).unwrap();
    let server = BundleServer::start(&site, bundle("other.org", &[&foreign], 1).to_json()).await;
    let source = FederatedTrustSource::builder()
        .local(bundle("example.org", &[&own], 1))
        .endpoint(
            BundleEndpoint::https_web(td("other.org"), &server.url(), web.cert_pem()).unwrap(),
        )
        .start()
        .unwrap();
    eventually("other.org fetched", || {
        sequence(&source, "other.org") == Some(1)
    })
    .await;

    let server_config = || {
        ServerConfigBuilder::new(
            IdentityHandle::new(support::svid_from(&own, "spiffe://example.org/bookstore")),
            source.clone(),
        )
        .authorize(Authorize::one_of([
            "spiffe://other.org/client".parse().unwrap(),
            "spiffe://example.org/client".parse().unwrap(),
        ]))
        .build()
        .unwrap()
    };
    let client_config = |identity: mtls_core::Identity| {
        ClientConfigBuilder::new(Arc::new(identity), source.clone())
            .authorize(Authorize::exact(
                "spiffe://example.org/bookstore".parse().unwrap(),
            ))
            .build()
            .unwrap()
    };
    let ok = support::handshake(
        server_config(),
        client_config(support::svid_from(&foreign, "spiffe://other.org/client")),
        "127.0.0.1",
    )
    .await;
    let (peer, _) = ok.assert_ok();
    assert_eq!(
        peer.spiffe_id().map(|id| id.to_string()).as_deref(),
        Some("spiffe://other.org/client")
    );
    for (ca, id, trusted) in [
        (&foreign, "spiffe://example.org/client", "example.org"),
        (&own, "spiffe://other.org/client", "other.org"),
    ] {
        let refused = support::handshake(
            server_config(),
            client_config(support::svid_from(ca, id)),
            "127.0.0.1",
        )
        .await;
        let err = refused.server_rejection().to_string();
        assert!(
            err.contains(&format!(
                "does not chain to the bundle of trust domain {trusted}"
            )),
            "{id}: {err}"
        );
    }
}
