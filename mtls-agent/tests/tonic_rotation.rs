//! An mtls-tonic server and client whose X509-SVIDs, bundles and JWT-SVIDs all come from
//! mtls-agent over the Workload API; the agent rotates while calls run, with zero failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mtls_core::IdentitySource;
use mtls_tonic::{
    client::{BearerInterceptor, MtlsConnector, TokenSource, WorkloadJwtToken},
    jwt::{JwtLayer, JwtRules},
    server::MtlsIncoming,
};
use spiffe::WorkloadApiClient;
use support::*;

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
    let (source, server_config) = t.server().await;
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

    // Two long-lived channels and two loops that open a new connection (a new handshake)
    // for every call.
    let load = HealthLoad::start(4, &connector, &endpoint, BearerInterceptor::new(tokens));
    load.calls(100, "calls before rotation").await;
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
        let presented = presented_certificate(client_config.clone(), addr).await;
        assert_eq!(serial_of_der(presented.as_ref()), want, "round {round}");
        load.calls(100, "calls after rotation").await;
    }
    assert_ne!(
        before,
        IdentitySource::current(&source).serial().to_string()
    );
    let (ok, failures) = load.finish().await;
    server.abort();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed across rotations: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
    eprintln!("{ok} calls across 2 rotations, 0 failed");
}
