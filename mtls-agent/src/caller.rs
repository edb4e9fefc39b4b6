//! Who is calling: the process behind a connection, tracked from the moment it is accepted.
//!
//! At accept the agent takes the peer credentials (`SO_PEERCRED`: uid, gid, pid), a pidfd
//! of the connecting process (`SO_PEERPIDFD`, which names the process that called
//! `connect`, whatever has the PID since; `pidfd_open` on kernels before 6.5), its start
//! time (`/proc/<pid>/stat`) and the device and inode of its executable. Each attestation
//! then reads the process again and refuses unless it is the same one, still alive, with
//! the same effective uid and gid and the same executable:
//!
//! - **PID reuse** (the caller exits, another process gets its PID): the pidfd reports the
//!   exit, and the start time differs.
//! - **exec after connect** (connect, then exec a registered binary while a child relays
//!   the socket): the executable differs from the one at accept.
//! - **a bind mount over a registered path** in a user + mount namespace: `exe` selectors
//!   compare the file (device + inode), not the path string; `sha256` the contents.
//!
//! What remains (as for SPIRE): a process that execs a registered binary *between*
//! `connect` and the agent's `accept` (microseconds, while the accept loop is busy) is
//! attested as that binary; a registered process that passes its connection to another
//! (`SCM_RIGHTS`, inheritance) lends it its identity; and root, or anyone who can ptrace a
//! registered process, can act as it. `uid` selectors hold against all of these for other
//! users (the kernel records the uid at `connect`), so entries should pin the uid.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::net::unix::UCred;

use crate::registration::{Caller, Registration};

/// What was learned about the peer of one connection when it was accepted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connection {
    cred: Option<UCred>,
    process: Option<Arc<Process>>,
}

/// The process that connected, as it was at accept.
#[derive(Debug)]
struct Process {
    pid: i32,
    pidfd: Option<OwnedFd>,
    start_time: Option<u64>,
    exe_file: Option<(u64, u64)>,
}

impl Connection {
    /// Records the peer of `stream` (call right after `accept`).
    pub(crate) fn accept(stream: &UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let pid = cred.and_then(|c| c.pid()).filter(|&p| p > 0);
        let process = pid.map(|pid| {
            let pidfd =
                match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerPidfd) {
                    Ok(fd) => Some(fd),
                    // Kernel before 6.5: the best we have is the PID now (see the module docs).
                    Err(nix::errno::Errno::ENOPROTOOPT) => rustix::process::Pid::from_raw(pid)
                        .and_then(|p| {
                            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                                .ok()
                        }),
                    // The connecting process is gone already: nothing it could be attested as.
                    Err(_) => None,
                };
            let process = Process {
                pid,
                start_time: start_time(pid),
                exe_file: exe_file(pid),
                pidfd,
            };
            Arc::new(process)
        });
        Self { cred, process }
    }

    /// Waits until the process that connected has exited (forever if there is none known);
    /// checks twice a second (a poll of the pidfd and a read of the start time).
    pub(crate) async fn exited(&self) {
        let Some(process) = self.process.clone() else {
            return std::future::pending().await;
        };
        loop {
            if !process.alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Process {
    /// Still running, and still the process that connected.
    fn alive(&self) -> bool {
        let running = match &self.pidfd {
            Some(fd) => {
                let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(0))
            }
            None => false,
        };
        running && self.start_time.is_some() && start_time(self.pid) == self.start_time
    }
}

/// Attests the caller of `connection` afresh: the same process as at accept, alive, with
/// the same credentials and executable. `Err` says why not (for the log, not for the peer).
pub(crate) fn attest_connection(
    connection: &Connection,
    registration: &Registration,
    sds_node_id: Option<String>,
) -> Result<Caller, String> {
    let mut caller = Caller {
        uid: connection.cred.map(|c| c.uid()),
        gid: connection.cred.map(|c| c.gid()),
        sds_node_id,
        ..Caller::default()
    };
    let Some(process) = &connection.process else {
        return Ok(caller);
    };
    let pid = process.pid;
    caller.pid = Some(pid);
    if process.pidfd.is_none() {
        return Err(format!(
            "pid {pid} exited before its connection was accepted (or cannot be tracked)"
        ));
    }
    let (euid, egid) =
        effective_ids(pid).ok_or_else(|| format!("pid {pid} is gone (no /proc/{pid}/status)"))?;
    caller.exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    caller.exe_file = exe_file(pid);
    if caller.exe_file != process.exe_file {
        return Err(format!(
            "pid {pid} runs another executable than when it connected (exec after connect): now {}",
            caller
                .exe
                .as_ref()
                .map_or_else(|| "?".to_owned(), |p| p.display().to_string())
        ));
    }
    if registration.wants_sha256() {
        caller.exe_sha256 = sha256_of_exe(pid, process.exe_file);
    }
    if Some(euid) != caller.uid || Some(egid) != caller.gid {
        return Err(format!(
            "pid {pid} changed credentials since it connected: now uid={euid} gid={egid}"
        ));
    }
    // Only now: everything above was read from the process that connected if it is still
    // alive (a PID is not reused while its process runs).
    if !process.alive() {
        return Err(format!(
            "pid {pid} is no longer the process that connected (it exited; the PID may be reused)"
        ));
    }
    Ok(caller)
}

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Effective uid and gid of `pid` (`/proc/<pid>/status`).
fn effective_ids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(2)?.parse().ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Device and inode of the executable of `pid`.
fn exe_file(pid: i32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// SHA-256 (hex) of the executable of `pid`, read through `/proc/<pid>/exe` (the file the
/// process runs, in whatever mount namespace), cached per file version.
fn sha256_of_exe(pid: i32, expected: Option<(u64, u64)>) -> Option<String> {
    type Key = (u64, u64, u64, i64, i64, i64, i64);
    static CACHE: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let mut file = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    let meta = file.metadata().ok()?;
    if Some((meta.dev(), meta.ino())) != expected {
        return None;
    }
    let key = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    );
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(hex) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Some(hex.clone());
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let hex: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut map = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(key, hex.clone());
    Some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_of_this_process() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        let (uid, _) = effective_ids(me).unwrap();
        assert_eq!(
            uid,
            std::fs::metadata("/proc/self").unwrap().uid(),
            "effective uid"
        );
        let exe = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(exe_file(me), Some((exe.dev(), exe.ino())));
        let hex = sha256_of_exe(me, exe_file(me)).unwrap();
        assert_eq!(hex.len(), 64);
        assert_eq!(sha256_of_exe(me, Some((0, 0))), None);
    }
}
