//! The `mtls-agent` binary: creates and keeps its CA and JWT key (0600) in the state
//! directory, rotates on SIGHUP (re-reading the registration), logs issuances and
//! rotations, stops cleanly on SIGTERM, and explains bad start-up input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spiffe::{WorkloadApiClient, X509Source};
use support::*;

fn agent_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-agent"));
    cmd.args(["--trust-domain", TD])
        .arg("--registration")
        .arg(dir.join("reg.yaml"))
        .arg("--socket")
        .arg(dir.join("run/workload.sock"))
        .arg("--sds-socket")
        .arg(dir.join("run/sds.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info");
    cmd
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

    let source = X509Source::builder()
        .endpoint(&endpoint)
        .initial_sync_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let first = serial_of_der(source.svid().unwrap().leaf().as_bytes());
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
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();
    let second = serial_of_der(source.svid().unwrap().leaf().as_bytes());
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
