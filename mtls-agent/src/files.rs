//! Directories, sockets and state files that another local user cannot hijack.
//!
//! - A state or socket directory must be owned by the agent's effective uid and not
//!   writable by group or others, and so must every ancestor be unless it is root's or
//!   sticky (`/tmp`): otherwise another user could plant a CA, swap a socket for a symlink,
//!   or rename the directory away. A missing directory is created with an exact mode
//!   (0700 for state, 0755 for sockets), whatever the umask.
//! - A socket path that another process is serving is never unlinked or taken over; a stale
//!   one (nobody accepting) is replaced.
//! - The socket's mode is set through an `O_PATH | O_NOFOLLOW` descriptor of the file just
//!   bound (`/proc/self/fd/N`), never by following the path.
//! - On drop, a socket is removed only if the path still names the file this process bound.
//! - State files are read with `O_NOFOLLOW`.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use tokio::net::UnixListener;

use crate::error::{Error, Result};

/// Mode of a directory the agent creates for its state (CA key, JWT key).
pub(crate) const STATE_DIR_MODE: u32 = 0o700;
/// Mode of a directory the agent creates for its sockets: every local user must reach them
/// (callers are told apart by their credentials), nobody but the agent may change them.
pub(crate) const SOCKET_DIR_MODE: u32 = 0o755;

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn insecure(what: &'static str, path: &Path, reason: String) -> Error {
    Error::InsecurePath {
        what,
        path: path.to_owned(),
        reason,
    }
}

/// Makes sure `dir` is a directory only the agent's uid can change, creating it with
/// exactly `mode` if it is missing.
pub(crate) fn secure_dir(dir: &Path, mode: u32, what: &'static str) -> Result<()> {
    let io = |source| Error::Io {
        what,
        path: dir.to_owned(),
        source,
    };
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Check what exists of the chain before creating anything in it.
            if let Some(existing) = dir.ancestors().skip(1).find(|a| a.exists()) {
                let real = fs::canonicalize(existing).map_err(io)?;
                check_ancestors(&real, dir, what)?;
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(io)?;
            // Exactly `mode`, whatever the umask took away or (0000) let through.
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io)?;
            tracing::info!(path = %dir.display(), mode = format!("{mode:04o}"), "created {what}");
        }
        Err(e) => return Err(io(e)),
    }
    let real = fs::canonicalize(dir).map_err(io)?;
    let meta = fs::metadata(&real).map_err(io)?;
    if !meta.is_dir() {
        return Err(insecure(
            what,
            dir,
            "is not a directory; expected a directory (or a free path the agent creates)".into(),
        ));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(insecure(
            what,
            dir,
            format!(
                "is owned by uid {}, not by the agent's uid {me}, so that user controls what is in it; \
                 expected a directory of the agent's own: remove it (the agent creates it) or `chown {me} {}`",
                meta.uid(),
                dir.display()
            ),
        ));
    }
    let mode_now = meta.permissions().mode() & 0o7777;
    if mode_now & 0o022 != 0 {
        return Err(insecure(
            what,
            dir,
            format!(
                "has mode {mode_now:04o}: writable by group or others, who could replace what is in it; \
                 expected no group/other write: `chmod go-w {}`",
                dir.display()
            ),
        ));
    }
    match real.parent() {
        Some(parent) => check_ancestors(parent, dir, what),
        None => Ok(()),
    }
}

/// `start` and every directory above it must be owned by root or the agent and not writable
/// by group or others unless sticky, or another user could rename `shown` away and put their
/// own in its place.
fn check_ancestors(start: &Path, shown: &Path, what: &'static str) -> Result<()> {
    let me = euid();
    for ancestor in start.ancestors() {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        let owner_ok = meta.uid() == 0 || meta.uid() == me;
        if !owner_ok || (mode & 0o022 != 0 && !sticky) {
            return Err(insecure(
                what,
                shown,
                format!(
                    "lies under {} (owner uid {}, mode {:04o}), which another user can change, so they \
                     could move the directory away and put their own in its place; expected every \
                     parent to be root's or the agent's and not group/other-writable (or sticky, like /tmp): \
                     choose a path under a root-owned directory such as /run or /var/lib",
                    ancestor.display(),
                    meta.uid(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// A socket file this process bound; dropping it removes the file only if the path still
/// names that same file (never a socket another process bound there since).
#[derive(Debug)]
pub(crate) struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove our socket");
                }
            }
            Ok(_) => tracing::warn!(path = %self.path.display(),
                "socket path now names another file; leaving it alone"),
            Err(_) => {}
        }
    }
}

/// Binds a Unix socket at `path` in a directory only the agent can change, refusing a path
/// another process serves, and opens it to every local user (callers are told apart by
/// their credentials, as SPIRE does).
pub(crate) fn bind(path: &Path, what: &'static str) -> Result<(UnixListener, BoundSocket)> {
    let io = |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    secure_dir(dir, SOCKET_DIR_MODE, "socket directory")?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(insecure(
                        what,
                        path,
                        "is served by another process (another agent?); refusing to take it over: \
                         stop that process, or choose another socket path"
                            .into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale socket (nobody accepts on it)");
                    fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; expected a free path or a stale socket",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    // The file just bound, without following a symlink should one have been swapped in.
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket || st.st_uid != euid() {
        return Err(insecure(
            what,
            path,
            "was replaced while the agent bound it; expected the agent's own socket".into(),
        ));
    }
    let bound = BoundSocket {
        path: path.to_owned(),
        dev: st.st_dev,
        ino: st.st_ino,
    };
    // chmod through the descriptor: the magic link names the inode, not a path to follow.
    rustix::fs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        Mode::from_raw_mode(0o777),
    )
    .map_err(|e| io(e.into()))?;
    Ok((listener, bound))
}

/// Whether `path` exists, without following a final symlink.
pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Reads a state file, refusing a symlink (`O_NOFOLLOW`).
pub(crate) fn read_nofollow(path: &Path, what: &'static str) -> Result<String> {
    let io = |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let mut text = String::new();
    fs::File::from(fd).read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_directories_have_the_exact_mode_whatever_the_umask() {
        let base = tempfile::tempdir().unwrap();
        let state = base.path().join("a/state");
        secure_dir(&state, STATE_DIR_MODE, "state directory").unwrap();
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn group_writable_directories_are_refused_naming_the_path_and_the_fix() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("run");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = secure_dir(&dir, SOCKET_DIR_MODE, "socket directory")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("chmod go-w"), "{err}");
        // And nothing under it is trusted either.
        let err = secure_dir(&dir.join("state"), STATE_DIR_MODE, "state directory")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lies under"), "{err}");
        assert!(!dir.join("state").exists());
    }

    /// The chmod that follows `bind` is done through an `O_PATH | O_NOFOLLOW` descriptor:
    /// racing a symlink swap on the socket path never changes the symlink's target.
    #[test]
    fn the_socket_chmod_never_follows_a_swapped_in_symlink() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        fs::write(&target, "root only").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let run = base.path().join("run");
        let socket = run.join("s.sock");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let swapper = {
            let (socket, target, stop) = (socket.clone(), target.clone(), stop.clone());
            std::thread::spawn(move || {
                let tmp = socket.with_extension("swap");
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Leave the path free for a moment (so bind can win), then swap the
                    // socket for a symlink to the target.
                    let _ = fs::remove_file(&socket);
                    n += 1;
                    std::thread::sleep(std::time::Duration::from_micros(n % 300));
                    let _ = std::os::unix::fs::symlink(&target, &tmp);
                    let _ = fs::rename(&tmp, &socket);
                }
            })
        };
        let mut bound = 0;
        for _ in 0..300 {
            let _guard = runtime.enter();
            if let Ok((_listener, _socket)) = bind(&socket, "binding the test socket") {
                bound += 1;
            }
            let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the target's mode changed");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        eprintln!("bound {bound} of 300 times while the path was being swapped");
    }
}
