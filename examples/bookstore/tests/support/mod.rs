//! Shared helpers: child processes killed on drop, free ports, the PKI.

#![allow(dead_code, unreachable_pub)] // each test file uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A child process killed (by PID) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// Waits (up to 20 s) for a stdout line containing `needle`; panics with stderr if the
    /// process exits first.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_keep(needle).0
    }

    /// [`ChildGuard::wait_for_line`], also returning the rest of stdout, line by line.
    pub fn wait_for_line_keep(&mut self, needle: &str) -> (String, mpsc::Receiver<String>) {
        let stdout = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = wait_on(&rx, needle, self);
        (line, rx)
    }
}

/// Waits (up to 20 s) for a line containing `needle` from `rx` (the stdout of `child`).
pub fn wait_on(rx: &mpsc::Receiver<String>, needle: &str, child: &mut ChildGuard) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.child.wait().unwrap();
                let mut err = String::new();
                if let Some(mut e) = child.child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}: {err}",
                    child.name
                );
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not print {needle:?} within 20 s",
            child.name
        );
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "bookstore-server" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-server")),
        "bookstore-client" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-client")),
        "bookstore-mesh" => PathBuf::from(env!("CARGO_BIN_EXE_bookstore-mesh")),
        other => panic!("unknown binary {other}"),
    }
}

/// Runs a binary to completion (20 s bound) and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    let mut command = Command::new(bin(name));
    command.args(args);
    run_command(name, &mut command)
}

pub fn run_command(name: &str, command: &mut Command) -> Output {
    run_command_within(name, command, Duration::from_secs(60))
}

/// [`run_command`] with its own time bound.
pub fn run_command_within(name: &str, command: &mut Command, bound: Duration) -> Output {
    run_bounded(name, command, bound, false)
}

/// [`run_command_within`] for a command that starts processes of its own (a shell script):
/// it runs in its own process group, which is killed (by its PGID, the leader's PID) when
/// the leader exits, before its output is collected.
pub fn run_group_within(name: &str, command: &mut Command, bound: Duration) -> Output {
    std::os::unix::process::CommandExt::process_group(command, 0);
    run_bounded(name, command, bound, true)
}

fn run_bounded(name: &str, command: &mut Command, bound: Duration, group: bool) -> Output {
    let mut guard = ChildGuard::spawn(name, command);
    let pgid = guard.child.id();
    // Also on a panic (the time bound): the group goes with the guard.
    let _group = group.then(|| KillGroup(pgid));
    let mut stdout = guard.child.stdout.take().unwrap();
    let mut stderr = guard.child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).map(|_| buf)
    });
    let deadline = std::time::Instant::now() + bound;
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not finish within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(_group);
    Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

/// Kills a process group when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null()) // the group is usually gone already
            .status();
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The Python interpreter with grpcio: `MTLS_PYTHON`, else the project-local venv.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MTLS_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// PIDs whose command line mentions `dir`.
pub fn envoy_pids_using(dir: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        // A zombie has an empty command line: it is dead, only not reaped yet.
        if cmdline.contains(dir) && cmdline.contains("envoy") {
            pids.push(pid);
        }
    }
    pids
}

/// A path as a command-line argument (the PKI's paths are UTF-8).
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `bookstore-server`'s arguments for an mTLS replica on `listen` with `pki`'s server SVID
/// and trust bundle, allowing the mesh's client; with `jwt`, also requiring its tokens.
pub fn server_args<'a>(pki: &'a bookstore::MeshPki, listen: &'a str, jwt: bool) -> Vec<&'a str> {
    let mut args = vec![
        "--listen",
        listen,
        "--ca",
        s(pki.bundle_path()),
        "--cert",
        s(&pki.server().cert),
        "--key",
        s(&pki.server().key),
        "--allow-spiffe-id",
        bookstore::CLIENT_ID,
    ];
    if jwt {
        args.extend([
            "--jwks",
            s(pki.jwks_path()),
            "--issuer",
            bookstore::ISSUER,
            "--audience",
            bookstore::AUDIENCE,
        ]);
    }
    args
}
