//! `bookstore-client`'s other ways to know who it is and whom it talks to: its SVID and
//! bundle from the SPIFFE Workload API (an mtls-agent that grants the client and server
//! executables their IDs), and a server verified by DNS name instead of SPIFFE ID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::MetadataExt;

use bookstore::{CLIENT_ID, MeshPki, MeshPolicy, SERVER_ID, SERVICE_NAME};
use support::{ANY_PORT, ChildGuard, bin, client_args, listening_addr, run, server_args};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_take_their_identities_from_the_workload_api() {
    use mtls_agent::{Agent, AgentConfig, Entry, Registration, Selectors};

    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let entry = |id: &str, exe: &str| {
        let id: mtls_core::SpiffeId = id.parse().unwrap();
        Entry::new(
            id,
            Selectors::default()
                .uid(uid)
                .exe(std::fs::canonicalize(bin(exe)).unwrap()),
        )
    };
    let registration = Registration::new([
        entry(SERVER_ID, "bookstore-server"),
        entry(CLIENT_ID, "bookstore-client"),
    ]);
    let trust_domain: mtls_core::TrustDomain = "bookstore.local".parse().unwrap();
    let agent = Agent::start(AgentConfig::new(
        trust_domain,
        dir.path().join("workload.sock"),
        registration,
    ))
    .await
    .unwrap();
    let endpoint = agent.workload_endpoint();

    let mut server = ChildGuard::spawn(
        "bookstore-server --workload-api",
        std::process::Command::new(bin("bookstore-server"))
            .args(["--listen", ANY_PORT, "--allow-spiffe-id", CLIENT_ID])
            .args(["--workload-api", &endpoint])
            .env("RUST_LOG", "warn"),
    );
    let addr = listening_addr(&server.wait_for_line("listening on"));

    let args = [
        "--target",
        &addr,
        "--workload-api",
        &endpoint,
        "--calls",
        "9",
    ]
    .map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        run("bookstore-client", &args.each_ref().map(String::as_str))
    })
    .await
    .unwrap();
    let stdout = support::success_stdout(&out);
    assert!(stdout.contains("9 / 9 calls ok"), "{stdout}");
    drop(server);
}

#[test]
fn client_verifies_the_server_by_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = MeshPki::create(dir.path(), &MeshPolicy::bookstore()).unwrap();
    let mut server = ChildGuard::spawn(
        "bookstore-server",
        std::process::Command::new(bin("bookstore-server"))
            .args(server_args(&pki, ANY_PORT, false)),
    );
    let listen = listening_addr(&server.wait_for_line("listening on"));
    let client = |name: &str| {
        run(
            "bookstore-client",
            &[
                client_args(&pki, &listen),
                vec!["--server-name", name, "--calls", "9"],
            ]
            .concat(),
        )
    };
    // The server's certificate carries the service's DNS name.
    let out = client(SERVICE_NAME);
    let stdout = support::success_stdout(&out);
    assert!(stdout.contains("9 / 9 calls ok"), "{stdout}");

    // Another name is refused, and the refusal names it.
    let out = client("other.internal");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("other.internal"), "{text}");
    assert!(!text.contains("9 / 9 calls ok"), "{text}");
}

#[test]
fn a_dns_name_given_as_server_id_points_to_server_name() {
    let out = run(
        "bookstore-client",
        &[
            "--server-id",
            "myservice.internal",
            "--plaintext",
            "127.0.0.1:1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "expected a SPIFFE ID (spiffe://trust-domain/path), found \"myservice.internal\""
        ) && stderr.contains("--server-name myservice.internal"),
        "{stderr}"
    );
}

#[test]
fn an_expired_client_certificate_is_named_before_any_connection() {
    use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::new_root(&CaParams::new("Client CA")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let leaf = ca
        .issue(&LeafParams::svid(CLIENT_ID.parse().unwrap()).valid_between(
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        ))
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("c.pem"), leaf.chain_pem()).unwrap();
    std::fs::write(dir.path().join("c-key.pem"), leaf.key_pem()).unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let (ca_path, cert, key) = (p("ca.pem"), p("c.pem"), p("c-key.pem"));
    let out = run(
        "bookstore-client",
        &[
            "--target",
            "127.0.0.1:1",
            "--ca",
            &ca_path,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("our certificate")
            && stderr.contains("expired at 20")
            && stderr.contains("c.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("SETTINGS"), "{stderr}");
}
