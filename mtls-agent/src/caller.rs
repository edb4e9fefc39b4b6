//! Who is calling: Unix peer credentials (SO_PEERCRED) of the connection.

use std::path::PathBuf;

use tonic::Request;

use crate::conn::ConnInfo;
use crate::registration::Caller;

/// The caller of `request` (uid, gid, pid and `/proc/<pid>/exe`), plus an SDS node id.
pub(crate) fn caller_of<T>(request: &Request<T>, sds_node_id: Option<String>) -> Caller {
    let cred = request
        .extensions()
        .get::<ConnInfo>()
        .and_then(|info| info.uds.peer_cred);
    let pid = cred.and_then(|c| c.pid());
    Caller {
        uid: cred.map(|c| c.uid()),
        gid: cred.map(|c| c.gid()),
        pid,
        exe: pid.and_then(exe_of),
        exe_file: pid.and_then(exe_file_of),
        exe_sha256: None,
        sds_node_id,
    }
}

/// The executable of `pid` (Linux `/proc`; `None` elsewhere or when unreadable).
fn exe_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Device and inode of the executable of `pid`.
fn exe_file_of(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
