//! Attestation that cannot be forged, against the agent binary (run as root; attackers run
//! as other uids): exec after connect, PID reuse and a bind mount over a registered path get
//! no SVID for an `exe` entry; SDS node-id spoofing gets no secret; an open stream ends when
//! its caller exits and when its entry moves to another uid.
//!
//! The attackers are this test binary re-run in a helper mode (`MTLS_ATTEST_HELPER`), so
//! that no other program is needed: a client, a relay that keeps a connection to the agent
//! open for the test after the connecting process exec'd or exited, and a sleeper.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mtls_agent::SECRET_TYPE_URL;
use support::pb::envoy::config::core::v3::Node;
use support::pb::envoy::service::discovery::v3::DiscoveryRequest;
use support::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use support::pb::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use support::*;

const HELPER: &str = "MTLS_ATTEST_HELPER";

fn helper_cmd(program: &Path, mode: &str) -> Command {
    let mut cmd = Command::new(program);
    helper_args(&mut cmd, mode);
    cmd
}

fn helper_args(cmd: &mut Command, mode: &str) {
    cmd.args([
        "helper",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(HELPER, mode);
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set")))
}

/// Relays one client of `relay` to `upstream` (a connection to the agent), then exits.
fn relay_one(upstream: UnixStream, relay: &Path) {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(0);
    });
    let tmp = relay.with_extension("tmp");
    let listener = UnixListener::bind(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::rename(&tmp, relay).unwrap();
    let (client, _) = listener.accept().unwrap();
    let (mut a, mut b) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut d) = (upstream, client);
    let _ = std::io::copy(&mut c, &mut d);
    let _ = up.join();
}

/// Connects to the agent and hands the connection to a relay child; returns once the relay
/// listens. Prints `RELAY <pid>` for the test to stop it.
fn connect_and_relay() {
    let upstream = UnixStream::connect(env_path("AGENT_SOCKET")).unwrap();
    let relay = env_path("RELAY_SOCKET");
    let me = std::env::current_exe().unwrap();
    // Outlives us on purpose (that is the attack); the test stops it by the PID printed.
    #[allow(clippy::zombie_processes)]
    let child = helper_cmd(&me, "relay")
        .stdin(Stdio::from(OwnedFd::from(upstream)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while !relay.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("RELAY {}", child.id());
}

#[test]
#[ignore = "a helper process of the other tests, run with MTLS_ATTEST_HELPER"]
fn helper() {
    let Ok(mode) = std::env::var(HELPER) else {
        return;
    };
    match mode.as_str() {
        "sleep" => std::thread::sleep(Duration::from_secs(60)),
        "relay" => {
            let upstream = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
            relay_one(upstream, &env_path("RELAY_SOCKET"));
        }
        "connect-exec" => {
            connect_and_relay();
            // Let the agent accept (and record) us first, then become the registered binary.
            std::thread::sleep(Duration::from_millis(300));
            let mut exec = Command::new(env_path("EXEC"));
            helper_args(&mut exec, "sleep");
            panic!("exec: {}", exec.exec());
        }
        "connect-exit" => {
            connect_and_relay();
            if let Some(go) = std::env::var_os("EXIT_WHEN") {
                while !Path::new(&go).exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        "fetch" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let result = rt.block_on(fetch_x509(env_path("AGENT_SOCKET")));
            match result {
                Ok(r) => println!(
                    "RESULT OK {}",
                    r.svids
                        .iter()
                        .map(|s| s.spiffe_id.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Err(code) => println!("RESULT ERR {code:?}"),
            }
        }
        "sds" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let result = rt.block_on(async {
                let mut client =
                    SecretDiscoveryServiceClient::new(unix_channel(env_path("AGENT_SOCKET")).await);
                client
                    .fetch_secrets(DiscoveryRequest {
                        node: Some(Node {
                            id: std::env::var("NODE").unwrap(),
                            cluster: "c".into(),
                        }),
                        resource_names: vec![std::env::var("NAME").unwrap()],
                        type_url: SECRET_TYPE_URL.to_owned(),
                        ..Default::default()
                    })
                    .await
            });
            match result {
                Ok(r) => println!("RESULT OK {} resources", r.into_inner().resources.len()),
                Err(status) => println!("RESULT ERR {:?}", status.code()),
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// The first FetchX509SVID message over `socket`, or the status code that refused it.
async fn fetch_x509(socket: PathBuf) -> Result<X509svidResponse, tonic::Code> {
    let mut client = SpiffeWorkloadApiClient::new(unix_channel(socket).await);
    let request = workload_request(X509svidRequest {});
    let call = async {
        let mut stream = client.fetch_x509svid(request).await?.into_inner();
        stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("stream ended"))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("FetchX509SVID answered within 10 s")
        .map_err(|s| s.code())
}

/// A process started by a helper (the relay), killed by PID when dropped.
struct Pid(u32);
impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

fn relay_pid(out: &mut impl BufRead) -> Pid {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "helper ended without a relay"
        );
        if let Some(pid) = line.strip_prefix("RELAY ") {
            return Pid(pid.trim().parse().unwrap());
        }
    }
}

/// The agent binary in a README-like layout: `dir` 0755 (every user reaches `run/`), the
/// agent makes `run/` 0755 and `state/` 0700. `bin/registered` is a copy of this test
/// binary (one byte longer, so its SHA-256 differs) with `mode`.
struct Lab {
    dir: tempfile::TempDir,
    agent: ChildGuard,
    log: PathBuf,
    socket: PathBuf,
    sds: PathBuf,
    registered: PathBuf,
    /// A directory the attacker can write (their relay sockets).
    attacker: PathBuf,
}

impl Lab {
    async fn start(mode: u32, registration: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let registered = bin.join("registered");
        let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        bytes.push(0);
        std::fs::write(&registered, bytes).unwrap();
        std::fs::set_permissions(&registered, std::fs::Permissions::from_mode(mode)).unwrap();
        let attacker = dir.path().join("attacker");
        std::fs::create_dir(&attacker).unwrap();
        std::fs::set_permissions(&attacker, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(dir.path().join("reg.yaml"), registration(&registered)).unwrap();
        let socket = dir.path().join("run/workload.sock");
        let sds = dir.path().join("run/sds.sock");
        let log = dir.path().join("agent.log");
        let mut agent = ChildGuard::spawn_logging(
            "mtls-agent",
            &mut agent_binary(dir.path(), &socket, Some(&sds), &dir.path().join("state")),
            &log,
        );
        wait_until_serving(&sds, &mut agent, &log).await;
        Self {
            dir,
            agent,
            log,
            socket,
            sds,
            registered,
            attacker,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn exe_only(registered: &Path) -> String {
    format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ exe: {} }}\n",
        registered.display()
    )
}

fn output_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_after_connect_gets_no_svid() {
    if !root_or_skip("exec after connect") {
        return;
    }
    let lab = Lab::start(0o755, exe_only).await;
    // The registered binary itself, run by the attacker's uid, is entitled (exe-only entry).
    let out = output_of(helper_cmd(&lab.registered, "fetch").env("AGENT_SOCKET", &lab.socket));
    assert!(
        out.contains(&format!("RESULT OK {WEB}")),
        "{out}\n{}",
        lab.log()
    );

    // Connect as something else, then exec the registered binary while a relay keeps the
    // connection for us.
    let relay = lab.attacker.join("exec.sock");
    let mut cmd = as_uid(ATTACKER_UID, std::env::current_exe().unwrap());
    helper_args(&mut cmd, "connect-exec");
    cmd.env("AGENT_SOCKET", &lab.socket)
        .env("RELAY_SOCKET", &relay)
        .env("EXEC", &lab.registered)
        .stdout(Stdio::piped());
    let mut attacker = ChildGuard::spawn("connect-exec", &mut cmd);
    // Kept open: a helper that writes to a closed pipe dies of SIGPIPE.
    let mut out = BufReader::new(attacker.child.stdout.take().unwrap());
    let _relay = relay_pid(&mut out);
    let exe = format!("/proc/{}/exe", attacker.pid());
    eventually(Duration::from_secs(10), "the exec", || {
        (std::fs::read_link(&exe).ok()? == lab.registered).then_some(())
    })
    .await;
    let code = fetch_x509(relay).await.unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied, "{}", lab.log());
    assert!(lab.log().contains("exec after connect"), "{}", lab.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pid_gets_no_svid() {
    if !root_or_skip("PID reuse") {
        return;
    }
    let lab = Lab::start(0o755, exe_only).await;
    let relay = lab.attacker.join("reuse.sock");
    let mut cmd = as_uid(ATTACKER_UID, std::env::current_exe().unwrap());
    helper_args(&mut cmd, "connect-exit");
    cmd.env("AGENT_SOCKET", &lab.socket)
        .env("RELAY_SOCKET", &relay)
        .stdout(Stdio::piped());
    let mut attacker = ChildGuard::spawn("connect-exit", &mut cmd);
    // Kept open: a helper that writes to a closed pipe dies of SIGPIPE.
    let mut out = BufReader::new(attacker.child.stdout.take().unwrap());
    let _relay = relay_pid(&mut out);
    // setpriv execs the helper: the PID that connected is the child's.
    let pid = attacker.pid();
    assert!(attacker.wait_for(Duration::from_secs(10)).is_some());
    // A victim running the registered binary gets that PID (ns_last_pid; other processes
    // on the machine may take it first, so try a few times).
    let mut victim = None;
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let v = ChildGuard::spawn("victim", &mut helper_cmd(&lab.registered, "sleep"));
        if v.pid() == pid {
            victim = Some(v);
            break;
        }
    }
    let _victim = victim.expect("could not get the kernel to reuse the PID");
    let exe = format!("/proc/{pid}/exe");
    eventually(Duration::from_secs(10), "the victim's exec", || {
        (std::fs::read_link(&exe).ok()? == lab.registered).then_some(())
    })
    .await;
    let code = fetch_x509(relay).await.unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied, "{}", lab.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_mount_over_the_registered_path_gets_no_svid() {
    if !root_or_skip("bind-mount spoof") {
        return;
    }
    // Can the attacker make a user + mount namespace here at all?
    let probe = as_uid(ATTACKER_UID, "unshare")
        .args(["-Urm", "true"])
        .output()
        .unwrap();
    if !probe.status.success() {
        eprintln!(
            "bind-mount spoof: skipped, this kernel does not let an unprivileged user create a \
             user + mount namespace (`unshare -Urm`: {}), so the attack itself is impossible here",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    // A registered binary the attacker cannot even execute (0700 root).
    let lab = Lab::start(0o700, |registered| {
        let hash = sha256_hex(registered);
        format!(
            "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ exe: {} }}\n  - spiffe_id: {ENVOY}\n    selectors: {{ sha256: {hash} }}\n",
            registered.display()
        )
    })
    .await;
    let out = output_of(helper_cmd(&lab.registered, "fetch").env("AGENT_SOCKET", &lab.socket));
    assert!(
        out.contains(&format!("RESULT OK {WEB},{ENVOY}")),
        "{out}\n{}",
        lab.log()
    );

    // The attacker's own binary (this test binary) mounted over the registered path.
    let script = r#"mount --bind "$SELF" "$REG" && exec "$REG" helper --exact --ignored --nocapture --test-threads=1 -q"#;
    let out = output_of(
        as_uid(ATTACKER_UID, "unshare")
            .args(["-Urm", "sh", "-c", script])
            .env("SELF", std::env::current_exe().unwrap())
            .env("REG", &lab.registered)
            .env(HELPER, "fetch")
            .env("AGENT_SOCKET", &lab.socket),
    );
    assert!(
        out.contains("RESULT ERR PermissionDenied"),
        "{out}\n{}",
        lab.log()
    );
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_node_id_spoofing_gets_no_secret() {
    if !root_or_skip("SDS node-id spoofing") {
        return;
    }
    let lab = Lab::start(0o755, |_| {
        format!(
            "entries:\n  - spiffe_id: {ENVOY}\n    selectors: {{ uid: {OTHER_UID}, sds_node_id: web-sidecar }}\n"
        )
    })
    .await;
    let me = std::env::current_exe().unwrap();
    let ask = |uid: u32| {
        let mut cmd = as_uid(uid, &me);
        helper_args(&mut cmd, "sds");
        cmd.env("AGENT_SOCKET", &lab.sds)
            .env("NODE", "web-sidecar")
            .env("NAME", ENVOY);
        output_of(&mut cmd)
    };
    let out = ask(ATTACKER_UID);
    assert!(
        out.contains("RESULT ERR PermissionDenied"),
        "{out}\n{}",
        lab.log()
    );
    let out = ask(OTHER_UID);
    assert!(
        out.contains("RESULT OK 1 resources"),
        "{out}\n{}",
        lab.log()
    );
    // A node-id-only entry does not even load.
    std::fs::write(
        lab.dir.path().join("bad.yaml"),
        format!(
            "entries:\n  - spiffe_id: {ENVOY}\n    selectors: {{ sds_node_id: web-sidecar }}\n"
        ),
    )
    .unwrap();
    let err = output_of(
        Command::new(env!("CARGO_BIN_EXE_mtls-agent"))
            .args(["--trust-domain", TD, "--socket"])
            .arg(lab.dir.path().join("run2/w.sock"))
            .arg("--registration")
            .arg(lab.dir.path().join("bad.yaml")),
    );
    assert!(err.contains("any local process can claim"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_caller_exits() {
    if !root_or_skip("stream of an exited caller") {
        return;
    }
    let lab = Lab::start(0o755, |_| {
        format!("entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {OTHER_UID} }}\n")
    })
    .await;
    let relay = lab.attacker.join("exit.sock");
    let go = lab.attacker.join("go");
    let mut cmd = as_uid(OTHER_UID, std::env::current_exe().unwrap());
    helper_args(&mut cmd, "connect-exit");
    cmd.env("AGENT_SOCKET", &lab.socket)
        .env("RELAY_SOCKET", &relay)
        .env("EXIT_WHEN", &go)
        .stdout(Stdio::piped());
    let mut caller = ChildGuard::spawn("connect-exit", &mut cmd);
    // Kept open: a helper that writes to a closed pipe dies of SIGPIPE.
    let mut out = BufReader::new(caller.child.stdout.take().unwrap());
    let _relay = relay_pid(&mut out);
    let mut client = SpiffeWorkloadApiClient::new(unix_channel(relay).await);
    let request = workload_request(X509svidRequest {});
    let mut stream = client.fetch_x509svid(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, WEB);
    std::fs::write(&go, "").unwrap();
    assert!(caller.wait_for(Duration::from_secs(10)).is_some());
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends within 5 s of its caller's exit");
    let status = next.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no identity issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_its_entry_and_ends_when_the_entry_moves_to_another_uid() {
    let me = my_uid();
    let lab = Lab::start(0o755, |_| {
        format!("entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {me} }}\n")
    })
    .await;
    let mut client = SpiffeWorkloadApiClient::new(unix_channel(lab.socket.clone()).await);
    let request = workload_request(X509svidRequest {});
    let mut stream = client.fetch_x509svid(request).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().svids.len(), 1);
    let reload = |yaml: String| {
        std::fs::write(lab.dir.path().join("reg.yaml"), yaml).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &lab.agent.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // A second identity for us: the stream is updated with both.
    reload(format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {me} }}\n  - spiffe_id: {ENVOY}\n    selectors: {{ uid: {me} }}\n"
    ));
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ids: Vec<_> = next.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WEB, ENVOY]);
    // Both move to another uid: the stream ends, with no SVID of the new generation.
    reload(format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {OTHER_UID} }}\n"
    ));
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap();
    let status = next.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}
