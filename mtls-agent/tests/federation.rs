//! Two agents federate: `client.local`'s agent serves its bundle endpoint (`https_spiffe`,
//! an SVID it issues itself), `bookstore.local`'s agent fetches it from the initial bundle
//! and hands it to workloads — py-spiffe reads the federated X.509 bundle (from
//! FetchX509Bundles and from the X509-SVID response's `federated_bundles`) and the JWT
//! bundle, and a JWT-SVID minted by the other agent verifies with it; Envoy SDS serves the
//! foreign domain's validation context as `spiffe://client.local`, and `ALL` as both
//! domains in Envoy's SPIFFE validator; the files delivered
//! include the foreign bundle. A wrong endpoint SPIFFE ID federates nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use mtls_agent::{Agent, Delivery, ServeProfile};
use mtls_core::BundleEndpoint;
use prost::Message as _;
use support::pb::envoy::config::core::v3::data_source;
use support::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, SpiffeCertValidatorConfig, secret,
};
use support::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use support::*;

const PY: &str = r#"
import sys
from spiffe import WorkloadApiClient, TrustDomain
client = WorkloadApiClient(socket_path=sys.argv[1], default_timeout=5)
td = TrustDomain(sys.argv[2])
bundle = client.fetch_x509_bundles().get_bundle_for_trust_domain(td)
print("x509", sorted(c.subject.rfc4514_string() for c in bundle.x509_authorities))
context = client.fetch_x509_context()
federated = context.x509_bundle_set.get_bundle_for_trust_domain(td)
print("context", len(federated.x509_authorities))
jwt = client.fetch_jwt_bundles().get_bundle_for_trust_domain(td)
print("jwt", sorted(jwt.jwt_authorities.keys()))
"#;

/// `client.local`'s agent, serving its bundle endpoint (`https_spiffe`) on a loopback port.
async fn foreign_spiffe_agent(dir: &std::path::Path) -> Agent {
    let endpoint_id = FOREIGN_ENDPOINT_ID.parse().unwrap();
    foreign_agent(dir, ServeProfile::HttpsSpiffe { endpoint_id }).await
}

/// The bundle `t`'s agent holds for `client.local`.
fn federated(t: &TestAgent) -> mtls_core::SpiffeBundle {
    t.agent
        .federated_bundles()
        .get(&FOREIGN.parse().unwrap())
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_reads_the_bundles_of_a_federated_trust_domain() {
    let python = python().expect("no Python with py-spiffe: set MTLS_PYTHON");
    let tmp = tempfile::tempdir().unwrap();
    let foreign = foreign_spiffe_agent(tmp.path()).await;
    let creds = tmp.path().join("creds");
    let (ep, folder) = (
        https_spiffe_endpoint(&foreign, FOREIGN_ENDPOINT_ID),
        creds.clone(),
    );
    let t = TestAgent::start_with(&web_for_me(), move |c| {
        c.federate_with(ep)
            .deliver(Delivery::new(folder, WEB.parse().unwrap()))
    })
    .await;
    // Fetched (the initial bundle has no JWT authority and no sequence).
    eventually(Duration::from_secs(15), "the fetched bundle", || {
        t.agent
            .federated_bundles()
            .get(&FOREIGN.parse().unwrap())
            .filter(|b| b.sequence().is_some() && !b.jwt_authorities().is_empty())
            .cloned()
    })
    .await;

    let out = tokio::task::spawn_blocking({
        let (python, endpoint) = (python.clone(), t.endpoint());
        move || {
            Command::new(python)
                .args(["-c", PY, &endpoint, FOREIGN])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "py-spiffe: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kids: Vec<String> = federated(&t)
        .jwt_authorities()
        .iter()
        .map(|a| format!("'{}'", a.kid()))
        .collect();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("x509 ['{}']", foreign.ca().subject()),
            "context 1".to_owned(),
            format!("jwt [{}]", kids.join(", ")),
        ]
    );

    // A JWT-SVID of client.local verifies with the federated JWT bundle.
    let bundle = federated(&t);
    let token = {
        let client = spiffe::WorkloadApiClient::connect_to(foreign.workload_endpoint())
            .await
            .unwrap();
        client
            .fetch_jwt_svid(["bookstore"], None)
            .await
            .unwrap()
            .token()
            .to_owned()
    };
    let validator = mtls_jwt::Validator::builder()
        .jwks(mtls_jwt::JwksSource::inline(bundle.jwt_jwks_json()))
        .jwt_svid("bookstore")
        .build()
        .unwrap();
    let claims = validator.validate(&token).await.unwrap();
    assert_eq!(claims.subject(), Some("spiffe://client.local/app"));

    // Envoy SDS: the foreign domain's validation context, named as SPIRE names it.
    let mut sds = SecretDiscoveryServiceClient::new(unix_channel(t.sds_socket()).await);
    let response = sds
        .fetch_secrets(sds_request("sidecar", &["spiffe://client.local"]))
        .await
        .unwrap()
        .into_inner();
    let secret = Secret::decode(response.resources[0].value.as_slice()).unwrap();
    assert_eq!(secret.name, "spiffe://client.local");
    let Some(secret::Type::ValidationContext(vc)) = secret.r#type else {
        panic!("expected a validation context: {secret:?}");
    };
    let Some(data_source::Specifier::InlineBytes(pem)) = vc.trusted_ca.and_then(|d| d.specifier)
    else {
        panic!("expected inline bytes");
    };
    assert_eq!(String::from_utf8(pem).unwrap(), foreign.bundle_pem());

    // SPIRE's ALL: ours and the federated domain, each with its own bundle, in Envoy's
    // SPIFFE validator (never merged into one trusted_ca).
    let response = sds
        .fetch_secrets(sds_request("sidecar", &["ALL"]))
        .await
        .unwrap()
        .into_inner();
    let secret = Secret::decode(response.resources[0].value.as_slice()).unwrap();
    let Some(secret::Type::ValidationContext(all)) = secret.r#type else {
        panic!("expected a validation context: {secret:?}");
    };
    assert!(all.trusted_ca.is_none());
    let validator = all.custom_validator_config.unwrap();
    assert_eq!(validator.name, "envoy.tls.cert_validator.spiffe");
    let config =
        SpiffeCertValidatorConfig::decode(validator.typed_config.unwrap().value.as_slice())
            .unwrap();
    let domains: Vec<(String, Vec<u8>)> = config
        .trust_domains
        .into_iter()
        .map(|d| {
            let Some(data_source::Specifier::InlineBytes(pem)) =
                d.trust_bundle.and_then(|b| b.specifier)
            else {
                panic!("expected inline bytes");
            };
            (d.name, pem)
        })
        .collect();
    assert_eq!(
        domains,
        [
            (TD.to_owned(), t.agent.bundle_pem().into_bytes()),
            (FOREIGN.to_owned(), foreign.bundle_pem().into_bytes()),
        ]
    );

    // Filesystem delivery writes the foreign domain's bundle too.
    let delivered =
        std::fs::read_to_string(creds.join("client.local.spiffe-trust-bundle.pem")).unwrap();
    assert_eq!(delivered, foreign.bundle_pem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_endpoint_id_federates_nothing_new() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = foreign_spiffe_agent(tmp.path()).await;
    let ep = https_spiffe_endpoint(&foreign, "spiffe://client.local/someone-else");
    let t = TestAgent::start_with(&web_for_me(), move |c| c.federate_with(ep)).await;
    // The fetch is made and refused, naming the ID the endpoint presented and the one expected.
    let td = FOREIGN.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let status = t.agent.federation_status(&td);
        if let Some(error) = status.as_ref().and_then(|s| s.last_error.clone()) {
            break error;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refused fetch within 10 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refusal.contains(&format!(
            "presented {FOREIGN_ENDPOINT_ID}; expected spiffe://client.local/someone-else"
        )),
        "{refusal}"
    );
    // Only the initial bundle (no sequence, no JWT authority): nothing was installed.
    let bundle = federated(&t);
    assert_eq!(bundle.sequence(), None);
    assert!(bundle.jwt_authorities().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_endpoint_serves_https_web_too() {
    let tmp = tempfile::tempdir().unwrap();
    let web =
        mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Web CA")).unwrap();
    let site = web
        .issue(&mtls_certs::LeafParams::server(["127.0.0.1"]))
        .unwrap();
    let foreign = foreign_agent(
        tmp.path(),
        ServeProfile::HttpsWeb {
            chain_pem: site.chain_pem(),
            key_pem: site.key_pem(),
        },
    )
    .await;
    let url = format!("https://{}/", foreign.bundle_endpoint_addr().unwrap());
    // Fetched with WebPKI rules against the web CA; the document is client.local's bundle.
    let fetched = BundleEndpoint::https_web(FOREIGN.parse().unwrap(), &url, web.cert_pem())
        .unwrap()
        .fetch(None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fetched.to_pem(), foreign.bundle_pem());
    assert_eq!(fetched.refresh_hint(), Some(Duration::from_secs(1)));
    assert_eq!(fetched.jwt_authorities().len(), 1);
    // Another web CA is refused.
    let other =
        mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Other")).unwrap();
    let err = BundleEndpoint::https_web(FOREIGN.parse().unwrap(), &url, other.cert_pem())
        .unwrap()
        .fetch(None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not chain to the CA bundle"),
        "{err}"
    );
}
