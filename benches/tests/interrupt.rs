//! `loadgen run` interrupted with SIGINT in the middle of a run: every process it started
//! (replicas, the client Envoy and the server sidecars) is gone, checked by PID; its
//! temporary directory is removed; the points measured before the signal are written, and
//! it says what it did. Uses the Envoy scenario when Envoy is installed (required with
//! `MTLS_REQUIRE_ENVOY=1`), else proxyless only.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mtls_benches::result::RunFile;

/// (pid, parent pid, command name, start time) of every process, from `/proc`.
fn processes() -> Vec<(u32, u32, String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(p) = parse_stat(pid, &stat) {
            out.push(p);
        }
    }
    out
}

fn parse_stat(pid: u32, stat: &str) -> Option<(u32, u32, String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    // After the name: state (field 3), ppid (4), ... starttime (22).
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((pid, ppid, comm, start))
}

/// Every descendant of `root`: (pid, name, start time).
fn descendants(root: u32) -> Vec<(u32, String, u64)> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, comm, start) in &all {
            if *ppid == parent {
                found.push((*pid, comm.clone(), *start));
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Whether the process `pid` that started at `start` still exists (a reused PID is another
/// process).
fn alive(pid: u32, start: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(pid, &stat))
        .is_some_and(|(_, _, _, s)| s == start)
}

#[test]
fn sigint_mid_run_stops_every_child_removes_the_temp_dir_and_writes_points_so_far() {
    let envoy = mtls_benches::envoy::require_envoy("the interrupt test's envoy scenario");
    let scenarios = match &envoy {
        Ok(_) => "proxyless,envoy",
        Err(e) if std::env::var("MTLS_REQUIRE_ENVOY").as_deref() == Ok("1") => {
            panic!("MTLS_REQUIRE_ENVOY=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTE: proxyless only: {e}");
            "proxyless"
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = scratch.path().join("results.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--scenario",
            scenarios,
            "--concurrency",
            "1,2,4,8",
            "--replicas",
            "2",
            "--warmup",
            "100ms",
            "--duration",
            "2s",
            "--server-threads",
            "1",
            "--out",
        ])
        .arg(&out)
        // The run's temporary directory goes here, where this test can see it.
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for the first measured point (a progress line); generous under load.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(" c=1 r=2:")) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("loadgen exited ({status}) before the first point: {seen:#?}");
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no point measured within 120 s: {seen:#?}");
        }
    }
    let children = descendants(pid);
    let envoys = children
        .iter()
        .filter(|(_, name, _)| name == "envoy")
        .count();
    // 2 replicas (+ with Envoy: 2 server sidecars and the client sidecar).
    let want_envoys = if envoy.is_ok() { 3 } else { 0 };
    assert!(
        children.len() >= 2 && envoys == want_envoys,
        "children of loadgen: {children:?}"
    );
    let run_dirs: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert_eq!(run_dirs.len(), 1, "one temporary directory: {run_dirs:?}");

    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen still running 60 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(130), "{status}: {rest:#?}");

    let left: Vec<_> = children
        .iter()
        .filter(|(pid, _, start)| alive(*pid, *start))
        .collect();
    assert!(left.is_empty(), "still running after SIGINT: {left:?}");
    let left_files: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left_files.is_empty(), "left in TMPDIR: {left_files:?}");

    let said = rest.join("\n");
    assert!(
        said.contains("interrupted by SIGINT: stopped every server and Envoy it started, removed"),
        "{said}"
    );
    assert!(said.contains("measured before SIGINT"), "{said}");
    let file: RunFile = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(file.interrupted.as_deref(), Some("SIGINT"));
    assert!(!file.points.is_empty(), "no points written");
    assert!(
        file.points.len() < 8,
        "the whole run finished ({} points): the signal came too late to test anything",
        file.points.len()
    );
    assert!(file.points.iter().all(|p| p.calls > 0));
}

/// `loadgen --version` answers, and `--envoy PATH` is the binary the Envoy scenario uses: a
/// missing one is named, before anything starts.
#[test]
fn version_and_an_explicit_envoy_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("loadgen {}", env!("CARGO_PKG_VERSION"))
    );
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-envoy");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--envoy")
        .arg(&missing)
        .args(["run", "--scenario", "envoy", "--duration", "100ms"])
        .env("TMPDIR", scratch.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("--envoy PATH"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
