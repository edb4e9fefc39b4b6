//! The mesh's TLS policy against a real Envoy 1.40, asserted from the handshake itself:
//! rustls' negotiated group and handshake kind on our side, Envoy's `ssl.curves.*` /
//! `ssl.versions.*` stats on its side.
//!
//! - mtls client → Envoy listener with Envoy's **default** TLS settings, and Envoy upstream
//!   (our rendered default `tls_params`) → mtls server: X25519MLKEM768, one ClientHello.
//! - An Envoy upstream with Envoy's default maximum (TLS 1.2) is refused, and our log says
//!   what to set.
//! - Each preset, both directions, against an Envoy running the same preset as rendered by
//!   our generator; `envoy --mode validate` accepts every rendered sidecar bootstrap.
//!
//! With `MTLS_REQUIRE_ENVOY=1` (as `./ci.sh` sets) a missing Envoy fails the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bookstore::envoy::{CertSource, ClientSidecar, EnvoyProcess, ServerSidecar, find_envoy};
use bookstore::{MeshPki, MeshPolicy};
use mtls_core::{KxGroup, PeerIdentity, TlsPolicy, TlsPreset};
use rustls::HandshakeKind;
use serde_json::{Value, json};
use support::free_addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(10);

fn envoy() -> Option<PathBuf> {
    let found = find_envoy(None);
    if found.is_none() {
        assert!(
            std::env::var("MTLS_REQUIRE_ENVOY").as_deref() != Ok("1"),
            "MTLS_REQUIRE_ENVOY=1 but no Envoy binary: run ./scripts/install-test-tools.sh or set MTLS_ENVOY"
        );
        eprintln!("skipped: no Envoy binary");
    }
    found
}

fn files(pki: &MeshPki, svid: &bookstore::SvidFiles) -> CertSource {
    CertSource::Files {
        chain: svid.cert.clone(),
        key: svid.key.clone(),
        bundle: pki.bundle_path().to_path_buf(),
    }
}

fn tls_socket(kind: &str, extra: Value) -> Value {
    let mut config = json!({
        "@type": format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}"),
    });
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": config })
}

/// A TLS listener (client certificate required) that echoes what it reads.
fn echo_listener(name: &str, common_tls_context: Value) -> Value {
    json!({
        "name": name,
        "stat_prefix": name,
        "address": socket(ANY_PORT),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.echo",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo" },
            }],
            "transport_socket": tls_socket("DownstreamTlsContext", json!({
                "require_client_certificate": true,
                "common_tls_context": common_tls_context,
            })),
        }],
    })
}

/// A plaintext TCP listener proxied to `cluster` (on a port the kernel picks, see
/// [`ANY_PORT`]).
fn tcp_proxy_listener(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "stat_prefix": name,
        "address": socket(ANY_PORT),
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name,
                "cluster": cluster,
            },
        }]}],
    })
}

/// A cluster reaching `upstream` over mTLS with `common_tls_context`.
fn tls_cluster(name: &str, upstream: SocketAddr, common_tls_context: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(upstream) } }] }],
        },
        "transport_socket": tls_socket("UpstreamTlsContext", json!({ "common_tls_context": common_tls_context })),
    })
}

/// Where every listener binds: port 0, so the kernel picks the port as Envoy binds it (no
/// port picked beforehand that something else could take); [`bound`] reads it back. Stats
/// are then under `listener.<name>.`, each listener's `stat_prefix`.
const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The address Envoy's listener `name` is bound to.
fn bound(envoy: &EnvoyProcess, name: &str) -> SocketAddr {
    let listeners = mtls_test_support::envoy_listeners(&envoy.admin().to_string());
    *listeners
        .get(name)
        .unwrap_or_else(|| panic!("expected Envoy's listener {name:?}, found {listeners:?}"))
}

fn socket(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": { "address": socket(SocketAddr::from(([127, 0, 0, 1], 0))) },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}

/// Connects with `config`, sends a line and reads it back (the echo proves Envoy accepted
/// our certificate); returns what our side negotiated.
async fn through_echo(addr: SocketAddr, config: rustls::ClientConfig) -> mtls_core::Negotiated {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("handshake with Envoy at {addr}: {e}"));
        let negotiated = mtls_core::Negotiated::from_connection(tls.get_ref().1).unwrap();
        tls.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping\n");
        negotiated
    };
    tokio::time::timeout(STEP, work)
        .await
        .expect("echo through Envoy timed out")
}

/// An mtls server (tokio-rustls) that reports each handshake: the peer (with what was
/// negotiated) or the explained failure.
async fn mtls_server(
    config: rustls::ServerConfig,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<PeerIdentity, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let peer = PeerIdentity::from_connection(tls.get_ref().1).unwrap();
                        let _ = tx.send(Ok(peer));
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = tls.read(&mut buf).await {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(mtls_core::explain_handshake_error(&e)));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Sends a line through Envoy's plaintext listener (to our mtls server) and waits for our
/// server's report of the handshake Envoy made.
async fn via_envoy_upstream(
    listener: SocketAddr,
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<Result<PeerIdentity, String>>,
) -> Result<PeerIdentity, String> {
    let mut tcp = TcpStream::connect(listener).await.unwrap();
    tcp.write_all(b"ping\n").await.unwrap();
    let report = tokio::time::timeout(STEP, reports.recv())
        .await
        .expect("Envoy never reached our server")
        .unwrap();
    if report.is_ok() {
        let mut buf = [0u8; 5];
        tokio::time::timeout(STEP, tcp.read_exact(&mut buf))
            .await
            .expect("echo back through Envoy timed out")
            .unwrap();
        assert_eq!(&buf, b"ping\n");
    }
    report
}

fn stat(stats: &std::collections::BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

fn ssl_stats(stats: &std::collections::BTreeMap<String, u64>, prefix: &str) -> String {
    stats
        .iter()
        .filter(|(k, v)| k.starts_with(prefix) && k.contains(".ssl.") && **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_post_quantum_on_every_hop_with_envoy_defaults() {
    let Some(binary) = envoy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let policy = MeshPolicy::bookstore();
    let pki = MeshPki::create(dir.path(), &policy).unwrap();

    // Our server (the default policy) behind two Envoy upstreams: one with our rendered
    // tls_params, one with Envoy's default (TLS 1.2 at most).
    let (server_addr, mut reports) = mtls_server(pki.server_config().unwrap()).await;
    let envoy_defaults =
        files(&pki, pki.client()).common_tls_context(&policy.server_san_matchers(), &policy.tls);
    let mut envoy_defaults_no_params = envoy_defaults.clone();
    envoy_defaults_no_params
        .as_object_mut()
        .unwrap()
        .remove("tls_params");

    let mut listener_tls =
        files(&pki, pki.server()).common_tls_context(&policy.client_san_matchers(), &policy.tls);
    // The listener runs Envoy's own defaults: no tls_params at all.
    listener_tls.as_object_mut().unwrap().remove("tls_params");
    let config = bootstrap(
        vec![
            echo_listener("echo", listener_tls),
            tcp_proxy_listener("to_rendered", "rendered"),
            tcp_proxy_listener("to_default", "envoy_default"),
        ],
        vec![
            tls_cluster("rendered", server_addr, envoy_defaults),
            tls_cluster("envoy_default", server_addr, envoy_defaults_no_params),
        ],
    );
    let envoy = EnvoyProcess::start(&binary, "tls-defaults", &config, dir.path())
        .await
        .unwrap();
    let echo = bound(&envoy, "echo");
    let upstream_rendered = bound(&envoy, "to_rendered");
    let upstream_default = bound(&envoy, "to_default");

    // mtls client -> Envoy listener (defaults): hybrid, one ClientHello.
    let ours = through_echo(echo, pki.client_config(pki.client()).unwrap()).await;
    assert_eq!(ours.kx_group(), Some(KxGroup::X25519Mlkem768), "{ours}");
    assert_eq!(
        ours.handshake_kind(),
        Some(HandshakeKind::Full),
        "no HelloRetryRequest: {ours}"
    );

    // Envoy upstream (rendered default policy) -> mtls server: hybrid, one ClientHello.
    let peer = via_envoy_upstream(upstream_rendered, &mut reports)
        .await
        .unwrap();
    let tls = peer.negotiated().unwrap();
    assert_eq!(peer.spiffe_id().unwrap().to_string(), bookstore::CLIENT_ID);
    assert_eq!(tls.kx_group(), Some(KxGroup::X25519Mlkem768), "{tls}");
    assert_eq!(tls.handshake_kind(), Some(HandshakeKind::Full), "{tls}");

    // Envoy upstream with Envoy's default maximum (TLS 1.2): refused, and the log says why.
    let refused = via_envoy_upstream(upstream_default, &mut reports)
        .await
        .expect_err("a TLS 1.2-only Envoy upstream must be refused by the default policy");
    for part in [
        "protocol version mismatch",
        "tls_maximum_protocol_version: TLSv1_3",
        "min_version to TLSv1_2",
    ] {
        assert!(refused.contains(part), "{part:?} missing: {refused}");
    }

    let stats = envoy.stats().await.unwrap();
    let listener = "listener.echo.ssl";
    assert!(
        stat(&stats, &format!("{listener}.curves.X25519MLKEM768")) >= 1,
        "Envoy's listener stats: {}",
        ssl_stats(&stats, "listener.")
    );
    assert_eq!(
        stat(&stats, &format!("{listener}.curves.X25519")),
        0,
        "{}",
        ssl_stats(&stats, "listener.")
    );
    assert!(
        stat(&stats, "cluster.rendered.ssl.curves.X25519MLKEM768") >= 1
            && stat(&stats, "cluster.rendered.ssl.versions.TLSv1.3") >= 1,
        "Envoy's cluster stats: {}",
        ssl_stats(&stats, "cluster.")
    );
}

/// Each preset, both directions, against one Envoy running the same preset (rendered by
/// `CertSource::common_tls_context`): what it negotiates, from both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_preset_against_envoy_running_the_same_preset() {
    let Some(binary) = envoy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = MeshPolicy::bookstore();
    let pki = MeshPki::create(dir.path(), &base).unwrap();
    let expected = |preset: TlsPreset| match preset {
        TlsPreset::Default | TlsPreset::Tls13Only => KxGroup::X25519Mlkem768,
        TlsPreset::Classical => KxGroup::X25519,
        TlsPreset::Nist => KxGroup::Secp256r1,
        other => panic!("no expectation for {other}"),
    };

    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    let mut cases = Vec::new();
    for preset in TlsPreset::ALL {
        let mut policy = base.clone();
        policy.tls = TlsPolicy::preset(preset);
        let (server_addr, reports) = mtls_server(pki.server_config_with(&policy).unwrap()).await;
        let name = preset.name().replace('-', "_");
        listeners.push(echo_listener(
            &format!("echo_{name}"),
            files(&pki, pki.server())
                .common_tls_context(&policy.client_san_matchers(), &policy.tls),
        ));
        listeners.push(tcp_proxy_listener(&format!("to_{name}"), &name));
        clusters.push(tls_cluster(
            &name,
            server_addr,
            files(&pki, pki.client())
                .common_tls_context(&policy.server_san_matchers(), &policy.tls),
        ));
        cases.push((preset, policy, reports));
    }
    let envoy = EnvoyProcess::start(
        &binary,
        "tls-presets",
        &bootstrap(listeners, clusters),
        dir.path(),
    )
    .await
    .unwrap();

    let mut failures = Vec::new();
    for (preset, policy, mut reports) in cases {
        let group = expected(preset);
        let name = preset.name().replace('-', "_");
        let echo = bound(&envoy, &format!("echo_{name}"));
        let upstream = bound(&envoy, &format!("to_{name}"));
        let ours = through_echo(echo, pki.client_config_with(&policy).unwrap()).await;
        if ours.kx_group() != Some(group) || ours.handshake_kind() != Some(HandshakeKind::Full) {
            failures.push(format!(
                "{preset}: mtls client -> Envoy: {ours}; expected {group} full"
            ));
        }
        match via_envoy_upstream(upstream, &mut reports).await {
            Ok(peer) => {
                let tls = peer.negotiated().unwrap();
                if tls.kx_group() != Some(group)
                    || tls.handshake_kind() != Some(HandshakeKind::Full)
                {
                    failures.push(format!(
                        "{preset}: Envoy -> mtls server: {tls}; expected {group} full"
                    ));
                }
            }
            Err(e) => failures.push(format!("{preset}: Envoy -> mtls server refused: {e}")),
        }
        let stats = envoy.stats().await.unwrap();
        let listener = format!("listener.echo_{name}.ssl.curves.{}", group.envoy_name());
        let cluster = format!("cluster.{name}.ssl.curves.{}", group.envoy_name());
        for stat_name in [listener, cluster] {
            if stat(&stats, &stat_name) < 1 {
                failures.push(format!(
                    "{preset}: Envoy did not count {stat_name}: {}",
                    ssl_stats(&stats, "")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn validate(binary: &Path, dir: &Path, name: &str, config: &Value) -> Result<(), String> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let out = support::envoy_validate(binary, &path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn envoy_validates_every_rendered_policy() {
    let Some(binary) = envoy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = MeshPolicy::bookstore();
    let pki = MeshPki::create(dir.path(), &base).unwrap();
    let mut policies: Vec<(String, TlsPolicy)> = TlsPreset::ALL
        .into_iter()
        .map(|p| (p.name().to_owned(), TlsPolicy::preset(p)))
        .collect();
    // With TLS 1.2 opted in, `cipher_suites` (TLS 1.2 suites, OpenSSL names) is rendered too.
    for preset in [TlsPreset::Default, TlsPreset::Classical, TlsPreset::Nist] {
        policies.push((
            format!("{}-tls12", preset.name()),
            TlsPolicy::preset(preset).allow_tls12(),
        ));
    }
    let mut failures = Vec::new();
    for (name, tls) in policies {
        tls.check().unwrap();
        let mut policy = base.clone();
        policy.tls = tls;
        let client =
            ClientSidecar::new(free_addr(), 8443, files(&pki, pki.client())).bootstrap(&policy);
        let server = ServerSidecar::new(
            free_addr(),
            free_addr(),
            pki.jwks_json(),
            files(&pki, pki.server()),
        )
        .bootstrap(&policy);
        let rendered = &client["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
            ["common_tls_context"]["tls_params"];
        assert_eq!(rendered, &json!(policy.tls.envoy_tls_params()), "{name}");
        for (side, config) in [("client-sidecar", client), ("server-sidecar", server)] {
            if let Err(e) = validate(&binary, dir.path(), &format!("{name}-{side}"), &config) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
