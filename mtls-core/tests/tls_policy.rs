//! The TLS policy between two mtls peers, read off the handshake itself (rustls' negotiated
//! group and handshake kind on both sides): hybrid post-quantum by default with one
//! ClientHello, each preset against each other, and impossible policies refused at build.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use mtls_core::{
    Authorize, ClientConfigBuilder, Error, KxGroup, ServerConfigBuilder, TlsPolicy, TlsPreset,
    TlsVersion,
};
use rustls::HandshakeKind;
use support::{Pki, handshake, tls_error};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

fn server(pki: &Pki, policy: TlsPolicy) -> rustls::ServerConfig {
    ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(CLIENT_ID.parse().unwrap()))
        .tls_policy(policy)
        .build()
        .unwrap()
}

fn client(pki: &Pki, policy: TlsPolicy) -> rustls::ClientConfig {
    ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
        .tls_policy(policy)
        .build()
        .unwrap()
}

#[tokio::test]
async fn default_is_hybrid_post_quantum_with_one_client_hello() {
    let pki = Pki::new();
    let out = handshake(
        server(&pki, TlsPolicy::default()),
        client(&pki, TlsPolicy::default()),
        "127.0.0.1",
    )
    .await;
    let (client_seen_by_server, server_seen_by_client) = out.assert_ok();
    for (side, peer) in [
        ("server", client_seen_by_server),
        ("client", server_seen_by_client),
    ] {
        let tls = peer.negotiated().expect("negotiated parameters");
        assert_eq!(
            tls.kx_group(),
            Some(KxGroup::X25519Mlkem768),
            "{side}: {tls}"
        );
        assert!(tls.is_post_quantum(), "{side}: {tls}");
        assert_eq!(
            tls.handshake_kind(),
            Some(HandshakeKind::Full),
            "{side}: {tls}"
        );
        assert_eq!(tls.tls_version(), Some(TlsVersion::Tls13), "{side}: {tls}");
        assert_eq!(tls.alpn(), Some(&b"h2"[..]), "{side}: {tls}");
    }
    assert_eq!(
        client_seen_by_server.negotiated().unwrap().to_string(),
        "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full"
    );
}

/// (client preset, server preset, group, handshake kind).
#[tokio::test]
async fn presets_against_each_other() {
    use HandshakeKind::{Full, FullWithHelloRetryRequest as Hrr};
    use KxGroup::{Secp256r1, X25519, X25519Mlkem768};
    use TlsPreset::{Classical, Default, Nist, Tls13Only};
    let cases = [
        (Default, Default, X25519Mlkem768, Full),
        (Default, Tls13Only, X25519Mlkem768, Full),
        // A classical server takes the X25519 share sent beside the hybrid one.
        (Default, Classical, X25519, Full),
        (Classical, Default, X25519, Full),
        (Nist, Default, Secp256r1, Full),
        // The default client's shares are X25519MLKEM768 + X25519: a NIST-only server
        // asks for P-256 (one extra round trip, and the log of both sides says so).
        (Default, Nist, Secp256r1, Hrr),
        (Nist, Nist, Secp256r1, Full),
    ];
    let pki = Pki::new();
    let mut failures = Vec::new();
    for (c, s, group, kind) in cases {
        let out = handshake(
            server(&pki, TlsPolicy::preset(s)),
            client(&pki, TlsPolicy::preset(c)),
            "127.0.0.1",
        )
        .await;
        let (seen_by_server, seen_by_client) = out.assert_ok();
        for (side, peer) in [("server", seen_by_server), ("client", seen_by_client)] {
            let tls = peer.negotiated().unwrap();
            if tls.kx_group() != Some(group) || tls.handshake_kind() != Some(kind) {
                failures.push(format!(
                    "client {c} / server {s}, {side} side: {tls}; expected {group} {kind:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn tls12_is_opt_in_and_a_mismatch_is_explained() {
    let pki = Pki::new();
    // Both sides opted in: they still agree on TLS 1.3.
    let out = handshake(
        server(&pki, TlsPolicy::default().allow_tls12()),
        client(&pki, TlsPolicy::default().allow_tls12()),
        "127.0.0.1",
    )
    .await;
    let (peer, _) = out.assert_ok();
    assert_eq!(
        peer.negotiated().unwrap().tls_version(),
        Some(TlsVersion::Tls13)
    );

    // A TLS 1.2-only client (Envoy's UpstreamTlsContext default) against the default server.
    let tls12_only = TlsPolicy::classical().version_range(TlsVersion::Tls12, TlsVersion::Tls12);
    let out = handshake(
        server(&pki, TlsPolicy::default()),
        client(&pki, tls12_only.clone()),
        "127.0.0.1",
    )
    .await;
    let server_err = out.server.as_ref().expect_err("TLS 1.2 refused by default");
    assert!(tls_error(server_err).is_some(), "{server_err:?}");
    let text = mtls_core::explain_handshake_error(server_err);
    assert!(
        text.contains("the peer offered only TLS 1.2 and this side accepts TLSv1.3 only"),
        "{text}"
    );
    assert!(
        text.contains("tls_maximum_protocol_version: TLSv1_3"),
        "{text}"
    );
    let client_err = out.client.as_ref().expect_err("client sees the refusal");
    let text = mtls_core::explain_handshake_error(client_err);
    assert!(text.contains("protocol version mismatch"), "{text}");

    // After opting in, TLS 1.2 with the classical group.
    let out = handshake(
        server(&pki, TlsPolicy::default().allow_tls12()),
        client(&pki, tls12_only),
        "127.0.0.1",
    )
    .await;
    let (peer, _) = out.assert_ok();
    let tls = peer.negotiated().unwrap();
    assert_eq!(tls.tls_version(), Some(TlsVersion::Tls12), "{tls}");
    assert_eq!(tls.kx_group(), Some(KxGroup::X25519), "{tls}");
}

#[test]
fn impossible_policies_are_refused_at_build_naming_the_field() {
    let pki = Pki::new();
    let hybrid_only_with_tls12 = TlsPolicy::default()
        .allow_tls12()
        .groups([KxGroup::X25519Mlkem768]);
    let no_suites = TlsPolicy::default().cipher_suites([]);
    let mut lacking = rustls::crypto::aws_lc_rs::default_provider();
    lacking
        .kx_groups
        .retain(|g| g.name() != rustls::NamedGroup::X25519MLKEM768);
    let cases: Vec<(&str, Result<(), Error>, &str)> = vec![
        (
            "server, hybrid only + TLS 1.2",
            ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
                .tls_policy(hybrid_only_with_tls12.clone())
                .build()
                .map(drop),
            "groups",
        ),
        (
            "client, hybrid only + TLS 1.2",
            ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), Arc::new(pki.spiffe_bundle()))
                .tls_policy(hybrid_only_with_tls12)
                .build()
                .map(drop),
            "groups",
        ),
        (
            "client, no cipher suite",
            ClientConfigBuilder::without_identity(Arc::new(pki.spiffe_bundle()))
                .tls_policy(no_suites)
                .build()
                .map(drop),
            "cipher_suites",
        ),
        (
            "server, provider without ML-KEM",
            ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
                .crypto_provider(Arc::new(lacking))
                .build()
                .map(drop),
            "groups",
        ),
    ];
    for (what, result, field) in cases {
        match result {
            Err(Error::InvalidTlsPolicy {
                field: f,
                ref reason,
            }) => {
                assert_eq!(f, field, "{what}: {reason}");
                let text = result.unwrap_err().to_string();
                assert!(
                    text.starts_with(&format!("invalid TLS policy: {field}: ")),
                    "{text}"
                );
            }
            other => panic!("{what}: expected InvalidTlsPolicy({field}), got {other:?}"),
        }
    }
}

#[test]
fn policy_reads_from_yaml_and_unknown_names_say_what_is_expected() {
    let policy: TlsPolicy = serde_yaml_ng::from_str(
        "preset: nist\nmin_version: TLSv1_2\ncipher_suites: [TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES128-GCM-SHA256]\n",
    )
    .unwrap();
    assert_eq!(policy.groups, [KxGroup::Secp256r1, KxGroup::Secp384r1]);
    assert_eq!(policy.min_version, TlsVersion::Tls12);
    policy.check().unwrap();
    let params = serde_json::to_value(policy.envoy_tls_params()).unwrap();
    assert_eq!(params["ecdh_curves"], serde_json::json!(["P-256", "P-384"]));
    assert_eq!(
        params["cipher_suites"],
        serde_json::json!(["ECDHE-ECDSA-AES128-GCM-SHA256"])
    );

    let err = serde_yaml_ng::from_str::<TlsPolicy>("groups: [X448]\n").unwrap_err();
    assert!(err.to_string().contains("unknown variant `X448`"), "{err}");
    let err = serde_yaml_ng::from_str::<TlsPolicy>("versions: [TLSv1_3]\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `versions`"),
        "{err}"
    );
}
