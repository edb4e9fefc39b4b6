//! SDS naming as SPIRE does it, checked with our generated client (Envoy itself is in
//! `envoy_sds.rs`): SPIFFE ID / `default` → tls_certificate, trust-domain ID / `ROOTCA` /
//! `ALL` → validation_context, refusals named; streams push every rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mtls_agent::SECRET_TYPE_URL;
use prost::Message;
use support::pb::envoy::config::core::v3::data_source;
use support::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use support::pb::envoy::service::discovery::v3::DiscoveryRequest;
use support::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use support::*;

async fn sds_client(
    socket: std::path::PathBuf,
) -> SecretDiscoveryServiceClient<tonic::transport::Channel> {
    SecretDiscoveryServiceClient::new(unix_channel(socket).await)
}

fn secrets(resources: &[prost_types::Any]) -> Vec<Secret> {
    resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SECRET_TYPE_URL);
            Secret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn inline(ds: &Option<support::pb::envoy::config::core::v3::DataSource>) -> String {
    match ds.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The trust domains and bundles of an `envoy.tls.cert_validator.spiffe` context.
fn spiffe_validator_domains(
    vc: &support::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext,
) -> Vec<(String, String)> {
    let config = vc
        .custom_validator_config
        .as_ref()
        .expect("a custom validator");
    assert_eq!(config.name, "envoy.tls.cert_validator.spiffe");
    let any = config.typed_config.as_ref().unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
    );
    support::pb::envoy::extensions::transport_sockets::tls::v3::SpiffeCertValidatorConfig::decode(
        any.value.as_slice(),
    )
    .unwrap()
    .trust_domains
    .into_iter()
    .map(|d| (d.name, inline(&d.trust_bundle)))
    .collect()
}

fn registration() -> String {
    format!(
        "entries:\n  - spiffe_id: {ENVOY}\n    selectors: {{ uid: {}, sds_node_id: sidecar }}\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {} }}\n",
        my_uid(),
        my_uid().wrapping_add(1)
    )
}

#[tokio::test]
async fn secrets_are_named_as_spire_names_them() {
    let t = TestAgent::start(&registration()).await;
    let mut client = sds_client(t.sds_socket()).await;
    let names = [
        ENVOY,
        "default",
        "spiffe://bookstore.local",
        "ROOTCA",
        "ALL",
    ];
    let response = client
        .fetch_secrets(sds_request("sidecar", &names))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.type_url, SECRET_TYPE_URL);
    assert_eq!(response.version_info, "1");
    let got = secrets(&response.resources);
    assert_eq!(
        got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        names
    );
    let serial = t.agent.serial_of(&ENVOY.parse().unwrap()).unwrap();
    for s in &got[..2] {
        let Some(secret::Type::TlsCertificate(tls)) = &s.r#type else {
            panic!("{} should be a tls_certificate", s.name)
        };
        let chain = inline(&tls.certificate_chain);
        let der = mtls_certs::parse_certificates_pem(&chain).unwrap();
        assert_eq!(serial_of_der(der[0].as_ref()), serial);
        assert!(inline(&tls.private_key).contains("PRIVATE KEY"));
    }
    for s in &got[2..4] {
        let Some(secret::Type::ValidationContext(vc)) = &s.r#type else {
            panic!("{} should be a validation_context", s.name)
        };
        assert_eq!(inline(&vc.trusted_ca), t.agent.bundle_pem());
        assert!(vc.custom_validator_config.is_none());
    }
    // ALL, as SPIRE serves it: every trust domain (here ours alone) in Envoy's SPIFFE
    // validator, never one merged trusted_ca.
    let Some(secret::Type::ValidationContext(all)) = &got[4].r#type else {
        panic!("ALL should be a validation_context")
    };
    assert!(all.trusted_ca.is_none());
    assert_eq!(
        spiffe_validator_domains(all),
        [(TD.to_owned(), t.agent.bundle_pem())]
    );
}

#[tokio::test]
async fn refusals_name_the_callers_own_names_and_never_which_ids_exist() {
    let t = TestAgent::start(&registration()).await;
    let mut client = sds_client(t.sds_socket()).await;
    // Unknown name: INVALID_ARGUMENT listing the caller's valid names.
    let status = client
        .fetch_secrets(sds_request("sidecar", &["no-such-secret"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("\"no-such-secret\"") && status.message().contains(ENVOY),
        "{status:?}"
    );
    // A registered ID the caller is not entitled to is answered exactly as an unregistered
    // one: the peer cannot probe which identities exist.
    let registered = client
        .fetch_secrets(sds_request("sidecar", &[WEB]))
        .await
        .unwrap_err();
    let unregistered = "spiffe://bookstore.local/nobody";
    let unknown = client
        .fetch_secrets(sds_request("sidecar", &[unregistered]))
        .await
        .unwrap_err();
    assert_eq!(
        registered.code(),
        tonic::Code::InvalidArgument,
        "{registered:?}"
    );
    assert_eq!(unknown.code(), registered.code());
    assert_eq!(
        unknown.message().replace(unregistered, "<name>"),
        registered.message().replace(WEB, "<name>"),
    );
    assert!(
        !registered.message().contains("entitled to"),
        "{registered:?}"
    );
    // Duplicated names are answered once; too many distinct names are refused.
    let names = vec!["ROOTCA"; 5000];
    let response = client
        .fetch_secrets(sds_request("sidecar", &names))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.resources.len(), 1);
    let many: Vec<String> = (0..33).map(|i| format!("name-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let status = client
        .fetch_secrets(sds_request("sidecar", &many))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("expected at most 32"),
        "{status:?}"
    );
    // A request message over max_sds_request_size (256 KiB) is refused by the codec.
    let big = "n".repeat(300 * 1024);
    let status = client
        .fetch_secrets(sds_request("sidecar", &[&big]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    // An unregistered node (and uid): PERMISSION_DENIED for anything.
    let status = client
        .fetch_secrets(sds_request("stranger", &["ROOTCA"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("sds_node_id=stranger"),
        "{status:?}"
    );
}

#[tokio::test]
async fn stream_pushes_rotations_and_stays_quiet_on_acks() {
    let t = TestAgent::start(&registration()).await;
    let mut client = sds_client(t.sds_socket()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sds_request("sidecar", &[ENVOY])).await.unwrap();
    let mut responses = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.version_info, "1");
    // ACK: no new response.
    tx.send(DiscoveryRequest {
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..sds_request("", &[ENVOY])
    })
    .await
    .unwrap();
    t.agent.rotate_now().unwrap();
    let second = responses.message().await.unwrap().unwrap();
    assert_eq!(
        second.version_info, "2",
        "the next message is the rotation, not an ACK echo"
    );
    assert_ne!(second.nonce, first.nonce);
    let serial = t.agent.serial_of(&ENVOY.parse().unwrap()).unwrap();
    let Some(secret::Type::TlsCertificate(tls)) = &secrets(&second.resources)[0].r#type else {
        panic!()
    };
    let der = mtls_certs::parse_certificates_pem(&inline(&tls.certificate_chain)).unwrap();
    assert_eq!(serial_of_der(der[0].as_ref()), serial);
}
