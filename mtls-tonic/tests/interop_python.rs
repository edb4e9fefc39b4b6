//! Interop with Python grpcio (a gRPC stack nobody here wrote): its mTLS client against our
//! server, and our client against its server requiring client certificates.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{process::Command, time::Duration};

use mtls_test_support::{ChildGuard, peers, put};
use mtls_tonic::{balance::BalancedChannel, client::MtlsConnector};
use support::pki::{CLIENT_ID, Pki, SERVER_ID, SERVICE_NAME};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const CLIENT_PY: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
addr, ca, chain, key = sys.argv[1:5]
read = lambda p: open(p, 'rb').read() if p != '-' else None
creds = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(chain))
channel = grpc.secure_channel(addr, creds, options=[('grpc.ssl_target_name_override', 'bookstore.test')])
stub = health_pb2_grpc.HealthStub(channel)
try:
    response, call = stub.Check.with_call(health_pb2.HealthCheckRequest(), timeout=5)
    peer = dict(call.initial_metadata()).get('x-peer')
    print('OK', response.status, peer)
except grpc.RpcError as e:
    print('ERR', e.code().name)
"#;

const SERVER_PY: &str = r#"
import sys, grpc
from concurrent import futures
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
ca, chain, key = (open(p, 'rb').read() for p in sys.argv[1:4])
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
creds = grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)
port = server.add_secure_port('127.0.0.1:0', creds)
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

/// Starts Python on `script` with `args` and returns it with its first stdout line (a
/// 20 s bound); the guard kills it by PID when dropped.
fn python_first_line(script: &str, args: &[&str]) -> (ChildGuard, String) {
    let mut child = ChildGuard::spawn(
        "python",
        Command::new(peers::python())
            .arg("-c")
            .arg(script)
            .args(args),
    );
    let line = child.wait_for_line("");
    (child, line.trim().to_owned())
}

fn run_client(args: &[&str]) -> String {
    python_first_line(CLIENT_PY, args).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_calls_our_server_and_is_rejected_without_certificate() {
    support::init_tracing();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = put(dir.path(), "ca.pem", &pki.root_pem());
    let (chain, key) = pki.svid_pem(CLIENT_ID, &[]);
    let chain = put(dir.path(), "client.pem", &chain);
    let key = put(dir.path(), "client-key.pem", &key);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = support::serve_probe(listener, pki.server_config(Pki::member_policy()));

    let args = [addr.clone(), ca.clone(), chain.clone(), key.clone()];
    let out = tokio::task::spawn_blocking(move || run_client(&args.each_ref().map(String::as_str)))
        .await
        .unwrap();
    assert_eq!(
        out,
        format!("OK 1 {CLIENT_ID}"),
        "grpcio client with certificate"
    );

    let args = [addr.clone(), ca.clone(), "-".to_owned(), "-".to_owned()];
    let out = tokio::task::spawn_blocking(move || run_client(&args.each_ref().map(String::as_str)))
        .await
        .unwrap();
    assert_eq!(out, "ERR UNAVAILABLE", "grpcio client without certificate");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_calls_grpcio_server_requiring_client_auth() {
    support::init_tracing();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = put(dir.path(), "ca.pem", &pki.root_pem());
    let (chain, key) = pki.svid_pem(SERVER_ID, &[SERVICE_NAME]);
    let chain = put(dir.path(), "server.pem", &chain);
    let key = put(dir.path(), "server-key.pem", &key);
    let (child, line) = python_first_line(SERVER_PY, &[&ca, &chain, &key]);
    let port: u16 = line
        .parse()
        .unwrap_or_else(|e| panic!("expected the grpcio server's port, saw {line:?}: {e}"));

    // Plain tonic Channel through our connector.
    let connector = MtlsConnector::new(pki.client_config(CLIENT_ID))
        .server_name(SERVICE_NAME)
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_with_connector(connector.clone())
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(status.get_ref().status, ServingStatus::Serving as i32);

    // BalancedChannel (static address target) through the same connector.
    let balanced = BalancedChannel::builder(format!("127.0.0.1:{port}"), connector)
        .build()
        .unwrap();
    let status = HealthClient::new(balanced)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(status.get_ref().status, ServingStatus::Serving as i32);

    // A client without a certificate is refused by grpcio.
    let anonymous = mtls_core::ClientConfigBuilder::without_identity(pki.trust())
        .authorize(mtls_core::Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap();
    let connector = MtlsConnector::new(anonymous)
        .server_name(SERVICE_NAME)
        .unwrap();
    let balanced = BalancedChannel::builder(format!("127.0.0.1:{port}"), connector)
        .ready_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let status = HealthClient::new(balanced.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(child);
}
