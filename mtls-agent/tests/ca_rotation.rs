//! CA rotation in the agent (`Agent::rotate_ca`): prepared → active → retired.
//!
//! - A workload on the Workload API sees the bundle grow to old + new roots while its SVID
//!   is still the old CA's, then a new SVID chaining to the new root: `openssl verify`
//!   passes against the served bundle and fails against the old root alone; retiring
//!   leaves the new root only, and the sequence rises at every bundle change.
//! - Delivered trust-bundle files hold old + new roots during the overlap, then the new.
//! - An mtls-tonic server and client on the Workload API keep calling across the rotation
//!   with zero failed calls.
//! - A second agent federating with this one (bundle endpoint, `https_spiffe` and
//!   `https_web`) takes the new root at its next refresh, with a higher sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mtls_agent::{Agent, ServeProfile};
use mtls_core::{BundleEndpoint, IdentitySource, TrustSource};
use mtls_tonic::{client::MtlsConnector, server::MtlsIncoming};
use support::pb::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use support::*;

const BOOKSTORE: &str = "spiffe://bookstore.local/bookstore";

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = "-----BEGIN CERTIFICATE-----\n".to_owned();
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Concatenated DER certificates, one PEM each.
fn split_der(mut der: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
        out.push(pem(&der[..der.len() - rest.len()]));
        der = rest;
    }
    out
}

/// `openssl verify -CAfile <roots> <leaf>`: whether it passed, and its output.
fn openssl_verify(dir: &Path, roots: &str, leaf: &str) -> (bool, String) {
    std::fs::write(dir.join("roots.pem"), roots).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-CAfile", "roots.pem", "leaf.pem"])
        .output()
        .expect("openssl on PATH");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn leaf_pem(m: &X509svidResponse) -> String {
    split_der(&m.svids[0].x509_svid).remove(0)
}

#[tokio::test]
async fn a_workload_sees_old_and_new_roots_then_an_svid_of_the_new_ca() {
    // A long activation delay: the prepared phase lasts until the test activates it.
    let t = TestAgent::start_with(&web_for_me(), |c| {
        c.ca_activation_delay(Duration::from_secs(3600))
    })
    .await;
    let old_root = t.agent.bundle_pem();
    let first_sequence = t.agent.bundle_sequence();
    let mut raw =
        SpiffeWorkloadApiClient::new(unix_channel(t.agent.workload_socket().into()).await);
    let request = workload_request(X509svidRequest {});
    let mut stream = raw.fetch_x509svid(request).await.unwrap().into_inner();
    let m0 = stream.message().await.unwrap().unwrap();
    assert_eq!(split_der(&m0.svids[0].bundle), [old_root.as_str()]);

    // Prepared: the bundle holds old + new, the SVID is still the old CA's.
    let sequence = t.agent.rotate_ca().unwrap();
    assert_eq!(sequence, first_sequence + 1);
    assert_eq!(t.agent.bundle_sequence(), sequence);
    let m1 = stream.message().await.unwrap().unwrap();
    let roots = split_der(&m1.svids[0].bundle);
    assert_eq!(roots.len(), 2, "old and new roots during the overlap");
    assert_eq!(roots[0], old_root, "the old root stays first");
    assert_eq!(roots, t.agent.bundle_roots_pem());
    assert_eq!(m1.svids[0].x509_svid, m0.svids[0].x509_svid);
    let new_root = roots[1].clone();

    // Active: a new SVID of the new CA, the same bundle.
    assert!(t.agent.activate_prepared_ca().unwrap());
    assert!(!t.agent.activate_prepared_ca().unwrap(), "nothing left");
    assert_eq!(
        t.agent.bundle_sequence(),
        sequence,
        "the bundle did not change"
    );
    let m2 = stream.message().await.unwrap().unwrap();
    assert_eq!(split_der(&m2.svids[0].bundle), roots);
    let leaf = leaf_pem(&m2);
    assert_ne!(leaf, leaf_pem(&m1));
    assert_eq!(t.agent.ca().cert_pem(), new_root);
    let dir = t.dir.path();
    let (ok, out) = openssl_verify(dir, &roots.concat(), &leaf);
    assert!(ok, "new SVID against the served bundle: {out}");
    let (ok, out) = openssl_verify(dir, &old_root, &leaf);
    assert!(!ok, "new SVID against the old root alone must fail: {out}");
    // The old SVID still verifies against the served bundle (overlap).
    let (ok, out) = openssl_verify(dir, &roots.concat(), &leaf_pem(&m1));
    assert!(ok, "old SVID against the served bundle: {out}");

    // Retired: the new root only, sequence + 1.
    assert_eq!(t.agent.retire_old_cas(), Some(sequence + 1));
    assert_eq!(t.agent.retire_old_cas(), None);
    let m3 = stream.message().await.unwrap().unwrap();
    assert_eq!(split_der(&m3.svids[0].bundle), [new_root.as_str()]);
    assert_eq!(m3.svids[0].x509_svid, m2.svids[0].x509_svid);
    let (ok, out) = openssl_verify(dir, &new_root, &leaf_pem(&m1));
    assert!(!ok, "old SVID after retirement must fail: {out}");
}

#[tokio::test]
async fn without_a_delay_rotate_ca_activates_at_once_and_the_old_root_retires_after_the_svid_ttl() {
    let t = TestAgent::start_with(&web_for_me(), |c| {
        c.ca_activation_delay(Duration::ZERO)
            .svid_ttl(Duration::from_secs(2))
    })
    .await;
    let old_ca = t.agent.ca().cert_pem();
    let sequence = t.agent.rotate_ca().unwrap();
    // Active before rotate_ca returned: the current SVID chains to the new CA.
    assert_ne!(t.agent.ca().cert_pem(), old_ca);
    assert_eq!(t.agent.bundle_roots_pem().len(), 2);
    // Retired by the agent once the old CA's last SVID (2 s) has expired.
    eventually(Duration::from_secs(20), "the old root to retire", || {
        (t.agent.bundle_roots_pem() == [t.agent.ca().cert_pem()]).then_some(())
    })
    .await;
    assert_eq!(t.agent.bundle_sequence(), sequence + 1);
}

#[tokio::test]
async fn delivered_trust_bundle_files_follow_the_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("creds");
    let to = folder.clone();
    let t = TestAgent::start_with(&web_for_me(), move |c| {
        c.ca_activation_delay(Duration::from_secs(3600))
            .deliver(mtls_agent::Delivery::new(to, WEB.parse().unwrap()))
    })
    .await;
    let file = folder.join(mtls_agent::trust_bundle_file(&TD.parse().unwrap()));
    let read = || std::fs::read_to_string(&file).unwrap();
    assert_eq!(read(), t.agent.bundle_pem());
    t.agent.rotate_ca().unwrap();
    let both = t.agent.bundle_pem();
    eventually(
        Duration::from_secs(10),
        "old + new roots in the file",
        || (read() == both).then_some(()),
    )
    .await;
    assert_eq!(
        mtls_certs::parse_certificates_pem(&read()).unwrap().len(),
        2
    );
    t.agent.activate_prepared_ca().unwrap();
    t.agent.retire_old_cas().unwrap();
    let new_root = t.agent.ca().cert_pem();
    eventually(
        Duration::from_secs(10),
        "the new root alone in the file",
        || (read() == new_root).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn the_new_ca_is_stored_in_the_state_directory_and_a_failed_store_keeps_it_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = state.clone();
    let t = TestAgent::start_with(&web_for_me(), move |c| {
        c.state_dir(dir).ca_activation_delay(Duration::ZERO)
    })
    .await;
    let first = t.agent.ca().cert_pem();
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        first
    );
    // The key path made unwritable (a directory: renaming over it fails even for root).
    std::fs::remove_file(state.join("ca-key.pem")).unwrap();
    std::fs::create_dir(state.join("ca-key.pem")).unwrap();
    let err = t.agent.rotate_ca().unwrap_err().to_string();
    assert!(err.contains("ca-key.pem"), "{err}");
    // Prepared, not active: the old CA issues, both roots are in the bundle.
    assert_eq!(t.agent.ca().cert_pem(), first);
    assert_eq!(t.agent.bundle_roots_pem().len(), 2);
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        first
    );
    // Fixed: the agent's retry (or an explicit activation) stores and activates it.
    std::fs::remove_dir(state.join("ca-key.pem")).unwrap();
    t.agent.activate_prepared_ca().unwrap(); // true, or false if the retry came first
    let new_ca = t.agent.ca();
    assert_ne!(new_ca.cert_pem(), first);
    assert_eq!(t.agent.bundle_roots_pem(), [first, new_ca.cert_pem()]);
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        new_ca.cert_pem()
    );
    assert_eq!(
        std::fs::read_to_string(state.join("ca-key.pem")).unwrap(),
        new_ca.key_pem()
    );
}

#[tokio::test]
async fn an_intermediate_ca_is_not_rotated() {
    let root =
        mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("upstream")).unwrap();
    let intermediate = root
        .new_intermediate(&mtls_certs::CaParams::new("agent"))
        .unwrap();
    let t = TestAgent::start_with(&web_for_me(), |c| c.ca(intermediate)).await;
    let err = t.agent.rotate_ca().unwrap_err().to_string();
    assert!(err.contains("intermediate"), "{err}");
    assert!(err.contains("expected a self-signed root"), "{err}");
    assert_eq!(t.agent.bundle_roots_pem().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_calls_keep_succeeding_across_a_ca_rotation() {
    let t = TestAgent::start_with(
        &format!(
            "entries:\n  - spiffe_id: {BOOKSTORE}\n    selectors: {{ uid: {} }}\n",
            my_uid()
        ),
        |c| c.ca_activation_delay(Duration::from_secs(3600)),
    )
    .await;
    let td: mtls_core::TrustDomain = TD.parse().unwrap();
    let (source, server_config) = t.server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(MtlsIncoming::new(listener, server_config)),
    );
    let (client_source, client_config) = t.client(BOOKSTORE).await;
    let connector = MtlsConnector::new(client_config.clone())
        .server_name("bookstore.local")
        .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();

    // A long-lived channel (made with the old SVIDs) and a loop making a new connection
    // (a new handshake) for every call.
    let load = HealthLoad::start(2, &connector, &endpoint, no_interceptor);
    let calls = |n, what| load.calls(n, what);
    calls(50, "calls before the rotation").await;
    let old_serial = IdentitySource::current(&source).serial().to_string();

    // Prepared: both sides trust old + new, still present the old SVIDs.
    t.agent.rotate_ca().unwrap();
    eventually(
        Duration::from_secs(10),
        "both sources to trust 2 roots",
        || {
            (TrustSource::current(&source).roots(Some(&td)).len() == 2
                && TrustSource::current(&client_source).roots(Some(&td)).len() == 2)
                .then_some(())
        },
    )
    .await;
    calls(50, "calls while prepared").await;

    // Active: new SVIDs on both sides; old-SVID connections (the long-lived channel) and
    // new ones all verify.
    t.agent.activate_prepared_ca().unwrap();
    let want = t.agent.serial_of(&BOOKSTORE.parse().unwrap()).unwrap();
    eventually(
        Duration::from_secs(10),
        "both sources to take the new SVID",
        || {
            (IdentitySource::current(&source).serial().to_string() == want
                && IdentitySource::current(&client_source).serial().to_string() == want)
                .then_some(())
        },
    )
    .await;
    assert_ne!(want, old_serial);
    calls(50, "calls with the new SVIDs").await;

    // A new handshake now sees a certificate of the new CA.
    let presented = presented_certificate(client_config.clone(), addr).await;
    mtls_certs::verify_chain_pem(
        &pem(presented.as_ref()),
        &t.agent.ca().cert_pem(),
        mtls_certs::Usage::Server,
    )
    .unwrap();

    // Retired: the new root only; calls go on.
    t.agent.retire_old_cas().unwrap();
    eventually(
        Duration::from_secs(10),
        "both sources to trust 1 root",
        || {
            (TrustSource::current(&source).roots(Some(&td)).len() == 1
                && TrustSource::current(&client_source).roots(Some(&td)).len() == 1)
                .then_some(())
        },
    )
    .await;
    calls(50, "calls after retirement").await;

    let (ok, failures) = load.finish().await;
    server.abort();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed across the CA rotation: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
}

/// The federating agent picks up `foreign`'s new root at its next refresh, with a higher
/// sequence; then the old root's retirement too.
async fn federated_peer_follows_the_rotation(foreign: &Agent, endpoint: BundleEndpoint) {
    let t = TestAgent::start_with(&web_for_me(), move |c| c.federate_with(endpoint)).await;
    let td: mtls_core::TrustDomain = FOREIGN.parse().unwrap();
    let fetched = |t: &TestAgent| t.agent.federated_bundles().get(&td).cloned();
    let before = eventually(Duration::from_secs(15), "the first fetch", || {
        fetched(&t).filter(|b| b.sequence().is_some())
    })
    .await;
    assert_eq!(before.sequence(), Some(foreign.bundle_sequence()));
    assert_eq!(before.x509_authorities().len(), 1);

    let sequence = foreign.rotate_ca().unwrap();
    let after = eventually(Duration::from_secs(15), "the new root", || {
        fetched(&t).filter(|b| b.sequence() == Some(sequence))
    })
    .await;
    assert!(after.sequence() > before.sequence());
    let pems: Vec<String> = after
        .x509_authorities()
        .iter()
        .map(|c| pem(c.as_ref()))
        .collect();
    assert_eq!(pems, foreign.bundle_roots_pem());
    assert_eq!(pems.len(), 2);

    // The foreign agent activates the new CA (its delay is the 1 s refresh hint) and an
    // SVID it issues now verifies with what we fetched.
    eventually(
        Duration::from_secs(15),
        "the foreign CA to activate",
        || (foreign.ca().cert_pem() == pems[1]).then_some(()),
    )
    .await;
    let retired = foreign.retire_old_cas().unwrap();
    let last = eventually(Duration::from_secs(15), "the retirement", || {
        fetched(&t).filter(|b| b.sequence() == Some(retired))
    })
    .await;
    assert_eq!(last.x509_authorities().len(), 1);
    assert_eq!(pem(last.x509_authorities()[0].as_ref()), pems[1]);
    let status = t.agent.federation_status(&td).unwrap();
    assert!(status.last_error.is_none(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_agent_takes_the_new_root_over_https_spiffe() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = foreign_agent(
        tmp.path(),
        ServeProfile::HttpsSpiffe {
            endpoint_id: FOREIGN_ENDPOINT_ID.parse().unwrap(),
        },
    )
    .await;
    let endpoint = https_spiffe_endpoint(&foreign, FOREIGN_ENDPOINT_ID);
    federated_peer_follows_the_rotation(&foreign, endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_agent_takes_the_new_root_over_https_web() {
    let tmp = tempfile::tempdir().unwrap();
    let web_ca =
        mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("web CA")).unwrap();
    let cert = web_ca
        .issue(&mtls_certs::LeafParams::server(["127.0.0.1"]))
        .unwrap();
    let foreign = foreign_agent(
        tmp.path(),
        ServeProfile::HttpsWeb {
            chain_pem: cert.chain_pem(),
            key_pem: cert.key_pem(),
        },
    )
    .await;
    let endpoint = BundleEndpoint::https_web(
        FOREIGN.parse().unwrap(),
        &format!("https://{}/", foreign.bundle_endpoint_addr().unwrap()),
        web_ca.cert_pem(),
    )
    .unwrap();
    federated_peer_follows_the_rotation(&foreign, endpoint).await;
}
