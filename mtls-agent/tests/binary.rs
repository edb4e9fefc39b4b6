//! The `mtls-agent` binary: creates and keeps its CA and JWT key (0600) in the state
//! directory, rotates on SIGHUP (re-reading the registration), logs issuances and
//! rotations, stops cleanly on SIGTERM, explains bad start-up input, and rotates its CA with
//! `--rotate-ca-every` (the new CA stored in the state directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spiffe::WorkloadApiClient;
use support::*;

/// The agent binary for `dir/reg.yaml`, its sockets in `dir/run`, its state in `dir/state`.
fn agent_cmd(dir: &Path) -> Command {
    agent_binary(
        dir,
        &dir.join("run/workload.sock"),
        Some(&dir.join("run/sds.sock")),
        &dir.join("state"),
    )
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_for_socket(path: &Path, agent: &mut ChildGuard, log: &Path) {
    eventually(Duration::from_secs(10), "the agent socket", || {
        if let Some(status) = agent.child.try_wait().unwrap() {
            panic!(
                "agent exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        path.exists().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keeps_state_rotates_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reg.yaml"), web_for_me()).unwrap();
    let socket = dir.path().join("run/workload.sock");
    let endpoint = format!("unix://{}", socket.display());
    let log = dir.path().join("agent.log");

    let mut agent = ChildGuard::spawn_logging("mtls-agent", &mut agent_cmd(dir.path()), &log);
    wait_for_socket(&socket, &mut agent, &log).await;
    let state = dir.path().join("state");
    for key in ["ca-key.pem", "jwt-key.pem"] {
        let mode = std::fs::metadata(state.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let ca_pem = std::fs::read_to_string(state.join("ca.pem")).unwrap();

    let source = x509_source(&endpoint).await;
    let first = svid_serial(&source);
    assert_eq!(source.svid().unwrap().spiffe_id().to_string(), WEB);

    // SIGHUP: re-read the registration (now with a second identity) and rotate.
    std::fs::write(
        dir.path().join("reg.yaml"),
        format!(
            "{}  - spiffe_id: spiffe://bookstore.local/admin\n    selectors: {{ uid: {} }}\n",
            web_for_me(),
            my_uid()
        ),
    )
    .unwrap();
    let mut updates = source.updated();
    signal(agent.pid(), "-HUP");
    next_update(&mut updates, "the SVIDs of the re-read registration").await;
    let second = svid_serial(&source);
    assert_ne!(first, second);
    let client = WorkloadApiClient::connect_to(&endpoint).await.unwrap();
    assert_eq!(client.fetch_all_x509_svids().await.unwrap().len(), 2);

    // SIGTERM: clean stop, sockets removed.
    signal(agent.pid(), "-TERM");
    let status = agent
        .wait_for(Duration::from_secs(5))
        .expect("agent stops on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        "created CA",
        "issued X509-SVID",
        "mtls-agent ready",
        "SIGHUP",
        "rotated",
    ] {
        assert!(text.contains(line), "log mentions {line:?}:\n{text}");
    }
    let ready = text
        .lines()
        .find(|l| l.contains("mtls-agent ready"))
        .unwrap();
    eprintln!("{ready}");

    // A second run reuses the CA from the state directory.
    let mut again = ChildGuard::spawn_logging("mtls-agent", &mut agent_cmd(dir.path()), &log);
    wait_for_socket(&socket, &mut again, &log).await;
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        ca_pem
    );
    let client = WorkloadApiClient::connect_to(&endpoint).await.unwrap();
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let bundle = bundles.get(&TD.parse().unwrap()).unwrap();
    let ca = mtls_certs::parse_certificates_pem(&ca_pem).unwrap();
    assert_eq!(bundle.authorities()[0].as_bytes(), ca[0].as_ref());
}

#[test]
fn bad_startup_input_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    // Registration file missing: the error names it.
    let out = agent_cmd(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reg.yaml"), "{err}");

    // An identity outside the trust domain.
    std::fs::write(
        dir.path().join("reg.yaml"),
        "entries:\n  - spiffe_id: spiffe://other.org/web\n    selectors: { uid: 1 }\n",
    )
    .unwrap();
    let out = agent_cmd(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("expected bookstore.local"), "{err}");

    // The socket path is taken by a regular file: never deleted, the error names it.
    std::fs::write(dir.path().join("reg.yaml"), web_for_me()).unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(dir.path().join("run/workload.sock"), "not a socket").unwrap();
    let out = agent_cmd(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("workload.sock") && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/workload.sock")).unwrap(),
        "not a socket"
    );
}

/// Two agent binaries federate: `client.local` serves its bundle endpoint
/// (`--bundle-endpoint-listen`, `--bundle-endpoint-id`), `bookstore.local` fetches it
/// (`--federate TD,URL,https_spiffe,ID,FILE`) and its workloads get the foreign bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_federate_over_the_bundle_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("client-reg.yaml"),
        format!(
            "entries:\n  - spiffe_id: spiffe://client.local/app\n    selectors: {{ uid: {} }}\n",
            my_uid()
        ),
    )
    .unwrap();
    std::fs::write(d.join("reg.yaml"), web_for_me()).unwrap();
    let client_socket = d.join("client/workload.sock");
    let client_log = d.join("client.log");
    let mut client_agent = ChildGuard::spawn_logging(
        "mtls-agent client.local",
        Command::new(env!("CARGO_BIN_EXE_mtls-agent"))
            .args(["--trust-domain", "client.local", "--registration"])
            .arg(d.join("client-reg.yaml"))
            .arg("--socket")
            .arg(&client_socket)
            // Port 0: the kernel picks it; the agent says which on stderr.
            .args(["--bundle-endpoint-listen", "127.0.0.1:0"])
            .args([
                "--bundle-endpoint-id",
                "spiffe://client.local/bundle-endpoint",
            ])
            .args(["--bundle-refresh-hint", "1s"])
            .env("RUST_LOG", "info"),
        &client_log,
    );
    wait_for_socket(&client_socket, &mut client_agent, &client_log).await;
    let endpoint = eventually(
        Duration::from_secs(10),
        "client.local's agent to say where its bundle endpoint listens",
        || {
            std::fs::read_to_string(&client_log)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("mtls-agent: bundle endpoint on "))
                .map(str::to_owned)
        },
    )
    .await;
    // The initial bundle, obtained out of band: here from client.local's Workload API.
    let client = WorkloadApiClient::connect_to(format!("unix://{}", client_socket.display()))
        .await
        .unwrap();
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("client.local").unwrap();
    let ca = bundles.get(&td).unwrap().authorities()[0]
        .as_bytes()
        .to_vec();
    let pem = mtls_core::SpiffeBundle::new("client.local".parse().unwrap())
        .add_x509_authorities([rustls_pki_types::CertificateDer::from(ca.clone())])
        .unwrap()
        .to_pem();
    std::fs::write(d.join("client-bundle.pem"), pem).unwrap();

    let socket = d.join("run/workload.sock");
    let log = d.join("agent.log");
    let mut agent = ChildGuard::spawn_logging(
        "mtls-agent bookstore.local",
        agent_cmd(d).arg("--federate").arg(format!(
            "client.local,{endpoint},https_spiffe,spiffe://client.local/bundle-endpoint,{}",
            d.join("client-bundle.pem").display()
        )),
        &log,
    );
    wait_for_socket(&socket, &mut agent, &log).await;
    let ours = WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    // The JWT bundle comes only from the fetched document (the initial one has no key).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let jwt = ours.fetch_jwt_bundles().await.unwrap();
        if jwt.get(&td).is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no federated JWT bundle: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let x509 = ours.fetch_x509_bundles().await.unwrap();
    assert_eq!(
        x509.get(&td).unwrap().authorities()[0].as_bytes(),
        ca.as_slice()
    );
    agent.kill_and_output();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("federated bundle installed"), "{text}");
    client_agent.kill_and_output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rotates_its_ca_every_interval_and_stores_the_new_one() {
    let help = Command::new(env!("CARGO_BIN_EXE_mtls-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--rotate-ca-every") && help.contains("--ca-activation-delay"),
        "{help}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reg.yaml"), web_for_me()).unwrap();
    let socket = dir.path().join("run/workload.sock");
    let endpoint = format!("unix://{}", socket.display());
    let log = dir.path().join("agent.log");
    let mut agent = ChildGuard::spawn_logging(
        "mtls-agent",
        agent_cmd(dir.path()).args(["--rotate-ca-every", "1s", "--svid-ttl", "30s"]),
        &log,
    );
    wait_for_socket(&socket, &mut agent, &log).await;
    let first_ca = std::fs::read_to_string(dir.path().join("state/ca.pem")).unwrap();
    let client = WorkloadApiClient::connect_to(&endpoint).await.unwrap();
    let td = TD.parse().unwrap();
    // Rotated (no bundle endpoint: activated at once): the bundle holds the first CA and a
    // newer one, and the state directory holds the newest.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let roots = loop {
        let bundles = client.fetch_x509_bundles().await.unwrap();
        let roots: Vec<Vec<u8>> = bundles
            .get(&td)
            .unwrap()
            .authorities()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        if roots.len() >= 2 {
            break roots;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CA rotation within 20 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = mtls_certs::parse_certificates_pem(&first_ca).unwrap();
    assert_eq!(
        roots[0],
        first[0].as_ref(),
        "the first CA stays in the bundle"
    );
    let stored = std::fs::read_to_string(dir.path().join("state/ca.pem")).unwrap();
    assert_ne!(stored, first_ca, "the new CA replaced the stored one");
    let stored = mtls_certs::parse_certificates_pem(&stored).unwrap();
    assert!(
        roots.iter().any(|r| r == stored[0].as_ref()),
        "the stored CA is in the bundle"
    );
    // The current SVID chains to a CA other than the first.
    let svid = client.fetch_x509_svid().await.unwrap();
    let leaf: String = svid
        .cert_chain()
        .iter()
        .map(|c| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_bytes());
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect();
    assert!(
        mtls_certs::verify_chain_pem(&leaf, &first_ca, mtls_certs::Usage::Client).is_err(),
        "the SVID is no longer the first CA's"
    );
    signal(agent.pid(), "-TERM");
    assert!(agent.wait_for(Duration::from_secs(5)).is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        "prepared a new CA",
        "activated the new CA",
        "stored the new CA",
    ] {
        assert!(text.contains(line), "log mentions {line:?}:\n{text}");
    }
}
