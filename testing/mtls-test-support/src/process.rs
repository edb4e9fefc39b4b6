//! Child processes a test starts: each is stopped by that test, by its PID.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`ChildGuard::wait_for_line`] and [`wait_on`] wait for a line.
const LINE_BOUND: Duration = Duration::from_secs(20);

/// A child process killed (by PID) and reaped when dropped.
///
/// ```
/// use std::process::Command;
/// use std::time::Duration;
/// use mtls_test_support::ChildGuard;
///
/// let mut sleeper = ChildGuard::spawn("sleep", Command::new("sleep").arg("60"));
/// assert!(sleeper.pid() > 0);
/// drop(sleeper); // killed and reaped here
///
/// let mut echo = ChildGuard::spawn("echo", Command::new("echo").arg("ready on 8080"));
/// assert_eq!(echo.wait_for_line("ready"), "ready on 8080");
/// assert!(echo.wait_for(Duration::from_secs(10)).unwrap().success());
/// ```
#[derive(Debug)]
pub struct ChildGuard {
    /// The process.
    pub child: Child,
    /// What the test calls it, in panic messages.
    pub name: String,
}

impl ChildGuard {
    /// Starts `cmd` with stdin closed and stdout and stderr piped; panics naming `name`
    /// if it cannot start.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        Self::start(
            name,
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// Like [`spawn`](Self::spawn) with stdin piped too (held open: `openssl s_client`
    /// quits at end of input).
    ///
    /// ```
    /// use std::io::Write;
    /// let mut cat = mtls_test_support::ChildGuard::spawn_with_stdin("cat", &mut std::process::Command::new("cat"));
    /// cat.child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    /// assert_eq!(cat.wait_for_line("hello"), "hello");
    /// ```
    pub fn spawn_with_stdin(name: &str, cmd: &mut Command) -> Self {
        Self::start(
            name,
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// Like [`spawn`](Self::spawn), with stdout and stderr going to `log` (unbuffered, so a
    /// test can read it while the child runs).
    ///
    /// ```
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = dir.path().join("echo.log");
    /// let mut echo = mtls_test_support::ChildGuard::spawn_logging(
    ///     "echo",
    ///     std::process::Command::new("echo").arg("logged"),
    ///     &log,
    /// );
    /// echo.wait_for(Duration::from_secs(10)).unwrap();
    /// assert_eq!(std::fs::read_to_string(&log).unwrap(), "logged\n");
    /// ```
    pub fn spawn_logging(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        Self::start(
            name,
            cmd.stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file),
        )
    }

    fn start(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit, at most `limit`; kills (by PID) and returns `None` on timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut sleeper = mtls_test_support::ChildGuard::spawn("sleep", std::process::Command::new("sleep").arg("60"));
    /// assert!(sleeper.wait_for(Duration::from_millis(100)).is_none());
    /// ```
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child and returns everything it wrote to stdout and stderr (when piped).
    ///
    /// ```
    /// let mut echo = mtls_test_support::ChildGuard::spawn("echo", std::process::Command::new("echo").arg("bye"));
    /// echo.wait_for(std::time::Duration::from_secs(10)).unwrap();
    /// assert_eq!(echo.kill_and_output(), ("bye\n".to_owned(), String::new()));
    /// ```
    pub fn kill_and_output(&mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (out, err)
    }

    /// Waits (up to 20 s) for a stdout line containing `needle`; panics with stderr if the
    /// process exits first.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_keep(needle).0
    }

    /// [`wait_for_line`](Self::wait_for_line), also returning the rest of stdout, line by
    /// line.
    ///
    /// ```
    /// let mut sh = mtls_test_support::ChildGuard::spawn(
    ///     "sh",
    ///     std::process::Command::new("sh").args(["-c", "echo one; echo two"]),
    /// );
    /// let (first, rest) = sh.wait_for_line_keep("one");
    /// assert_eq!(first, "one");
    /// assert_eq!(rest.recv().unwrap(), "two");
    /// ```
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

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits (up to 20 s) for a line containing `needle` from `rx` (the stdout of `child`, as
/// [`ChildGuard::wait_for_line_keep`] returns it); panics with the child's stderr if it
/// exits first.
///
/// ```
/// let mut sh = mtls_test_support::ChildGuard::spawn(
///     "sh",
///     std::process::Command::new("sh").args(["-c", "echo a; echo b; echo c"]),
/// );
/// let (_, rest) = sh.wait_for_line_keep("a");
/// assert_eq!(mtls_test_support::wait_on(&rest, "c", &mut sh), "c");
/// ```
pub fn wait_on(rx: &mpsc::Receiver<String>, needle: &str, child: &mut ChildGuard) -> String {
    let deadline = Instant::now() + LINE_BOUND;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.child.wait().unwrap();
                let mut err = String::new();
                if let Some(mut e) = child.child.stderr.take() {
                    e.read_to_string(&mut err).unwrap();
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?}: {err}",
                    child.name
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not print {needle:?} within {LINE_BOUND:?}",
            child.name
        );
    }
}

/// Runs `command` to completion, at most `bound` (then panics; the guard kills it), and
/// returns its output.
///
/// ```
/// let out = mtls_test_support::run_within(
///     "echo",
///     std::process::Command::new("echo").arg("done"),
///     std::time::Duration::from_secs(10),
/// );
/// assert!(out.status.success());
/// assert_eq!(out.stdout, b"done\n");
/// ```
pub fn run_within(name: &str, command: &mut Command, bound: Duration) -> Output {
    run_bounded(name, command, bound, false)
}

/// [`run_within`] for a command that starts processes of its own (a shell script): it runs
/// in its own process group, which is killed (by its PGID, the leader's PID) when the
/// leader exits, before its output is collected.
///
/// ```
/// let out = mtls_test_support::run_group_within(
///     "sh",
///     std::process::Command::new("sh").args(["-c", "sleep 60 & echo started"]),
///     std::time::Duration::from_secs(10),
/// );
/// assert_eq!(out.stdout, b"started\n"); // and the sleep is gone with the group
/// ```
pub fn run_group_within(name: &str, command: &mut Command, bound: Duration) -> Output {
    std::os::unix::process::CommandExt::process_group(command, 0);
    run_bounded(name, command, bound, true)
}

fn run_bounded(name: &str, command: &mut Command, bound: Duration, group: bool) -> Output {
    let mut guard = ChildGuard::spawn(name, command);
    let pgid = guard.child.id();
    // Also on a panic (the time bound): the group goes with the guard.
    let group = group.then(|| KillGroup(pgid));
    let mut stdout = guard.child.stdout.take().unwrap();
    let mut stderr = guard.child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not finish within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(group);
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
