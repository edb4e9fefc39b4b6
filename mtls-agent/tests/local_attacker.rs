//! The `mtls-agent` binary, run as root, against local attackers running as unprivileged
//! uids — no identity needed to attack: the HPACK bomb and frame headers announcing 16 MiB
//! payloads, a ValidateJWTSVID flood with huge and many audiences, fd exhaustion by one uid,
//! and an exe path with a newline trying to forge log lines. Each time: the attacker's
//! connections are closed or refused, the agent's RSS stays within +64 MiB, its log stays
//! small, and other callers are still served.
//!
//! This file has its own `main` (`harness = false`): run with the argument `attack`, the
//! same executable is the attacker, started by the test as an unprivileged uid
//! (`CommandExt::uid`), so the agent sees a real other user in `SO_PEERCRED`. The test needs
//! root for that and says so (and skips) otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Unprivileged uids for the attackers and an unprivileged registered workload.
const ATTACKER: u32 = 61_001;
const VICTIM: u32 = 61_002;
const VICTIM_ID: &str = "spiffe://bookstore.local/victim";
/// The acceptance bound on the agent's memory growth under attack.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("attack") {
        attacker(&args[2..]);
        return;
    }
    let filter: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let tests: [(&str, fn()); 4] = [
        (
            "hpack_bomb_and_oversized_frames_are_closed_with_rss_bounded",
            hpack_bomb_and_oversized_frames_are_closed_with_rss_bounded,
        ),
        (
            "validate_jwtsvid_flood_is_bounded_in_memory_and_log",
            validate_jwtsvid_flood_is_bounded_in_memory_and_log,
        ),
        (
            "fd_exhaustion_by_one_uid_leaves_another_uid_served",
            fd_exhaustion_by_one_uid_leaves_another_uid_served,
        ),
        (
            "an_open_stream_past_the_idle_timeout_costs_no_cpu",
            an_open_stream_past_the_idle_timeout_costs_no_cpu,
        ),
    ];
    if my_uid() != 0 {
        println!("local_attacker: skipped, needs root to run attackers as other uids");
        println!("0 passed, 0 failed, {} skipped", tests.len());
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The agent binary as root in a directory every user can enter, logging to a file.
struct RunningAgent {
    child: ChildGuard,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl RunningAgent {
    fn start(registration: &str) -> Self {
        Self::start_with(registration, &[])
    }

    fn start_with(registration: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("reg.yaml"), registration).unwrap();
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtls-agent"));
        cmd.args(["--trust-domain", TD])
            .arg("--registration")
            .arg(dir.path().join("reg.yaml"))
            .arg("--socket")
            .arg(dir.path().join("workload.sock"))
            .arg("--sds-socket")
            .arg(dir.path().join("sds.sock"))
            .args(extra)
            .env("RUST_LOG", "info");
        let mut child = ChildGuard::spawn_logging("mtls-agent", &mut cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("mtls-agent ready")
        {
            if let Some(status) = child.child.try_wait().unwrap() {
                panic!(
                    "agent exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, log }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("workload.sock")
    }

    fn sds_socket(&self) -> PathBuf {
        self.dir.path().join("sds.sock")
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// A real client (the `spiffe` crate) of uid root fetches its X509-SVID.
    fn served(&self, rt: &tokio::runtime::Runtime) -> String {
        rt.block_on(async {
            let client = tokio::time::timeout(
                Duration::from_secs(10),
                spiffe::WorkloadApiClient::connect_to(self.endpoint()),
            )
            .await
            .expect("connect in time")
            .unwrap();
            let svid = tokio::time::timeout(Duration::from_secs(10), client.fetch_x509_svid())
                .await
                .expect("served in time")
                .unwrap();
            svid.spiffe_id().to_string()
        })
    }
}

/// This executable, reachable by an unprivileged uid (a hard link or copy in a 0755
/// directory: the target directory's parents may not be).
fn attacker_exe(dir: &Path, name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let at = dir.join(name);
    if std::fs::hard_link(&me, &at).is_err() {
        std::fs::copy(&me, &at).unwrap();
    }
    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).unwrap();
    at
}

/// Runs the attacker as `uid` to completion and returns its stdout.
fn attack(exe: &Path, uid: u32, args: &[&str]) -> String {
    let out = Command::new(exe)
        .arg("attack")
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "attacker {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Samples the agent's RSS every 20 ms while `f` runs; returns the peak.
fn peak_rss_during(agent: &RunningAgent, f: impl FnOnce()) -> u64 {
    let pid = agent.child.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak = peak.max(rss);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    f();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap()
}

fn registration() -> String {
    format!(
        "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: 0 }}\n  - spiffe_id: {VICTIM_ID}\n    selectors: {{ uid: {VICTIM} }}\n"
    )
}

fn hpack_bomb_and_oversized_frames_are_closed_with_rss_bounded() {
    let rt = runtime();
    let agent = RunningAgent::start(&registration());
    assert_eq!(agent.served(&rt), WEB);
    let exe = attacker_exe(agent.dir.path(), "attacker");
    let baseline = agent.rss_kib();
    let socket = agent.socket();
    let mut reports = Vec::new();
    let peak = peak_rss_during(&agent, || {
        for kind in ["bomb", "bomb16k", "bigframes"] {
            reports.push(attack(
                &exe,
                ATTACKER,
                &[kind, socket.to_str().unwrap(), "20"],
            ));
        }
    });
    for report in &reports {
        eprintln!("{}", report.trim());
        assert!(report.contains("closed 20/20"), "{report}");
    }
    eprintln!("agent RSS: baseline {baseline} KiB, peak under attack {peak} KiB");
    assert!(
        peak <= baseline + RSS_BOUND_KIB,
        "agent RSS grew from {baseline} KiB to {peak} KiB; expected at most +{RSS_BOUND_KIB} KiB"
    );
    // Other callers are still served: root, and an unprivileged registered workload.
    assert_eq!(agent.served(&rt), WEB);
    let out = attack(&exe, VICTIM, &["fetch", &agent.endpoint()]);
    assert!(out.contains(VICTIM_ID), "{out}");

    // An exe path with a newline cannot forge a log line.
    let forged = "evil\n2026-01-01T00:00:00.000000Z  INFO mtls_agent: forged line";
    let evil = attacker_exe(agent.dir.path(), forged);
    let out = attack(&evil, ATTACKER, &["fetch", &agent.endpoint()]);
    assert!(out.contains("refused"), "{out}");
    let log = agent.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged log line:\n{log}"
    );
    assert!(
        log.contains("evil\\n2026-01-01"),
        "escaped exe path in the log:\n{log}"
    );
    // The refusals are in the log, bounded (no client bytes echoed).
    assert!(log.contains("closing a connection"), "{log}");
    assert!(log.len() < 256 * 1024, "log of {} bytes", log.len());
}

fn validate_jwtsvid_flood_is_bounded_in_memory_and_log() {
    let rt = runtime();
    let agent = RunningAgent::start(&registration());
    assert_eq!(agent.served(&rt), WEB);
    let exe = attacker_exe(agent.dir.path(), "attacker");
    let baseline = agent.rss_kib();
    let log_before = agent.log_len();
    let endpoint = agent.endpoint();
    let mut reports = Vec::new();
    let peak = peak_rss_during(&agent, || {
        // 300 calls with 1 MB audiences, then 2,000 with distinct maximal (512-byte) ones.
        reports.push(attack(
            &exe,
            ATTACKER,
            &["validate", &endpoint, "300", "1048576"],
        ));
        reports.push(attack(
            &exe,
            ATTACKER,
            &["validate", &endpoint, "2000", "512"],
        ));
    });
    for report in &reports {
        eprintln!("{}", report.trim());
    }
    assert!(reports[0].contains("refused 300/300"), "{}", reports[0]);
    assert!(reports[1].contains("refused 2000/2000"), "{}", reports[1]);
    let grown = agent.log_len() - log_before;
    eprintln!("agent RSS: baseline {baseline} KiB, peak {peak} KiB; log grew {grown} bytes");
    assert!(
        peak <= baseline + RSS_BOUND_KIB,
        "agent RSS grew from {baseline} KiB to {peak} KiB; expected at most +{RSS_BOUND_KIB} KiB"
    );
    let log = agent.log_text();
    assert!(
        grown < 64 * 1024,
        "the log grew by {grown} bytes under the flood:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    assert!(
        !log.contains(&"a".repeat(200)),
        "an audience echoed in full"
    );
    assert!(log.contains("ValidateJWTSVID refused a token"), "{log}");
    assert_eq!(agent.served(&rt), WEB);
}

fn fd_exhaustion_by_one_uid_leaves_another_uid_served() {
    let rt = runtime();
    let agent = RunningAgent::start(&registration());
    let exe = attacker_exe(agent.dir.path(), "attacker");
    // The attacker opens 1,500 connections to each socket and holds them.
    let mut holder = Command::new(&exe);
    holder
        .arg("attack")
        .args([
            "hold",
            agent.socket().to_str().unwrap(),
            agent.sds_socket().to_str().unwrap(),
            "1500",
        ])
        .uid(ATTACKER)
        .gid(ATTACKER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut holder = ChildGuard {
        child: holder.spawn().unwrap(),
        name: "attacker".to_owned(),
    };
    let mut line = String::new();
    let mut stdout = holder.child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "attacker output: {line}"
        );
        line.push(byte[0] as char);
    }
    eprintln!("{}", line.trim());
    let open: usize = line
        .trim()
        .strip_prefix("holding ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("attacker said {line:?}"));
    assert!(
        open <= 64,
        "the agent keeps {open} connections of one uid; expected at most 64"
    );
    // While the attacker holds its share, root and another unprivileged uid are served.
    assert_eq!(agent.served(&rt), WEB);
    let out = attack(&exe, VICTIM, &["fetch", &agent.endpoint()]);
    assert!(out.contains(VICTIM_ID), "{out}");
    let log = agent.log_text();
    assert!(
        log.contains("connection refused") && log.contains("max_connections_per_uid"),
        "{log}"
    );
    assert!(log.len() < 256 * 1024, "log of {} bytes", log.len());
    drop(holder.child.stdin.take());
    holder.wait_for(Duration::from_secs(10));
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A stream held open past `--idle-timeout` keeps its connection, and the agent does not
/// spin re-checking it.
fn an_open_stream_past_the_idle_timeout_costs_no_cpu() {
    let rt = runtime();
    let agent = RunningAgent::start_with(&registration(), &["--idle-timeout", "200ms"]);
    let pid = agent.child.pid();
    rt.block_on(async {
        let source = x509_source(&agent.endpoint()).await;
        assert_eq!(source.svid().unwrap().spiffe_id().to_string(), WEB);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cpu_ticks(pid);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_ticks(pid) - before;
        // Clock ticks are 1/100 s on Linux: a task re-checking in a loop used ~50 here.
        let elapsed_ticks = started.elapsed().as_millis() as u64 / 10;
        eprintln!("agent CPU over {elapsed_ticks} ticks with an idle open stream: {used} ticks");
        assert!(
            used * 10 < elapsed_ticks,
            "the agent used {used} of {elapsed_ticks} ticks"
        );
        // The stream is still open and served: SIGHUP rotates and the source follows.
        let mut updates = source.updated();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        next_update(
            &mut updates,
            "a rotation on the stream open past the idle timeout",
        )
        .await;
    });
}

// ----------------------------------------------------------------------------------------
// The attacker (runs as an unprivileged uid).

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn attacker(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "bomb" | "bomb16k" | "bigframes" => {
            let socket = Path::new(arg(1));
            let n: usize = arg(2).parse().unwrap();
            let payload = match arg(0) {
                "bomb" => bomb(1_000_000, true),
                "bomb16k" => bomb(12_000, false),
                _ => Vec::new(),
            };
            let mut conns: Vec<UnixStream> = (0..n)
                .map(|_| {
                    let s = UnixStream::connect(socket).unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s
                })
                .collect();
            for s in &mut conns {
                let _ = s.write_all(PREFACE);
                let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
                if arg(0) == "bigframes" {
                    // DATA on stream 1 announcing 16 MiB - 1.
                    let _ = s.write_all(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]);
                }
            }
            for s in &mut conns {
                if arg(0) == "bigframes" {
                    let chunk = vec![0u8; 64 * 1024];
                    for _ in 0..256 {
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                } else {
                    let _ = s.write_all(&payload);
                }
            }
            let closed = conns.iter().filter(|s| closed_by_peer(s)).count();
            println!("{}: closed {closed}/{n}", arg(0));
        }
        "validate" => {
            let endpoint = arg(1).trim_start_matches("unix://").to_owned();
            let n: usize = arg(2).parse().unwrap();
            let len: usize = arg(3).parse().unwrap();
            let refused = runtime().block_on(validate_flood(endpoint.into(), n, len));
            println!("validate: refused {refused}/{n}");
        }
        "hold" => {
            let n: usize = arg(3).parse().unwrap();
            let mut conns = Vec::new();
            for socket in [arg(1), arg(2)] {
                for _ in 0..n {
                    if let Ok(mut s) = UnixStream::connect(socket) {
                        let _ = s.write_all(PREFACE);
                        let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                        conns.push(s);
                    }
                }
            }
            for s in &conns {
                s.set_nonblocking(true).unwrap();
            }
            // The agent closes what it refuses as it accepts: count until that settles.
            let started = Instant::now();
            let open = loop {
                let open = conns.iter().filter(|s| alive(s)).count();
                if open <= 64 || started.elapsed() > Duration::from_secs(15) {
                    break open;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            println!("holding {open} of {} connections", conns.len());
            std::io::stdout().flush().unwrap();
            // Hold them until the test closes our stdin.
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        }
        "fetch" => {
            let endpoint = arg(1).to_owned();
            let result = runtime().block_on(async {
                let client = spiffe::WorkloadApiClient::connect_to(endpoint).await?;
                client.fetch_x509_svid().await
            });
            match result {
                Ok(svid) => println!("fetched {}", svid.spiffe_id()),
                Err(e) => println!("refused: {e}"),
            }
        }
        other => panic!("unknown attack {other:?}"),
    }
}

/// Whether a non-blocking connection is still open (draining what the server sent).
fn alive(s: &UnixStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match { s }.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the agent closed the connection (EOF or reset) within the read timeout.
fn closed_by_peer(s: &UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match { s }.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // the server's SETTINGS etc.
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// HEADERS (+ CONTINUATIONs) on stream 1: a 4 KB literal added to the dynamic table, then
/// `refs` one-byte references to it.
fn bomb(refs: usize, split: bool) -> Vec<u8> {
    let mut block = vec![0x40, 6];
    block.extend_from_slice(b"x-bomb");
    // String length 4000 (127 + 0x21 + (0x1e << 7)): the entry (6 + 4000 + 32 bytes) fits
    // the 4096-byte dynamic table.
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
    block.extend(std::iter::repeat_n(b'a', 4000));
    block.extend(std::iter::repeat_n(0xbe, refs)); // index 62: the new entry
    let mut out = Vec::new();
    let frame = |kind: u8, flags: u8, payload: &[u8], out: &mut Vec<u8>| {
        let len = payload.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(payload);
    };
    if split {
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { 0x1 } else { 0x9 };
            let flags = if i + 1 == chunks.len() { 0x4 } else { 0 };
            frame(kind, flags, chunk, &mut out);
        }
    } else {
        block.truncate(16_384);
        frame(0x1, 0x4, &block, &mut out);
    }
    out
}

async fn validate_flood(socket: PathBuf, n: usize, len: usize) -> usize {
    use support::pb::workload::ValidateJwtsvidRequest;
    use support::pb::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    let channel = unix_channel(socket).await;
    let mut tasks = Vec::new();
    for batch in 0..10 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = SpiffeWorkloadApiClient::new(channel);
            let mut refused = 0;
            for i in (batch..n).step_by(10) {
                let mut audience = format!("{i:08}");
                audience.push_str(&"a".repeat(len.saturating_sub(audience.len())));
                let mut request = tonic::Request::new(ValidateJwtsvidRequest {
                    audience,
                    svid: "not.a.token".to_owned(),
                });
                request
                    .metadata_mut()
                    .insert("workload.spiffe.io", "true".parse().unwrap());
                refused += usize::from(client.validate_jwtsvid(request).await.is_err());
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    refused
}
