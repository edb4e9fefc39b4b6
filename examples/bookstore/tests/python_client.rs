//! An independent client: Python grpcio, with stubs generated from `proto/bookstore.proto`
//! by grpc_tools at test time, calls the proxyless mTLS server and gets the seeded shelves.

mod support;

use std::{path::Path, sync::Arc};

use bookstore::{BookstoreService, MeshPki, MeshPolicy, Security, Store, server};
use mtls_jwt::JwksSource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_lists_the_seeded_shelves_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let policy = MeshPolicy::bookstore();
    let pki = MeshPki::create(dir.path(), &policy).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let security = Security::Mtls {
        tls: Arc::new(pki.server_config().unwrap()),
        policy: policy.method_policy().unwrap(),
        jwt: Some((
            policy
                .validator(JwksSource::inline(pki.jwks_json()))
                .unwrap(),
            policy.jwt_rules().unwrap(),
        )),
    };
    let handle = server::spawn(
        listener,
        BookstoreService::new(Store::seeded(), "py-replica").unwrap(),
        security,
    )
    .unwrap();

    let python = support::python();
    assert!(
        python.exists(),
        "no Python at {} (set MTLS_PYTHON or run ./scripts/install-test-tools.sh)",
        python.display()
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let token = pki.token(&policy.audience).unwrap();
    let port = handle.addr().port().to_string();
    let mut command = std::process::Command::new(&python);
    command
        .arg(manifest.join("tests/py/bookstore_client.py"))
        .args(["--proto-dir", manifest.join("proto").to_str().unwrap()])
        .args(["--port", &port])
        .args(["--ca", pki.bundle_path().to_str().unwrap()])
        .args(["--cert", pki.client().cert.to_str().unwrap()])
        .args(["--key", pki.client().key.to_str().unwrap()])
        .args(["--token", &token]);
    let out =
        tokio::task::spawn_blocking(move || support::run_command("python client", &mut command))
            .await
            .unwrap();
    let stdout = support::success_stdout(&out);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        result["shelves"],
        serde_json::json!([{"id": 1, "theme": "Fiction"}, {"id": 2, "theme": "Fantasy"}])
    );
    assert_eq!(result["replica"], "py-replica");
    assert_eq!(
        result["no_token"],
        serde_json::json!({"code": "UNAUTHENTICATED", "details": "Jwt is missing"})
    );
    assert_eq!(result["health"], "SERVING");
    handle.stop().await.unwrap();
}
