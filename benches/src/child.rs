//! Child processes of a scenario (servers, replicas, Envoys): started, waited for, measured
//! by PID, and killed by PID when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a process does in a scenario; decides how its CPU is summed up in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Role {
    /// The load generator itself: the gRPC/TLS client.
    Client,
    /// An application server (a bookstore replica, the mtls-core handshake server).
    Server,
    /// An Envoy on the client side.
    ClientProxy,
    /// An Envoy in front of a server (or the Envoy handshake listener).
    ServerProxy,
}

impl Role {
    /// Whether the process is on the serving side (servers and their proxies).
    pub fn is_server_side(self) -> bool {
        matches!(self, Role::Server | Role::ServerProxy)
    }
}

/// A process measured in a scenario: a child we started, or the load generator itself.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Name in the report (`client`, `replica-2`, `envoy-server-1`, ...).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// OS process id.
    pub pid: u32,
}

/// A running child process; killed (SIGKILL, by PID) and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    role: Role,
    child: Child,
}

impl ChildProcess {
    /// Starts `command` with stdout piped and waits until it prints a line starting with
    /// `READY` (within `timeout`); returns the process and the rest of that line.
    /// Later stdout lines are drained in the background.
    pub fn spawn_ready(
        name: impl Into<String>,
        role: Role,
        mut command: Command,
        timeout: Duration,
    ) -> Result<(Self, String)> {
        let name = name.into();
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = command.spawn().map_err(|e| Error::Child {
            role: name.clone(),
            reason: format!("cannot start {}: {e}", describe(&command)),
        })?;
        let stdout = child.stdout.take();
        let mut process = Self { name, role, child };
        let Some(stdout) = stdout else {
            return Err(process.fail("no stdout pipe".into()));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("READY")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(rest) => Ok((process, rest)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed without READY: give the exit status a moment to show.
                let mut status = None;
                for _ in 0..50 {
                    status = process.exited();
                    if status.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(process.fail(match status {
                    Some(s) => format!("exited with {s} before it was ready"),
                    None => "closed its stdout before it was ready".to_owned(),
                }))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(process.fail(format!("not ready after {timeout:?}")))
            }
        }
    }

    /// Starts `command` (stdout discarded); readiness is the caller's business.
    pub fn spawn(name: impl Into<String>, role: Role, mut command: Command) -> Result<Self> {
        let name = name.into();
        command.stdin(Stdio::null()).stdout(Stdio::null());
        let child = command.spawn().map_err(|e| Error::Child {
            role: name.clone(),
            reason: format!("cannot start {}: {e}", describe(&command)),
        })?;
        Ok(Self { name, role, child })
    }

    fn fail(&mut self, reason: String) -> Error {
        self.kill();
        Error::Child {
            role: self.name.clone(),
            reason,
        }
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process as a measured member of a scenario.
    pub fn measured(&self) -> Measured {
        Measured {
            name: self.name.clone(),
            role: self.role,
            pid: self.pid(),
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program arg1 arg2`, for messages (not `Command`'s `Debug` quoting).
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn ready_line_is_returned() {
        let (mut p, rest) = ChildProcess::spawn_ready(
            "t",
            Role::Server,
            sh("echo starting; echo 'READY 127.0.0.1:5'; sleep 30"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(rest, "127.0.0.1:5");
        assert!(p.exited().is_none());
        let pid = p.pid();
        drop(p);
        // Killed and reaped: the /proc entry is gone.
        assert!(std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err());
    }

    #[test]
    fn exit_before_ready_is_named() {
        let err = ChildProcess::spawn_ready(
            "replica-1",
            Role::Server,
            sh("echo nope; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("replica-1"), "{err}");
        assert!(err.contains("before it was ready"), "{err}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = ChildProcess::spawn("x", Role::Client, Command::new("/nonexistent/prog"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/prog"), "{err}");
    }
}
