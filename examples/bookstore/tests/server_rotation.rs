//! `bookstore-server` as a process on the watched file sources: a probe doing a fresh mTLS
//! handshake every 0.1 s sees every rotation of the server's identity and CA bundle —
//! atomic rename, Kubernetes `..data` symlink swap, in-place writes — with no failed
//! handshake; an expired or foreign-CA leaf dropped in keeps the last good one with exactly
//! one WARN on stderr; an expired certificate at start is refused.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bookstore::{CLIENT_ID, SERVER_ID};
use mtls_certs::{CaParams, CertificateAuthority, Credential, LeafParams, SpiffeId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, IdentityHandle, PeerIdentity, TrustBundle,
};
use support::{ANY_PORT, ChildGuard, bin, free_addr, listening_addr, run};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every bounded wait of these tests (generous: the machine may be loaded).
const BOUND: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Two CAs of the trust domain (root -> issuing intermediate each) and a foreign one.
struct Pki {
    root1: CertificateAuthority,
    int1: CertificateAuthority,
    root2: CertificateAuthority,
    int2: CertificateAuthority,
    foreign: CertificateAuthority,
}

impl Pki {
    fn new() -> Self {
        let root1 = CertificateAuthority::new_root(&CaParams::new("Bookstore Root 1")).unwrap();
        let int1 = root1
            .new_intermediate(&CaParams::new("Bookstore Issuing 1"))
            .unwrap();
        let root2 = CertificateAuthority::new_root(&CaParams::new("Bookstore Root 2")).unwrap();
        let int2 = root2
            .new_intermediate(&CaParams::new("Bookstore Issuing 2"))
            .unwrap();
        let foreign = CertificateAuthority::new_root(&CaParams::new("Foreign Root")).unwrap();
        Self {
            root1,
            int1,
            root2,
            int2,
            foreign,
        }
    }
}

/// A server SVID valid for a week (no "expires within 24 h" warning).
fn server_svid(ca: &CertificateAuthority) -> Credential {
    ca.issue(
        &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap())
            .valid_for(Duration::from_secs(7 * 24 * 3600)),
    )
    .unwrap()
}

fn client_identity(ca: &CertificateAuthority) -> Identity {
    let leaf = ca
        .issue(&LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()))
        .unwrap();
    Identity::from_pem(leaf.chain_pem(), leaf.key_pem()).unwrap()
}

fn serial(leaf: &Credential) -> String {
    Identity::from_pem(leaf.chain_pem(), leaf.key_pem())
        .unwrap()
        .serial()
        .to_string()
}

/// How the files change on disk.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Written to a temporary file, renamed over the real one.
    Atomic,
    /// Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`; a
    /// new version is a new directory and one rename of the `..data` symlink.
    DataSwap,
    /// Truncated and rewritten in place (certificate first, then the key).
    InPlace,
}

struct Files {
    dir: PathBuf,
    layout: Layout,
    version: usize,
    cert: String,
    key: String,
    ca: String,
}

impl Files {
    fn new(dir: &Path, layout: Layout, leaf: &Credential, ca: &str) -> Self {
        let mut files = Self {
            dir: dir.to_path_buf(),
            layout,
            version: 0,
            cert: leaf.chain_pem(),
            key: leaf.key_pem(),
            ca: ca.to_owned(),
        };
        if let Layout::DataSwap = layout {
            for name in ["tls.crt", "tls.key", "ca.crt"] {
                std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
            }
        }
        files.write_all();
        files
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.path("tls.crt"),
            "--key".into(),
            self.path("tls.key"),
            "--ca".into(),
            self.path("ca.crt"),
        ]
    }

    fn set_identity(&mut self, leaf: &Credential) {
        self.cert = leaf.chain_pem();
        self.key = leaf.key_pem();
        self.write_all();
    }

    fn set_ca(&mut self, pem: &str) {
        self.ca = pem.to_owned();
        self.write_all();
    }

    fn write_all(&mut self) {
        let files = [
            ("tls.crt", self.cert.clone()),
            ("tls.key", self.key.clone()),
            ("ca.crt", self.ca.clone()),
        ];
        match self.layout {
            Layout::Atomic => {
                for (name, contents) in files {
                    let tmp = self.dir.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, contents).unwrap();
                    std::fs::rename(&tmp, self.dir.join(name)).unwrap();
                }
            }
            Layout::InPlace => {
                for (name, contents) in files {
                    std::fs::write(self.dir.join(name), contents).unwrap();
                }
            }
            Layout::DataSwap => {
                self.version += 1;
                let version = format!("..2026_12_02_{:04}", self.version);
                let new = self.dir.join(&version);
                std::fs::create_dir(&new).unwrap();
                for (name, contents) in files {
                    std::fs::write(new.join(name), contents).unwrap();
                }
                let tmp = self.dir.join("..data_tmp");
                std::os::unix::fs::symlink(&version, &tmp).unwrap();
                let old = std::fs::read_link(self.dir.join("..data")).ok();
                std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
                if let Some(old) = old {
                    std::fs::remove_dir_all(self.dir.join(old)).unwrap();
                }
            }
        }
    }
}

/// A running `bookstore-server` with its stderr collected line by line.
struct Server {
    guard: ChildGuard,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: &Files) -> Self {
        let mut command = Command::new(bin("bookstore-server"));
        command
            .args(["--listen", ANY_PORT, "--reload-interval", "100ms"])
            .args(["--allow-spiffe-id", CLIENT_ID])
            .args(files.args())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        let mut guard = ChildGuard::spawn("bookstore-server", &mut command);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = guard.child.stderr.take().unwrap();
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let line = guard.wait_for_line("listening on");
        assert!(line.contains("reloaded on change"), "{line}");
        let addr: SocketAddr = listening_addr(&line).parse().unwrap();
        Self {
            guard,
            addr,
            stderr,
        }
    }

    fn warns(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("WARN"))
            .cloned()
            .collect()
    }
}

struct Record {
    at: Instant,
    result: Result<String, String>,
}

/// A fresh mTLS handshake every 0.1 s against the server, recording the server's serial.
/// Its identity is an [`IdentityHandle`] the test can rotate; it trusts both roots.
struct Probe {
    identity: IdentityHandle,
    log: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn client_config(identity: IdentityHandle, pki: &Pki) -> Arc<rustls::ClientConfig> {
    let trust = TrustBundle::spiffe()
        .add_domain_pem(
            "bookstore.local".parse().unwrap(),
            pki.root1.cert_pem() + &pki.root2.cert_pem(),
        )
        .unwrap();
    Arc::new(
        ClientConfigBuilder::new(identity, Arc::new(trust))
            .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
            .build()
            .unwrap(),
    )
}

/// One handshake: TLS, the HTTP/2 preface, and the server's first bytes (in TLS 1.3 a
/// refused client certificate shows only when the server's answer is read).
async fn handshake(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<String, String> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let serial = PeerIdentity::from_connection(tls.get_ref().1)
            .map_err(|e| e.to_string())?
            .serial()
            .map(ToString::to_string)
            .unwrap_or_default();
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        let _ = tls.shutdown().await;
        Ok(serial)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

impl Probe {
    fn start(pki: &Pki, addr: SocketAddr) -> Self {
        let identity = IdentityHandle::new(client_identity(&pki.int1));
        let config = client_config(identity.clone(), pki);
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&log), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = Instant::now();
                let result = handshake(Arc::clone(&config), addr).await;
                l.lock().unwrap().push(Record { at, result });
            }
        });
        Self {
            identity,
            log,
            stop,
            task: Some(task),
        }
    }

    /// Waits until a handshake started after `since` saw `serial`; returns when it started.
    async fn wait_for_serial(&self, since: Instant, serial: &str) -> Instant {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(r) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.at > since && r.result.as_deref() == Ok(serial))
            {
                return r.at;
            }
            assert!(
                Instant::now() < deadline,
                "the probe never saw serial {serial}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` handshakes have started after `since`.
    async fn wait_for_handshakes(&self, since: Instant, n: usize) {
        let deadline = Instant::now() + BOUND;
        while self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.at > since)
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "the probe stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The serials seen from `since` on.
    fn serials_since(&self, since: Instant) -> Vec<Result<String, String>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|r| r.at >= since)
            .map(|r| r.result.clone())
            .collect()
    }

    /// Stops the probe; asserts that none of its handshakes failed and returns how many ran.
    async fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
        }
        let log = self.log.lock().unwrap();
        let failed: Vec<&String> = log.iter().filter_map(|r| r.result.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} handshakes failed: {failed:?}",
            failed.len(),
            log.len()
        );
        log.len()
    }
}

/// The serial of the certificate `openssl s_client` is served (verified against root 1, with
/// a client certificate of CA 1).
fn openssl_served_serial(pki: &Pki, dir: &Path, addr: SocketAddr) -> String {
    let client = pki
        .int1
        .issue(&LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()))
        .unwrap();
    let (cert, key, chain, ca) = (
        dir.join("openssl-client.pem"),
        dir.join("openssl-client-key.pem"),
        dir.join("openssl-chain.pem"),
        dir.join("openssl-ca.pem"),
    );
    std::fs::write(&cert, client.certificate().pem()).unwrap();
    std::fs::write(&key, client.key_pem()).unwrap();
    std::fs::write(&chain, pki.int1.cert_pem()).unwrap();
    std::fs::write(&ca, pki.root1.cert_pem()).unwrap();
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-verify_return_error",
        ])
        .args(["-alpn", "h2", "-CAfile"])
        .arg(&ca)
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-cert_chain")
        .arg(&chain);
    let out = support::run_command("openssl s_client", &mut command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = mtls_certs::parse_certificates_pem(&stdout).unwrap();
    PeerIdentity::from_chain(&certs[..1])
        .unwrap()
        .serial()
        .unwrap()
        .to_string()
}

/// Retries a one-off handshake (not counted by the probe) until `accepted` is what the
/// server answers; this is how a test sees that the server's CA bundle changed.
async fn wait_until_client_accepted(
    pki: &Pki,
    addr: SocketAddr,
    client: &Identity,
    accepted: bool,
) {
    let config = client_config(IdentityHandle::new(client.clone()), pki);
    let deadline = Instant::now() + BOUND;
    loop {
        let result = handshake(Arc::clone(&config), addr).await;
        if result.is_ok() == accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server never {} a client of {}: {result:?}",
            if accepted { "accepted" } else { "refused" },
            client.issuer()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Identity rotation, then a full CA rollover (both roots trusted, the server moves to the
/// new CA, the old root is dropped), under the probe: every change is seen, none fails.
async fn rotations_under_probe(layout: Layout) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let v1 = server_svid(&pki.int1);
    let mut files = Files::new(dir.path(), layout, &v1, &pki.root1.cert_pem());
    let server = Server::start(&files);
    let probe = Probe::start(&pki, server.addr);
    let t0 = Instant::now();
    probe.wait_for_serial(t0, &serial(&v1)).await;

    // 1. A new identity from the same CA.
    let v2 = server_svid(&pki.int1);
    let t1 = Instant::now();
    files.set_identity(&v2);
    let seen = probe.wait_for_serial(t1, &serial(&v2)).await;
    probe.wait_for_handshakes(seen, 5).await;
    let after = probe.serials_since(seen);
    assert!(
        after
            .iter()
            .all(|r| r.as_deref() == Ok(serial(&v2).as_str())),
        "once the new identity is served, only it is: {after:?}"
    );

    // A peer nobody here wrote sees it too.
    assert_eq!(
        openssl_served_serial(&pki, dir.path(), server.addr),
        serial(&v2)
    );

    // 2. CA bundle: both roots. A client of the new CA is accepted once the server has it.
    let new_client = client_identity(&pki.int2);
    files.set_ca(&(pki.root1.cert_pem() + &pki.root2.cert_pem()));
    wait_until_client_accepted(&pki, server.addr, &new_client, true).await;

    // 3. The server moves to the new CA; the probe (trusting both roots) sees it.
    let v3 = server_svid(&pki.int2);
    let t3 = Instant::now();
    files.set_identity(&v3);
    probe.wait_for_serial(t3, &serial(&v3)).await;

    // 4. The probe moves to the new CA too, then the old root is dropped: an old-CA client
    //    is refused from then on, the probe never is.
    probe.identity.rotate(new_client);
    let t4 = Instant::now();
    probe.wait_for_handshakes(t4, 3).await;
    files.set_ca(&pki.root2.cert_pem());
    wait_until_client_accepted(&pki, server.addr, &client_identity(&pki.int1), false).await;
    let t5 = Instant::now();
    probe.wait_for_handshakes(t5, 10).await;

    let count = probe.finish().await;
    println!("{layout:?}: {count} handshakes, none failed");
    assert!(count >= 20, "only {count} handshakes");
    // The issuer change was warned about.
    let warns = server.warns();
    assert!(
        warns
            .iter()
            .any(|w| w.contains("issuer changed") && w.contains("Bookstore Issuing 2")),
        "{warns:#?}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_rename_rotations_of_identity_and_ca_have_no_failed_handshake() {
    rotations_under_probe(Layout::Atomic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_data_swap_rotations_of_identity_and_ca_have_no_failed_handshake() {
    rotations_under_probe(Layout::DataSwap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_rotations_of_identity_and_ca_have_no_failed_handshake() {
    rotations_under_probe(Layout::InPlace).await;
}

/// An expired leaf, then a foreign-CA leaf, dropped in (`..data` swap): the probe keeps
/// seeing the last good certificate with no failed handshake, and each drop-in costs
/// exactly one WARN line however many poll ticks pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_foreign_leaf_dropped_in_keeps_the_last_good_one_with_one_warn() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let good = server_svid(&pki.int1);
    let mut files = Files::new(dir.path(), Layout::DataSwap, &good, &pki.root1.cert_pem());
    let server = Server::start(&files);
    let probe = Probe::start(&pki, server.addr);
    probe.wait_for_serial(Instant::now(), &serial(&good)).await;
    assert_eq!(server.warns(), Vec::<String>::new());

    let now = OffsetDateTime::now_utc();
    let expired = pki
        .int1
        .issue(
            &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap())
                .valid_between(now - time::Duration::days(2), now - time::Duration::days(1)),
        )
        .unwrap();
    let foreign = server_svid(&pki.foreign);
    for (bad, expected) in [
        (&expired, "expired at"),
        (&foreign, "issuer CN=Foreign Root"),
    ] {
        let before = server.warns().len();
        files.set_identity(bad);
        let deadline = Instant::now() + BOUND;
        while server.warns().len() == before {
            assert!(Instant::now() < deadline, "no WARN for the {expected} leaf");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Many more poll ticks (100 ms each) and probe handshakes.
        let t = Instant::now();
        probe.wait_for_handshakes(t, 20).await;
        let after = probe.serials_since(t);
        assert!(
            after
                .iter()
                .all(|r| r.as_deref() == Ok(serial(&good).as_str())),
            "the last good certificate stays: {after:?}"
        );
        let warns = server.warns();
        assert_eq!(warns.len(), before + 1, "exactly one WARN: {warns:#?}");
        println!("{}", warns[before]);
        let warn = &warns[before];
        assert!(
            warn.contains(expected) && warn.contains("keeping the last good value"),
            "{warn}"
        );
        // Back to the good pair before the next drop-in.
        files.set_identity(&good);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    probe.finish().await;
    drop(server);
}

/// The server refuses to start on an expired certificate (naming the file and its notAfter
/// in RFC 3339) or one of a CA its bundle does not hold, and warns when it starts with one
/// that expires within 24 hours.
#[test]
fn server_refuses_an_expired_or_foreign_certificate_and_warns_of_one_expiring_soon() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let not_after = now - time::Duration::hours(1);
    let expired = pki
        .int1
        .issue(
            &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap())
                .valid_between(now - time::Duration::days(1), not_after),
        )
        .unwrap();
    let files = Files::new(dir.path(), Layout::Atomic, &expired, &pki.root1.cert_pem());
    let listen = free_addr().to_string();
    let mut args: Vec<String> = vec!["--listen".into(), listen.clone()];
    args.extend(files.args());
    let refused = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run("bookstore-server", &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "started: {stderr}");
        stderr
    };
    let err = refused(&args);
    let not_after = not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(
        err.contains("bookstore-server: error: loading our certificate (--cert")
            && err.contains(&files.path("tls.crt"))
            && err.contains(&format!("expired at {not_after}")),
        "{err}"
    );

    let dir2 = tempfile::tempdir().unwrap();
    let files = Files::new(
        dir2.path(),
        Layout::Atomic,
        &server_svid(&pki.foreign),
        &pki.root1.cert_pem(),
    );
    let mut args: Vec<String> = vec!["--listen".into(), listen.clone()];
    args.extend(files.args());
    let err = refused(&args);
    assert!(
        err.contains("issuer CN=Foreign Root")
            && err.contains("does not chain to the bundle of trust domain bookstore.local"),
        "{err}"
    );

    // Two hours left: it starts, with a WARN naming the file and the date.
    let dir3 = tempfile::tempdir().unwrap();
    let soon = pki
        .int1
        .issue(
            &LeafParams::svid(SpiffeId::new(SERVER_ID).unwrap())
                .valid_for(Duration::from_secs(2 * 3600)),
        )
        .unwrap();
    let files = Files::new(dir3.path(), Layout::Atomic, &soon, &pki.root1.cert_pem());
    let server = Server::start(&files);
    let deadline = Instant::now() + BOUND;
    while server.warns().is_empty() {
        assert!(Instant::now() < deadline, "no expiry warning");
        std::thread::sleep(Duration::from_millis(50));
    }
    let warns = server.warns();
    assert!(
        warns[0].contains("expires in 1h 59m") && warns[0].contains(&files.path("tls.crt")),
        "{warns:#?}"
    );
    drop(server.guard);
}

/// `--workload-api`: the server takes its SVID and bundle from a SPIFFE Workload API (an
/// in-process mtls-agent that grants the `bookstore-server` executable the bookstore's ID);
/// an agent rotation is served from the next handshake on, with no failed handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_identity_rotates_under_the_probe() {
    use mtls_agent::{Agent, AgentConfig, Entry, Registration, Selectors};
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let exe = std::fs::canonicalize(bin("bookstore-server")).unwrap();
    let server_id: mtls_core::SpiffeId = SERVER_ID.parse().unwrap();
    let registration = Registration::new([Entry::new(
        server_id.clone(),
        Selectors::default().uid(uid).exe(exe),
    )]);
    let trust_domain: mtls_core::TrustDomain = "bookstore.local".parse().unwrap();
    let agent = Agent::start(AgentConfig::new(
        trust_domain.clone(),
        dir.path().join("workload.sock"),
        registration,
    ))
    .await
    .unwrap();

    let mut guard = ChildGuard::spawn(
        "bookstore-server --workload-api",
        Command::new(bin("bookstore-server"))
            .args(["--listen", ANY_PORT, "--allow-spiffe-id", CLIENT_ID])
            .args(["--workload-api", &agent.workload_endpoint()])
            .env("RUST_LOG", "warn"),
    );
    let line = guard.wait_for_line("listening on");
    assert!(line.contains("SPIFFE Workload API"), "{line}");
    let addr: SocketAddr = listening_addr(&line).parse().unwrap();

    // The probe: a client SVID of the agent's CA, the agent's bundle.
    let client = agent
        .ca()
        .issue(&LeafParams::svid(SpiffeId::new(CLIENT_ID).unwrap()))
        .unwrap();
    let trust = TrustBundle::spiffe()
        .add_domain_pem(trust_domain, agent.bundle_pem())
        .unwrap();
    let config = Arc::new(
        ClientConfigBuilder::new(
            Arc::new(Identity::from_pem(client.chain_pem(), client.key_pem()).unwrap()),
            Arc::new(trust),
        )
        .authorize(Authorize::exact(server_id.clone()))
        .build()
        .unwrap(),
    );
    let mut results = Vec::new();
    let probe_until = |want: String| {
        let config = Arc::clone(&config);
        async move {
            let deadline = Instant::now() + BOUND;
            let mut seen = Vec::new();
            loop {
                let result = handshake(Arc::clone(&config), addr).await;
                let done = result.as_deref() == Ok(want.as_str());
                seen.push(result);
                if done {
                    return seen;
                }
                assert!(Instant::now() < deadline, "never served {want}: {seen:?}");
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    };
    let first = agent.serial_of(&server_id).unwrap();
    results.extend(probe_until(first.clone()).await);
    agent.rotate_now().unwrap();
    let second = agent.serial_of(&server_id).unwrap();
    assert_ne!(first, second);
    results.extend(probe_until(second).await);
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "failed handshakes: {failed:?}");
    drop(guard);
}
