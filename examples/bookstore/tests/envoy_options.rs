//! `EnvoyProcess::start_with` runs Envoy with the requested worker count; `start` keeps one.
//! Skipped without Envoy unless `MTLS_REQUIRE_ENVOY=1`.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bookstore::envoy::{EnvoyOptions, EnvoyProcess, find_envoy};
use serde_json::json;

async fn concurrency_of(envoy: &EnvoyProcess) -> u64 {
    let (status, body) = envoy.admin_get("/server_info").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    info["command_line_options"]["concurrency"]
        .as_u64()
        .unwrap_or_else(|| panic!("no command_line_options.concurrency in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_count_is_passed_to_envoy() {
    let Some(binary) = find_envoy(None).filter(|p| p.is_file()) else {
        assert!(
            std::env::var("MTLS_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "MTLS_REQUIRE_ENVOY=1 but no Envoy found"
        );
        eprintln!("skipping: no Envoy (run ./scripts/install-test-tools.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
    });
    let default = EnvoyProcess::start(&binary, "default", &bootstrap, dir.path())
        .await
        .unwrap();
    assert_eq!(concurrency_of(&default).await, 1);
    drop(default);
    let two = EnvoyProcess::start_with(
        &binary,
        "two",
        &bootstrap,
        dir.path(),
        &EnvoyOptions::default().concurrency(2),
    )
    .await
    .unwrap();
    assert_eq!(concurrency_of(&two).await, 2);
}
