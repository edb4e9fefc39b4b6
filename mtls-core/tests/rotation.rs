//! Rotation under load: client loops keep opening connections while the server identity and
//! then the trust bundles (a full CA rollover) rotate. Every handshake that starts after a
//! rotation shows the new serial, and none fails. Also the file-watched sources.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Error, FileIdentitySource, FileTrustSource, Identity,
    IdentityHandle, IdentitySource, ServerConfigBuilder, TrustBundle, TrustHandle, TrustSource,
};
use support::{Pki, connect, svid_from};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

struct Record {
    started: Instant,
    result: Result<String, String>,
}

fn bundle(roots: &[&CertificateAuthority]) -> TrustBundle {
    let pem: String = roots.iter().map(|ca| ca.cert_pem()).collect();
    TrustBundle::spiffe()
        .add_domain_pem("example.org".parse().unwrap(), pem)
        .unwrap()
}

/// Waits until `n` more handshakes have completed after `since`, bounded.
async fn wait_for_handshakes(log: &Mutex<Vec<Record>>, since: Instant, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.started > since)
            .count();
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client loop stalled: only {done} handshakes after rotation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn serials_since(log: &Mutex<Vec<Record>>, since: Instant) -> Vec<Result<String, String>> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.started > since)
        .map(|r| r.result.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_then_trust_bundle_rotate_under_load_with_zero_failures() {
    let pki = Pki::new();
    let new_root = CertificateAuthority::new_root(&CaParams::new("example.org Root 2")).unwrap();

    let server_identity = IdentityHandle::new(pki.svid(SERVER_ID));
    let server_trust = TrustHandle::new(bundle(&[&pki.root]));
    let client_identity = IdentityHandle::new(pki.svid(CLIENT_ID));
    let client_trust = TrustHandle::new(bundle(&[&pki.root]));

    let server_cfg = Arc::new(
        ServerConfigBuilder::new(server_identity.clone(), server_trust.clone())
            .authorize(Authorize::exact(CLIENT_ID.parse().unwrap()))
            .build()
            .unwrap(),
    );
    let client_cfg = ClientConfigBuilder::new(client_identity.clone(), client_trust.clone())
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .build()
        .unwrap();

    // Server: accept forever, answer "ok" on every connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
    let server_task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });

    // Two client loops.
    let log = Arc::new(Mutex::new(Vec::<Record>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (log, stop, cfg) = (Arc::clone(&log), Arc::clone(&stop), client_cfg.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = connect(cfg.clone(), addr, "127.0.0.1")
                    .await
                    .map(|peer| peer.serial().map(ToString::to_string).unwrap_or_default())
                    .map_err(|e| match Error::from_io(&e) {
                        Some(reason) => reason.to_string(),
                        None => e.to_string(),
                    });
                log.lock().unwrap().push(Record { started, result });
            }
        }));
    }

    let t0 = Instant::now();
    wait_for_handshakes(&log, t0, 50).await;
    let first_serial = server_identity.current().serial().to_string();

    // 1. Server identity rotates (same CA, new serial).
    let v2 = pki.svid(SERVER_ID);
    let v2_serial = v2.serial().to_string();
    assert_ne!(v2_serial, first_serial);
    let t1 = Instant::now();
    server_identity.rotate(v2);
    wait_for_handshakes(&log, t1, 50).await;
    let after = serials_since(&log, t1);
    assert!(
        after.iter().all(|r| r.as_deref() == Ok(v2_serial.as_str())),
        "after identity rotation: {after:?}"
    );

    // 2. CA rollover: trust old+new on both sides, move both identities to the new CA,
    //    then drop the old root.
    let t2 = Instant::now();
    server_trust.rotate(bundle(&[&pki.root, &new_root]));
    client_trust.rotate(bundle(&[&pki.root, &new_root]));
    wait_for_handshakes(&log, t2, 10).await;

    let v3 = svid_from(&new_root, SERVER_ID);
    let v3_serial = v3.serial().to_string();
    let t3 = Instant::now();
    server_identity.rotate(v3);
    client_identity.rotate(svid_from(&new_root, CLIENT_ID));
    wait_for_handshakes(&log, t3, 10).await;

    let t4 = Instant::now();
    server_trust.rotate(bundle(&[&new_root]));
    client_trust.rotate(bundle(&[&new_root]));
    wait_for_handshakes(&log, t4, 50).await;
    let after = serials_since(&log, t4);
    assert!(
        after.iter().all(|r| r.as_deref() == Ok(v3_serial.as_str())),
        "after trust rotation: {after:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(Duration::from_secs(15), l)
            .await
            .unwrap()
            .unwrap();
    }

    {
        let all = log.lock().unwrap();
        let failures: Vec<_> = all.iter().filter_map(|r| r.result.as_ref().err()).collect();
        assert!(
            failures.is_empty(),
            "{} of {} handshakes failed: {failures:?}",
            failures.len(),
            all.len()
        );
        assert!(all.len() >= 170, "only {} handshakes", all.len());
    }

    // The new trust bundle really is in force: an identity from the old root is refused now.
    let old_client = ClientConfigBuilder::new(
        Arc::new(pki.svid(CLIENT_ID)),
        Arc::new(bundle(&[&new_root])),
    )
    .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
    .build()
    .unwrap();
    let err = connect(old_client, addr, "127.0.0.1").await.unwrap_err();
    assert!(
        matches!(
            tls_alert(&err),
            Some(rustls::AlertDescription::CertificateUnknown)
        ),
        "old-root client must be refused: {err:?}"
    );
    server_task.abort();
}

fn tls_alert(err: &std::io::Error) -> Option<rustls::AlertDescription> {
    match support::tls_error(err)? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

#[test]
fn file_identity_source_reloads_and_keeps_the_last_good_identity_on_bad_files() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |leaf: &mtls_certs::Credential| {
        std::fs::write(&cert, leaf.chain_pem()).unwrap();
        std::fs::write(&key, leaf.key_pem()).unwrap();
    };
    let params = LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap());
    let first = pki.int.issue(&params).unwrap();
    write(&first);
    let source = FileIdentitySource::open(&cert, &key).unwrap();
    let first_serial = source.current().serial().to_string();
    assert!(
        !source.reload().unwrap(),
        "unchanged files are not reloaded"
    );

    // A certificate whose key does not match: refused, last good kept.
    let second = pki.int.issue(&params).unwrap();
    std::fs::write(&cert, second.chain_pem()).unwrap();
    let err = source.reload().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert_eq!(source.current().serial().to_string(), first_serial);

    // Garbage: refused, last good kept.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    assert!(matches!(source.reload().unwrap_err(), Error::Pem { .. }));
    assert_eq!(source.current().serial().to_string(), first_serial);

    // The consistent pair arrives: installed.
    write(&second);
    assert!(source.reload().unwrap());
    assert_ne!(source.current().serial().to_string(), first_serial);
    let expected = Identity::from_pem(second.chain_pem(), second.key_pem())
        .unwrap()
        .serial()
        .to_string();
    assert_eq!(source.current().serial().to_string(), expected);
}

#[test]
fn watched_files_rotate_without_a_call() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
        dir.path().join("ca.pem"),
    );
    let params = LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap());
    let first = pki.int.issue(&params).unwrap();
    std::fs::write(&cert, first.chain_pem()).unwrap();
    std::fs::write(&key, first.key_pem()).unwrap();
    std::fs::write(&ca, pki.root.cert_pem()).unwrap();
    let interval = Duration::from_millis(20);
    let source = FileIdentitySource::watch(&cert, &key, interval).unwrap();
    let trust = FileTrustSource::watch(&ca, None::<&str>, interval).unwrap();
    let changes = source.subscribe().unwrap();
    let first_serial = source.current().serial().to_string();

    let second = pki.int.issue(&params).unwrap();
    // Write the key first, then the cert: the in-between state is refused, then resolved.
    std::fs::write(&key, second.key_pem()).unwrap();
    std::fs::write(&cert, second.chain_pem()).unwrap();
    std::fs::write(&ca, pki.root.cert_pem() + &pki.other.cert_pem()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while source.current().serial().to_string() == first_serial
        || trust.current().roots(None).len() != 2
    {
        assert!(
            Instant::now() < deadline,
            "watcher did not pick up the new files"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(changes.has_changed().unwrap());
}
