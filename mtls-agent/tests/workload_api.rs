//! The Workload API as clients nobody here wrote see it: the Rust `spiffe` crate's
//! `WorkloadApiClient` and `X509Source`, plus the negatives (header, unregistered caller).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use spiffe::{SpiffeId, TrustDomain, WorkloadApiClient, WorkloadApiError};
use support::pb::workload::{X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use support::*;

async fn raw_client(
    socket: std::path::PathBuf,
) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    SpiffeWorkloadApiClient::new(unix_channel(socket).await)
}

#[tokio::test]
async fn rust_spiffe_client_fetches_svid_bundles_and_a_jwt_svid_that_validates() {
    let t = TestAgent::start(&web_for_me()).await;
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();

    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WEB);
    let leaf = svid.leaf().as_bytes();
    assert_eq!(
        serial_of_der(leaf),
        t.agent.serial_of(&WEB.parse().unwrap()).unwrap()
    );
    // The chain verifies against the bundle we serve, with webpki (mtls-certs).
    let chain_pem: String = svid
        .cert_chain()
        .iter()
        .map(|c| pem("CERTIFICATE", c.as_bytes()))
        .collect();
    mtls_certs::verify_chain_pem(&chain_pem, &t.agent.bundle_pem(), mtls_certs::Usage::Client)
        .unwrap();

    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = TrustDomain::new(TD).unwrap();
    let bundle = bundles.get(&td).expect("bundle of our trust domain");
    assert_eq!(bundle.authorities().len(), 1);
    assert_eq!(
        bundle.authorities()[0].as_bytes(),
        t.agent.ca().cert_der().as_ref()
    );

    let jwt = client.fetch_jwt_svid(["bookstore"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), WEB);
    let validated = client
        .validate_jwt_token("bookstore", jwt.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), WEB);
    // Wrong audience: ValidateJWTSVID refuses it.
    let err = client
        .validate_jwt_token("other", jwt.token())
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("aud"), "{err}");

    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    assert!(jwt_bundles.get(&td).is_some());
}

#[tokio::test]
async fn x509_source_follows_rotations_and_each_message_carries_full_state() {
    let reg = format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {uid} }}\n  - spiffe_id: spiffe://bookstore.local/admin\n    selectors: {{ uid: {uid} }}\n",
        uid = my_uid()
    );
    let t = TestAgent::start(&reg).await;
    let source = x509_source(&t.endpoint()).await;
    let first = svid_serial(&source);
    let mut updates = source.updated();
    let generation = t.agent.rotate_now().unwrap();
    next_update(&mut updates, "the rotated SVID").await;
    let second = svid_serial(&source);
    assert_ne!(first, second);
    assert_eq!(
        second,
        t.agent.serial_of(&WEB.parse().unwrap()).unwrap(),
        "generation {generation}"
    );

    // Every stream message is the full set: both SVIDs, the bundle.
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
    let all = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, [WEB, "spiffe://bookstore.local/admin"]);
    // mtls-core's source can pick the non-default one.
    let admin = mtls_core::WorkloadApiSource::builder()
        .endpoint(t.endpoint())
        .spiffe_id("spiffe://bookstore.local/admin".parse().unwrap())
        .connect()
        .await
        .unwrap();
    assert_eq!(
        mtls_core::IdentitySource::current(&admin)
            .spiffe_id()
            .unwrap()
            .to_string(),
        "spiffe://bookstore.local/admin"
    );
    let mut raw = raw_client(t.agent.workload_socket().to_owned()).await;
    let request = workload_request(X509svidRequest {});
    let mut stream = raw.fetch_x509svid(request).await.unwrap().into_inner();
    let m1 = stream.message().await.unwrap().unwrap();
    t.agent.rotate_now().unwrap();
    let m2 = stream.message().await.unwrap().unwrap();
    for m in [&m1, &m2] {
        assert_eq!(m.svids.len(), 2);
        assert!(
            m.svids
                .iter()
                .all(|s| !s.bundle.is_empty() && !s.x509_svid_key.is_empty())
        );
    }
    assert_ne!(m1.svids[0].x509_svid, m2.svids[0].x509_svid);
}

#[tokio::test]
async fn missing_security_header_is_invalid_argument() {
    let t = TestAgent::start(&web_for_me()).await;
    let mut raw = raw_client(t.agent.workload_socket().to_owned()).await;
    let status = raw.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("workload.spiffe.io"),
        "{status:?}"
    );

    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "yes".parse().unwrap());
    let status = raw.fetch_x509svid(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("expected \"true\""), "{status:?}");
}

#[tokio::test]
async fn unregistered_uid_is_permission_denied() {
    let other = my_uid().wrapping_add(4242);
    let t = TestAgent::start(&format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {other} }}\n"
    ))
    .await;
    // The spiffe crate reports PERMISSION_DENIED on FetchX509SVID as NoIdentityIssued.
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadApiError::NoIdentityIssued | WorkloadApiError::PermissionDenied(_)
        ),
        "{err:?}"
    );
    // On the wire: PERMISSION_DENIED, tersely (the log says why; the peer learns nothing).
    let mut raw = raw_client(t.agent.workload_socket().to_owned()).await;
    let request = workload_request(X509svidRequest {});
    let status = raw.fetch_x509svid(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued", "{status:?}");
    let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadApiError::NoIdentityIssued | WorkloadApiError::PermissionDenied(_)
        ),
        "{err:?}"
    );

    // A registered caller asking for an ID it is not entitled to is refused too.
    let t = TestAgent::start(&web_for_me()).await;
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
    let admin: SpiffeId = "spiffe://bookstore.local/admin".parse().unwrap();
    let err = client
        .fetch_jwt_svid(["aud"], Some(&admin))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WorkloadApiError::NoIdentityIssued | WorkloadApiError::PermissionDenied(_)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn jwt_svid_validation_refuses_foreign_and_tampered_tokens() {
    let t = TestAgent::start(&web_for_me()).await;
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
    let foreign = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256).unwrap();
    let token = foreign
        .mint(
            &mtls_jwt::TokenSpec::new(Duration::from_secs(60))
                .subject(WEB)
                .audience("bookstore"),
        )
        .unwrap();
    let err = client
        .validate_jwt_token("bookstore", &token)
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidArgument"), "{err:?}");
    let good = client.fetch_jwt_svid(["bookstore"], None).await.unwrap();
    let mut tampered = good.token().to_owned();
    tampered.pop();
    tampered.push(if good.token().ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert!(
        client
            .validate_jwt_token("bookstore", &tampered)
            .await
            .is_err()
    );
}

/// JWT-SVID rules: validation is keyed by trust domain (a `sub` in another trust domain is
/// refused even when our own key signed it), and empty or oversized audiences are refused.
/// `status` is INVALID_ARGUMENT with a message containing `needle`.
fn assert_invalid_argument(status: &tonic::Status, needle: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(needle), "{status:?}");
}

#[tokio::test]
async fn jwt_svid_rules_trust_domain_and_audiences() {
    let key = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256).unwrap();
    let pem = key.private_pem();
    let t = TestAgent::start_with(&web_for_me(), |c| {
        c.jwt_key(mtls_jwt::SigningKey::from_pem(&pem).unwrap())
    })
    .await;
    let mint = |sub: &str| {
        key.mint(
            &mtls_jwt::TokenSpec::new(Duration::from_secs(60))
                .subject(sub)
                .audience("bookstore"),
        )
        .unwrap()
    };
    let mut raw = raw_client(t.dir.path().join("workload.sock")).await;
    let validate = |svid: String, audience: &str| {
        workload_request(support::pb::workload::ValidateJwtsvidRequest {
            audience: audience.to_owned(),
            svid,
        })
    };
    // Ours, signed by our key: valid.
    let ok = raw
        .validate_jwtsvid(validate(mint(WEB), "bookstore"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, WEB);
    // Another trust domain's subject, signed by our key: refused.
    let status = raw
        .validate_jwtsvid(validate(mint("spiffe://other.org/web"), "bookstore"))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "not in a trust domain this agent validates");
    // Empty and oversized audiences.
    let status = raw
        .validate_jwtsvid(validate(mint(WEB), ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = raw
        .validate_jwtsvid(validate(mint(WEB), &"a".repeat(10_000)))
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("10000 bytes; expected at most 512"),
        "{status:?}"
    );
    let fetch_for = |audience: Vec<String>, spiffe_id: &str| {
        workload_request(support::pb::workload::JwtsvidRequest {
            audience,
            spiffe_id: spiffe_id.to_owned(),
        })
    };
    let fetch = |audience: Vec<String>| fetch_for(audience, "");
    // The requested spiffe_id is parsed as strictly as configuration: the canonical form is
    // served, an upper-cased scheme or trust domain is refused, not lower-cased into ours.
    let ok = raw
        .fetch_jwtsvid(fetch_for(vec!["bookstore".into()], WEB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.svids[0].spiffe_id, WEB);
    for spoof in [WEB.replacen("spiffe", "SPIFFE", 1), WEB.to_uppercase()] {
        let status = raw
            .fetch_jwtsvid(fetch_for(vec!["bookstore".into()], &spoof))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{spoof}: {status:?}"
        );
        assert!(
            status.message().contains("is not a SPIFFE ID"),
            "{status:?}"
        );
    }
    let status = raw
        .fetch_jwtsvid(fetch(vec![String::new()]))
        .await
        .unwrap_err();
    assert_invalid_argument(
        &status,
        "audience 1 is empty; expected a non-empty audience",
    );
    let status = raw
        .fetch_jwtsvid(fetch(vec!["bookstore".into(), String::new()]))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("audience 2 is empty"),
        "{status:?}"
    );
    let status = raw
        .fetch_jwtsvid(fetch(vec!["a".into(); 100]))
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("100 audiences requested; expected at most 16"),
        "{status:?}"
    );
    // A request message over max_request_size (64 KiB) is refused by the codec.
    let status = raw
        .validate_jwtsvid(validate("x".repeat(100_000), "bookstore"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}

#[tokio::test]
async fn absent_agent_socket_startup_error_names_the_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-agent-here.sock");
    let (endpoint, within) = (socket.to_str().unwrap(), Duration::from_millis(300));
    let source = mtls_core::WorkloadApiSource::builder()
        .endpoint(endpoint)
        .startup_timeout(within)
        .connect()
        .await;
    let tokens = mtls_tonic::client::WorkloadJwtToken::builder(["bookstore"])
        .endpoint(endpoint)
        .startup_timeout(within)
        .connect()
        .await;
    let source_err = source.unwrap_err().to_string();
    assert!(source_err.contains("does not exist"), "{source_err}");
    for text in [source_err, tokens.unwrap_err().to_string()] {
        assert!(text.contains(endpoint), "{text}");
    }
}

#[tokio::test]
async fn jwt_token_source_is_cached_and_refreshed_before_expiry() {
    use mtls_tonic::client::TokenSource;
    let t = TestAgent::start_with(&web_for_me(), |c| c.jwt_ttl(Duration::from_secs(2))).await;
    let tokens = mtls_tonic::client::WorkloadJwtToken::builder(["bookstore"])
        .endpoint(t.endpoint())
        .connect()
        .await
        .unwrap();
    let first = tokens.token().unwrap();
    assert_eq!(tokens.token().unwrap(), first, "cached between refreshes");
    // Refreshed at half of the remaining lifetime: a new token well before the old expires,
    // and token() never fails meanwhile.
    let fresh = eventually(Duration::from_secs(5), "a refreshed JWT-SVID", || {
        let now = tokens.token().expect("never expired");
        (now != first).then_some(now)
    })
    .await;
    let client = WorkloadApiClient::connect_to(t.endpoint()).await.unwrap();
    let checked = client
        .validate_jwt_token("bookstore", &fresh)
        .await
        .unwrap();
    assert_eq!(checked.spiffe_id().to_string(), WEB);
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
