//! Envoy 1.40 gets its certificate and validation context over SDS from mtls-agent (Unix
//! socket), serves mTLS, and picks up a forced rotation with no restart while a load loop
//! runs across it; an unknown secret name is an error Envoy reports. Across a CA rotation
//! (`Agent::rotate_ca`), an Envoy validating with SPIRE's `ALL` (the SPIFFE certificate
//! validator) keeps serving with zero failed calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mtls_core::{Authorize, ClientConfigBuilder, WorkloadApiSource};
use mtls_test_support::envoy_config::mtls_transport_socket;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE_ID: &str = "envoy-test";

fn sds_config(sds_socket_cluster: &str, initial_fetch_timeout: &str) -> Value {
    json!({
        "resource_api_version": "V3",
        "initial_fetch_timeout": initial_fetch_timeout,
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": { "cluster_name": sds_socket_cluster } }]
        }
    })
}

/// A TLS listener (client certificate required) whose certificate and validation context
/// come from SDS; Envoy waits at most `wait` for them before starting.
fn tls_listener(name: &str, port: u16, cert_name: &str, ca_name: &str, wait: &str) -> Value {
    json!({
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{
            "transport_socket": mtls_transport_socket(json!({
                "tls_certificate_sds_secret_configs": [
                    { "name": cert_name, "sds_config": sds_config("sds_agent", wait) }
                ],
                "validation_context_sds_secret_config":
                    { "name": ca_name, "sds_config": sds_config("sds_agent", wait) }
            })),
            "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": name,
                    "cluster": "upstream"
                }
            }]
        }]
    })
}

/// Envoy with the listener `mtls` (its validation context the SDS secret `ca_name`) and
/// `unknown_name`, both on a port the kernel picks (read back with `envoy_ports`).
fn bootstrap(sds_socket: &Path, upstream_port: u16, ca_name: &str) -> Value {
    json!({
        "node": { "id": NODE_ID, "cluster": "mtls-agent-test" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "clusters": [
                {
                    "name": "sds_agent",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": { "http2_protocol_options": {} }
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "sds_agent",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                            "pipe": { "path": sds_socket.to_str().unwrap() }
                        } } }] }]
                    }
                },
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                            "socket_address": { "address": "127.0.0.1", "port_value": upstream_port }
                        } } }] }]
                    }
                }
            ],
            "listeners": [
                tls_listener("mtls", 0, ENVOY, ca_name, "5s"),
                tls_listener("unknown_name", 0, "no-such-secret", "ROOTCA", "0.3s")
            ]
        }
    })
}

/// A loopback TCP echo server (the upstream behind Envoy).
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Callers making a new mTLS connection and round trip through Envoy, over and over, until
/// [`Load::finish`]: what each call saw (the serial Envoy presented) or why it failed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(callers: u64, connector: &tokio_rustls::TlsConnector, port: u16) -> Self {
        let load = Self {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(Mutex::new(Vec::new())),
            seen: Arc::new(Mutex::new(BTreeSet::new())),
            workers: Vec::new(),
        };
        let workers = (0..callers)
            .map(|w| {
                let (stop, ok, failures, seen, connector) = (
                    load.stop.clone(),
                    load.ok.clone(),
                    load.failures.clone(),
                    load.seen.clone(),
                    connector.clone(),
                );
                tokio::spawn(async move {
                    let mut n = w * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match round_trip(&connector, port, n).await {
                            Ok(serial) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                seen.lock().unwrap().insert(serial);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Self { workers, ..load }
    }

    /// Calls that succeeded so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Whether a call saw Envoy present the certificate with `serial`.
    fn has_seen(&self, serial: &str) -> bool {
        self.seen.lock().unwrap().contains(serial)
    }

    /// Stops the callers and waits for them: calls that succeeded, the failures, the serials seen.
    async fn finish(self) -> (u64, Vec<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        let seen = self.seen.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures, seen)
    }
}

/// One mTLS round trip through Envoy; returns the serial of the certificate Envoy showed.
async fn round_trip(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    n: u64,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from("envoy.bookstore.local").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| serial_of_der(c.as_ref()))
        .ok_or("no peer certificate")?;
    let msg = format!("ping {n}\n");
    tls.write_all(msg.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if buf != msg.as_bytes() {
        return Err(format!(
            "echo mismatch: {:?}",
            String::from_utf8_lossy(&buf)
        ));
    }
    let _ = tls.shutdown().await;
    Ok(serial)
}

/// A registration giving our uid the web identity, and Envoy's identity to our uid on the
/// SDS node `NODE_ID`.
fn envoy_and_web_for_me() -> String {
    format!(
        "entries:\n  - spiffe_id: {ENVOY}\n    selectors: {{ uid: {uid}, sds_node_id: {NODE_ID} }}\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {uid} }}\n",
        uid = my_uid()
    )
}

/// A workload of the agent `t`: its Workload API source and a connector (ALPN `echo`) that
/// accepts only Envoy's identity.
async fn echo_connector(t: &TestAgent) -> (WorkloadApiSource, tokio_rustls::TlsConnector) {
    let source = WorkloadApiSource::builder()
        .endpoint(t.endpoint())
        .connect()
        .await
        .unwrap();
    let client = ClientConfigBuilder::new(source.clone(), source.clone())
        .authorize(Authorize::exact(ENVOY.parse().unwrap()))
        .alpn_protocols(["echo"])
        .build()
        .unwrap();
    (source, tokio_rustls::TlsConnector::from(Arc::new(client)))
}

/// Envoy on [`bootstrap`] in front of an echo server, serving: its process, the ports of its
/// admin and `listeners`, its log.
struct Served {
    proc: ChildGuard,
    ports: EnvoyPorts,
    log: PathBuf,
}

impl Served {
    /// Starts Envoy with its validation context the SDS secret `ca_name` and waits (30 s at
    /// most) until `listeners` are bound and the `mtls` listener completes a round trip over
    /// `connector`; `how` says in the failure what was being served.
    async fn start(
        t: &TestAgent,
        envoy: &Path,
        ca_name: &str,
        listeners: &[&str],
        connector: &tokio_rustls::TlsConnector,
        how: &str,
    ) -> Self {
        let upstream = echo_server().await;
        let config = t.dir.path().join("envoy.json");
        std::fs::write(
            &config,
            bootstrap(&t.sds_socket(), upstream, ca_name).to_string(),
        )
        .unwrap();
        let admin_path = t.dir.path().join("admin.txt");
        let log = t.dir.path().join("envoy.log");
        let mut proc = ChildGuard::spawn_logging(
            "envoy",
            Command::new(envoy)
                .arg("-c")
                .arg(&config)
                .arg("--disable-hot-restart")
                .arg("--admin-address-path")
                .arg(&admin_path)
                .args(["-l", "info"]),
            &log,
        );
        let started = Instant::now();
        let ports = envoy_ports(
            &mut proc,
            &admin_path,
            Some(&log),
            listeners,
            Duration::from_secs(30),
        );
        let good = ports.listener("mtls").port();
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("envoy exited with {status}: {log}");
            }
            if round_trip(connector, good, 0).await.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "envoy did not serve mTLS {how}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { proc, ports, log }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_svid_and_bundle_over_sds_and_rotates_under_load_without_restart() {
    let Some(envoy) = envoy_or_skip("envoy_sds") else {
        return;
    };
    let reg = envoy_and_web_for_me();
    let t = TestAgent::start(&reg).await;
    // The workload side of the test gets its own SVID from the agent too.
    let (_source, connector) = echo_connector(&t).await;
    let mut served = Served::start(
        &t,
        &envoy,
        "spiffe://bookstore.local",
        &["mtls", "unknown_name"],
        &connector,
        "with SDS secrets",
    )
    .await;
    let (proc, log_path) = (&mut served.proc, &served.log);
    let envoy_pid = proc.pid();
    let admin = served.ports.admin.clone();
    let (good, bad) = (
        served.ports.listener("mtls").port(),
        served.ports.listener("unknown_name").port(),
    );
    let envoy_id = ENVOY.parse().unwrap();
    let first = t.agent.serial_of(&envoy_id).unwrap();
    let certs = http_get(&admin, "/certs");
    assert!(
        certs.contains(&first.replace(':', "")),
        "/certs shows the SDS certificate {first}: {certs}"
    );
    assert!(certs.contains(ENVOY), "{certs}");

    // Load loop across a forced rotation: new connections all the time.
    let load = Load::start(4, &connector, good);
    eventually(Duration::from_secs(10), "calls before rotation", || {
        (load.ok() >= 50).then_some(())
    })
    .await;
    t.agent.rotate_now().unwrap();
    let second = t.agent.serial_of(&envoy_id).unwrap();
    assert_ne!(first, second);
    let mut certs = String::new();
    eventually(
        Duration::from_secs(10),
        "Envoy /certs to show the new serial",
        || {
            certs = http_get(&admin, "/certs");
            certs.contains(&second.replace(':', "")).then_some(())
        },
    )
    .await;
    assert!(
        !certs.contains(&first.replace(':', "")),
        "old serial gone from /certs: {certs}"
    );
    let at_rotation = load.ok();
    eventually(Duration::from_secs(10), "calls after rotation", || {
        (load.ok() >= at_rotation + 50 && load.has_seen(&second)).then_some(())
    })
    .await;
    let (calls, failures, seen) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed calls across the rotation: {failures:?}",
        failures.len()
    );
    assert!(seen.contains(&first) && seen.contains(&second), "{seen:?}");
    // No restart: same process, still running.
    assert!(proc.child.try_wait().unwrap().is_none());
    assert_eq!(proc.pid(), envoy_pid);
    let stats = http_get(&admin, "/stats?filter=sds");
    eprintln!("{calls} calls, 0 failed, serials {seen:?}; Envoy SDS stats:\n{stats}");

    // The listener whose certificate name is unknown: the agent refuses the name, Envoy
    // counts an SDS update failure and logs the agent's message; no handshake succeeds.
    let stats = eventually(
        Duration::from_secs(10),
        "sds.no-such-secret.update_failure",
        || {
            let stats = http_get(&admin, "/stats?filter=no-such-secret");
            stats
                .lines()
                .find(|l| l.starts_with("sds.no-such-secret.update_failure:"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
                .map(|_| stats.clone())
        },
    )
    .await;
    assert!(round_trip(&connector, bad, 1).await.is_err());
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(
        // grpc-message arrives percent-encoded: "unknown%20SDS%20secret%20name%20%22no-such-secret%22..."
        log.contains(
            "StreamSecrets gRPC config stream to sds_agent closed: 3, unknown%20SDS%20secret%20name"
        ) && log.contains("no-such-secret"),
        "Envoy logs the agent's refusal; stats:\n{stats}\nlog:\n{log}"
    );
}

/// A counter of Envoy's `/stats` (0 if absent).
fn stat(admin: &str, name: &str) -> u64 {
    http_get(admin, &format!("/stats?filter={name}"))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_validating_with_all_keeps_serving_across_a_ca_rotation() {
    let Some(envoy) = envoy_or_skip("envoy_sds") else {
        return;
    };
    let reg = envoy_and_web_for_me();
    // Prepared until the test activates it, once Envoy and the client have the new root.
    let t = TestAgent::start_with(&reg, |c| c.ca_activation_delay(Duration::from_secs(3600))).await;
    let (source, connector) = echo_connector(&t).await;
    let mut served = Served::start(
        &t,
        &envoy,
        "ALL",
        &["mtls"],
        &connector,
        "validating with ALL (SPIFFE validator)",
    )
    .await;
    let proc = &mut served.proc;
    let admin = served.ports.admin.clone();
    let good = served.ports.listener("mtls").port();

    let load = Load::start(2, &connector, good);
    let calls = |what: &'static str| {
        let load = &load;
        async move {
            let at = load.ok();
            eventually(Duration::from_secs(20), what, || {
                (load.ok() >= at + 30).then_some(())
            })
            .await;
        }
    };
    calls("calls before the rotation").await;
    let envoy_id = ENVOY.parse().unwrap();
    let first = t.agent.serial_of(&envoy_id).unwrap();

    // Prepared: Envoy takes the ALL update (old + new roots), the client its bundle.
    let updates = stat(&admin, "sds.ALL.update_success");
    t.agent.rotate_ca().unwrap();
    let td: mtls_core::TrustDomain = TD.parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "Envoy and the client to take the bundle with the new root",
        || {
            (stat(&admin, "sds.ALL.update_success") > updates
                && mtls_core::TrustSource::current(&source)
                    .roots(Some(&td))
                    .len()
                    == 2)
                .then_some(())
        },
    )
    .await;
    calls("calls while prepared").await;

    // Active: Envoy presents an SVID of the new CA; the client's new SVID verifies at Envoy.
    t.agent.activate_prepared_ca().unwrap();
    let second = t.agent.serial_of(&envoy_id).unwrap();
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(10),
        "Envoy /certs to show the new serial",
        || {
            http_get(&admin, "/certs")
                .contains(&second.replace(':', ""))
                .then_some(())
        },
    )
    .await;
    let at = load.ok();
    eventually(Duration::from_secs(20), "calls with the new CA", || {
        (load.ok() >= at + 30 && load.has_seen(&second)).then_some(())
    })
    .await;

    // Retired: the new root only; calls go on.
    let updates = stat(&admin, "sds.ALL.update_success");
    t.agent.retire_old_cas().unwrap();
    eventually(
        Duration::from_secs(10),
        "Envoy to take the retirement",
        || (stat(&admin, "sds.ALL.update_success") > updates).then_some(()),
    )
    .await;
    calls("calls after retirement").await;

    let (_, failures, _) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed calls across the CA rotation: {failures:?}",
        failures.len()
    );
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "Envoy still running"
    );
}
