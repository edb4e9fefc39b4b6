//! SPIFFE Filesystem Delivery (`AgentConfig::deliver`, `mtls-agent --deliver-to`): the
//! files pass `openssl verify` and mtls-core's file sources read them; during rotations a
//! reader in a tight loop never sees a half-written file or a key that does not match its
//! certificate; the renew signal reaches the process after each delivery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mtls_agent::{CREDENTIAL_FILE, Delivery};
use mtls_core::{FileIdentitySource, FileTrustSource, Identity, IdentitySource, TrustSource};
use support::*;

const BUNDLE_FILE: &str = "bookstore.local.spiffe-trust-bundle.pem";

/// An agent delivering WEB's SVID into `<tmp>/creds` (a folder the agent creates).
async fn agent_delivering(
    tweak: impl FnOnce(Delivery) -> Delivery,
) -> (TestAgent, tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    let folder = creds.clone();
    let t = TestAgent::start_with(&web_for_me(), move |c| {
        c.deliver(tweak(Delivery::new(folder, WEB.parse().unwrap())))
    })
    .await;
    (t, tmp, creds)
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn delivered_files_pass_openssl_verify_and_mtls_core_reads_them() {
    let (t, _tmp, creds) = agent_delivering(|d| d).await;
    let credential = std::fs::read_to_string(creds.join(CREDENTIAL_FILE)).unwrap();
    // PKCS#8 key first, then the chain, leaf first, no root.
    let labels: Vec<&str> = credential
        .lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN "))
        .collect();
    assert_eq!(
        labels,
        ["PRIVATE KEY-----", "CERTIFICATE-----"],
        "{credential}"
    );
    assert!(
        !credential.contains(t.agent.bundle_pem().trim()),
        "the root is not in the chain"
    );
    let mode = std::fs::metadata(creds.join(CREDENTIAL_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(creds.join(BUNDLE_FILE)).unwrap(),
        t.agent.bundle_pem()
    );

    let (ok, text) = openssl(
        &creds,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            BUNDLE_FILE,
            CREDENTIAL_FILE,
        ],
    );
    assert!(ok, "openssl verify: {text}");
    // The key is the leaf's: the same public key from both.
    let (_, from_cert) = openssl(
        &creds,
        &["x509", "-in", CREDENTIAL_FILE, "-noout", "-pubkey"],
    );
    let (_, from_key) = openssl(&creds, &["pkey", "-in", CREDENTIAL_FILE, "-pubout"]);
    assert!(from_cert.contains("BEGIN PUBLIC KEY"), "{from_cert}");
    assert_eq!(from_cert, from_key);
    // And against a foreign CA, openssl refuses: the check can fail.
    let foreign =
        mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Foreign")).unwrap();
    std::fs::write(creds.join("foreign.pem"), foreign.cert_pem()).unwrap();
    let (ok, _) = openssl(
        &creds,
        &["verify", "-CAfile", "foreign.pem", CREDENTIAL_FILE],
    );
    assert!(!ok);

    // mtls-core's file sources read the layout.
    let trust =
        FileTrustSource::watch_delivered(&creds, [TD.parse().unwrap()], Duration::from_millis(50))
            .unwrap();
    let identity = FileIdentitySource::watch_trusted(
        creds.join(CREDENTIAL_FILE),
        creds.join(CREDENTIAL_FILE),
        trust.clone(),
        Duration::from_millis(50),
    )
    .unwrap();
    assert_eq!(
        identity
            .current()
            .spiffe_id()
            .map(|id| id.to_string())
            .as_deref(),
        Some(WEB)
    );
    let delivered = FileIdentitySource::watch_delivered(&creds, Duration::from_millis(50)).unwrap();
    assert_eq!(
        delivered.current().serial().to_string(),
        identity.current().serial().to_string()
    );
    assert_eq!(trust.current().roots(Some(&TD.parse().unwrap())).len(), 1);
    let before = delivered.current().serial().to_string();
    t.agent.rotate_now().unwrap();
    eventually(Duration::from_secs(10), "the rotated file read", || {
        (delivered.current().serial().to_string() != before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_loop_reader_never_sees_a_partial_file_or_a_mismatched_key() {
    let (t, _tmp, creds) = agent_delivering(|d| d).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, creds) = (Arc::clone(&stop), creds.clone());
        std::thread::spawn(move || {
            let (mut reads, mut serials) = (0u64, std::collections::BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read(creds.join(CREDENTIAL_FILE)).unwrap();
                // One file holds both: the key must be the leaf's, every time.
                let identity = Identity::from_pem(&text, &text).unwrap_or_else(|e| {
                    panic!("read #{reads}: {e}\n{}", String::from_utf8_lossy(&text))
                });
                serials.insert(identity.serial().to_string());
                let bundle = std::fs::read(creds.join(BUNDLE_FILE)).unwrap();
                mtls_core::TrustBundle::from_pem(&bundle)
                    .unwrap_or_else(|e| panic!("bundle read #{reads}: {e}"));
                reads += 1;
            }
            (reads, serials.len())
        })
    };
    for _ in 0..40 {
        let generation = t.agent.rotate_now().unwrap();
        t.agent.wait_for_generation(generation).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (reads, serials) = reader.join().unwrap();
    assert!(reads > 100, "only {reads} reads");
    assert!(
        serials > 10,
        "only {serials} distinct SVIDs seen over {reads} reads"
    );
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&creds)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn the_renew_signal_reaches_the_process_after_each_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("renewed");
    let script = format!(
        "trap 'echo renewed >> {}' USR1; echo ready; while :; do sleep 0.05; done",
        log.display()
    );
    let mut child = ChildGuard::spawn("sh", Command::new("sh").args(["-c", &script]));
    // Wait until the trap is installed (the shell printed "ready").
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(child.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let pid = i32::try_from(child.pid()).unwrap();
    let (t, _tmp, _creds) =
        agent_delivering(move |d| d.renew_signal(pid, "SIGUSR1").unwrap()).await;
    let count = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(10), "the first renew signal", || {
        (count() >= 1).then_some(())
    })
    .await;
    let seen = count();
    t.agent.rotate_now().unwrap();
    eventually(
        Duration::from_secs(10),
        "a renew signal after the rotation",
        || (count() > seen).then_some(()),
    )
    .await;
    child.kill_and_output();
}
