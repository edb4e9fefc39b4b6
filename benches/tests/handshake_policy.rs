//! The `handshake` scenario compares like with like: the mtls-core server and the Envoy
//! listener accept the client inside the SAN policy and both refuse a client of the same CA
//! outside it.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use mtls_benches::child::Role;
use mtls_benches::envoy::Envoy;
use mtls_benches::handshake::{self, HandshakeFiles};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_enforce_the_same_san_policy() {
    let envoy_present = mtls_benches::envoy::require_envoy("the handshake parity test");
    if let Err(e) = &envoy_present {
        if std::env::var("MTLS_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
            panic!("MTLS_REQUIRE_ENVOY=1: {e}");
        }
        eprintln!("skipping: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = HandshakeFiles::generate(dir.path()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(handshake::serve(
        listener,
        handshake::server_config(&files).unwrap(),
    ));
    // Port 0: the kernel picks Envoy's port as it binds it (read back from the admin).
    let configured = 0;
    let envoy_process = Envoy::start(
        "envoy-handshake",
        Role::ServerProxy,
        dir.path(),
        &handshake::envoy_bootstrap(&files, configured),
        1,
    )
    .await
    .unwrap();
    let listeners = mtls_test_support::envoy_listeners(&envoy_process.admin().to_string());
    let envoy: SocketAddr = *listeners
        .get("handshake")
        .unwrap_or_else(|| panic!("expected Envoy's listener `handshake`, found {listeners:?}"));

    let insider = handshake::client_config(&files).unwrap();
    let outsider =
        handshake::client_config_for(&files, &files.outsider_cert, &files.outsider_key).unwrap();
    for (name, addr) in [("mtls-core", ours), ("envoy", envoy)] {
        handshake::call(addr, insider.clone())(0)
            .await
            .unwrap_or_else(|e| panic!("{name} refused the client inside the policy: {e}"));
        let err = handshake::call(addr, outsider.clone())(0)
            .await
            .expect_err(&format!("{name} accepted {}", handshake::OUTSIDER_ID));
        assert!(
            err.contains("handshake") || err.contains("reading") || err.contains("writing"),
            "{name}: {err}"
        );
    }
    // Envoy did the same work as our server: X25519, AES-128-GCM, ECDSA P-256 signatures.
    // Envoy names a listener's stats by its configured address (port 0 here).
    let prefix = format!("listener.127.0.0.1_{configured}.ssl");
    let stats = envoy_process.stats().await.unwrap();
    for stat in [
        "curves.X25519",
        "ciphers.TLS_AES_128_GCM_SHA256",
        "sigalgs.ecdsa_secp256r1_sha256",
        "versions.TLSv1.3",
    ] {
        let name = format!("{prefix}.{stat}");
        assert!(
            stats.get(&name).is_some_and(|n| *n >= 1),
            "{name} not counted; Envoy's ssl stats: {:?}",
            stats
                .iter()
                .filter(|(k, _)| k.contains("ssl"))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        stats.get(&format!("{prefix}.fail_verify_san")).copied(),
        Some(1)
    );
    // The hybrid rows' client: X25519MLKEM768 on both servers.
    let hybrid = handshake::client_config_with(
        &files,
        &files.client_cert,
        &files.client_key,
        mtls_core::KxGroup::X25519Mlkem768,
    )
    .unwrap();
    for addr in [ours, envoy] {
        handshake::call(addr, hybrid.clone())(0).await.unwrap();
    }
    let stats = envoy_process.stats().await.unwrap();
    assert_eq!(
        stats
            .get(&format!("{prefix}.curves.X25519MLKEM768"))
            .copied(),
        Some(1),
        "{:?}",
        stats
            .iter()
            .filter(|(k, _)| k.contains("curves"))
            .collect::<Vec<_>>()
    );
    server.abort();
}
