//! An mtls-tonic server and client whose X509-SVIDs, bundles and JWT-SVIDs all come from
//! mtls-agent over the Workload API; the agent rotates while calls run, with zero failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mtls_core::{Authorize, IdentitySource, ServerConfigBuilder, WorkloadApiSource};
use mtls_tonic::{
    client::{BearerInterceptor, MtlsConnector, TokenSource, WorkloadJwtToken},
    jwt::{JwtLayer, JwtRules},
    server::MtlsIncoming,
};
use spiffe::WorkloadApiClient;
use support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const BOOKSTORE: &str = "spiffe://bookstore.local/bookstore";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_server_on_workload_api_identity_rotates_under_load_with_zero_failures() {
    let t = TestAgent::start(&format!(
        "entries:\n  - spiffe_id: {BOOKSTORE}\n    selectors: {{ uid: {} }}\n",
        my_uid()
    ))
    .await;

    // Server: identity + trust from the Workload API; JWT-SVIDs checked against the agent's
    // JWT bundle and bound to the mTLS peer.
    let source = WorkloadApiSource::builder()
        .endpoint(t.endpoint())
        .startup_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let jwks = {
        let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        let bundle = bundles.get(&TD.parse().unwrap()).unwrap();
        let keys: Vec<serde_json::Value> = bundle
            .jwt_authorities()
            .map(|a| serde_json::from_slice(a.jwk_json()).unwrap())
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    };
    let validator = mtls_jwt::Validator::builder()
        .jwks(mtls_jwt::JwksSource::inline(jwks))
        .jwt_svid("bookstore")
        .build()
        .unwrap();
    let server_config = ServerConfigBuilder::new(source.clone(), source.clone())
        .authorize(Authorize::member_of(TD.parse().unwrap()))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(JwtLayer::new(
                validator,
                JwtRules::require_all().bind_subject_to_peer(),
            ))
            .add_service(health)
            .serve_with_incoming(MtlsIncoming::new(listener, server_config)),
    );

    // Client: its own Workload API source and a JWT-SVID token source.
    let (_client_source, client_config) = t.client(BOOKSTORE).await;
    let tokens = WorkloadJwtToken::builder(["bookstore"])
        .endpoint(t.endpoint())
        .connect()
        .await
        .unwrap();
    assert!(tokens.token().unwrap().starts_with("eyJ"));
    let connector = MtlsConnector::new(client_config.clone())
        .server_name("bookstore.local")
        .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    // Two long-lived channels and two loops that open a new connection (a new handshake)
    // for every call.
    for w in 0..4 {
        let (stop, ok, failures, connector, endpoint, tokens) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            connector.clone(),
            endpoint.clone(),
            tokens.clone(),
        );
        workers.push(tokio::spawn(async move {
            let fresh_each_call = w % 2 == 1;
            let mut channel = None;
            while !stop.load(Ordering::Relaxed) {
                if channel.is_none() || fresh_each_call {
                    match endpoint.connect_with_connector(connector.clone()).await {
                        Ok(c) => channel = Some(c),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("connect: {e:?}"));
                            continue;
                        }
                    }
                }
                let Some(c) = channel.clone() else { continue };
                let mut client =
                    HealthClient::with_interceptor(c, BearerInterceptor::new(tokens.clone()));
                match client.check(HealthCheckRequest::default()).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => failures.lock().unwrap().push(format!("{status:?}")),
                }
            }
        }));
    }

    eventually(Duration::from_secs(10), "calls before rotation", || {
        (ok.load(Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    let before = IdentitySource::current(&source).serial().to_string();
    for round in 0..2 {
        t.agent.rotate_now().unwrap();
        let want = t.agent.serial_of(&BOOKSTORE.parse().unwrap()).unwrap();
        eventually(
            Duration::from_secs(5),
            "the server source to pick up the new SVID",
            || (IdentitySource::current(&source).serial().to_string() == want).then_some(()),
        )
        .await;
        // A new handshake now sees the new certificate.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config.clone())
            .connect(
                rustls_pki_types::ServerName::try_from("bookstore.local").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let presented = serial_of_der(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
        assert_eq!(presented, want, "round {round}");
        let at = ok.load(Ordering::Relaxed);
        eventually(Duration::from_secs(10), "calls after rotation", || {
            (ok.load(Ordering::Relaxed) >= at + 100).then_some(())
        })
        .await;
    }
    assert_ne!(
        before,
        IdentitySource::current(&source).serial().to_string()
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    server.abort();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed across rotations: {failures:?}",
        failures.len(),
        ok.load(Ordering::Relaxed) + failures.len() as u64
    );
    eprintln!(
        "{} calls across 2 rotations, 0 failed",
        ok.load(Ordering::Relaxed)
    );
}
