//! Identity and trust read from PEM files, polled and reloaded atomically.
//!
//! Why polling rather than inotify (`notify`): certificate writers replace files in many
//! ways (rename over, Kubernetes' `..data` symlink swap, in-place truncate+write, NFS), and
//! a comparison of the file **contents** every interval sees all of them, needs no extra
//! dependency or OS facility, and costs reading a few KB per second. A new content that
//! fails to load (half-written file, key not yet matching the new certificate) is logged
//! once at `warn` and the last good value stays in place; the next consistent content is
//! picked up on a later tick.

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::identity::{Identity, read};
use crate::source::{Cell, IdentitySource, TrustSource};
use crate::trust::TrustBundle;

type Loader<T> = fn(&[Vec<u8>]) -> Result<T>;

/// Reads a set of files, builds a `T` from their contents, and swaps it into a cell when
/// the contents change and load cleanly.
struct Reloader<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    cell: Cell<T>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    good: Vec<Vec<u8>>,
    bad: Option<Vec<Vec<u8>>>,
}

impl<T> Reloader<T> {
    fn open(what: &'static str, paths: Vec<PathBuf>, load: Loader<T>) -> Result<Self> {
        let contents = paths.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
        let value = load(&contents)?;
        Ok(Self {
            what,
            paths,
            load,
            cell: Cell::new(value),
            seen: Mutex::new(Seen {
                good: contents,
                bad: None,
            }),
        })
    }

    /// `Ok(true)` if a new value was installed, `Ok(false)` if nothing changed, `Err` if the
    /// files changed but do not load (the previous value stays).
    fn reload(&self) -> Result<bool> {
        let contents = self
            .paths
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>>>();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let contents = match contents {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(what = self.what, error = %e, "cannot read files; keeping the last good value");
                return Err(e);
            }
        };
        if contents == seen.good {
            return Ok(false);
        }
        match (self.load)(&contents) {
            Ok(value) => {
                self.cell.store(value);
                seen.good = contents;
                seen.bad = None;
                tracing::info!(what = self.what, paths = ?self.paths, "reloaded");
                Ok(true)
            }
            Err(e) => {
                if seen.bad.as_ref() != Some(&contents) {
                    tracing::warn!(what = self.what, paths = ?self.paths, error = %e,
                        "new files do not load; keeping the last good value");
                    seen.bad = Some(contents);
                }
                Err(e)
            }
        }
    }
}

/// Owns the poller thread; dropping it disconnects the channel the thread waits on, so the
/// thread exits at once.
struct Watched<T> {
    reloader: Arc<Reloader<T>>,
    _stop: Option<mpsc::Sender<()>>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    fn start(reloader: Reloader<T>, interval: Option<Duration>) -> Result<Self> {
        let reloader = Arc::new(reloader);
        let stop = match interval {
            None => None,
            Some(interval) => {
                let (tx, rx) = mpsc::channel::<()>();
                let r = Arc::clone(&reloader);
                std::thread::Builder::new()
                    .name(format!("mtls-watch-{}", r.what))
                    .spawn(move || {
                        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                            // Errors are logged inside reload().
                            let _ = r.reload();
                        }
                    })
                    .map_err(|e| Error::InvalidConfig {
                        reason: format!("cannot start the file watcher thread: {e}"),
                    })?;
                Some(tx)
            }
        };
        Ok(Self {
            reloader,
            _stop: stop,
        })
    }
}

/// An [`IdentitySource`] backed by a certificate-chain PEM file and a key PEM file.
///
/// The files are read at start (a failure there is an error) and, with
/// [`watch`](FileIdentitySource::watch), polled every interval on a small background
/// thread (no async runtime needed). A change is installed atomically; a bad change keeps
/// the last good identity and logs why. Clones share the watcher, which stops when the
/// last clone is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use mtls_core::{FileIdentitySource, IdentitySource};
/// let source = FileIdentitySource::watch("/run/svid/cert.pem", "/run/svid/key.pem", Duration::from_secs(1))?;
/// println!("current serial {}", source.current().serial_hex());
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone)]
pub struct FileIdentitySource {
    inner: Arc<Watched<Identity>>,
}

impl FileIdentitySource {
    /// Loads the files once; reload by calling [`reload`](Self::reload).
    ///
    /// ```
    /// let err = mtls_core::FileIdentitySource::open("/nonexistent/c.pem", "/nonexistent/k.pem").unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::Io { .. }));
    /// ```
    pub fn open(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Result<Self> {
        Self::start(cert_path.into(), key_path.into(), None)
    }

    /// Loads the files and polls them every `interval`.
    pub fn watch(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<Self> {
        Self::start(cert_path.into(), key_path.into(), Some(interval))
    }

    fn start(cert: PathBuf, key: PathBuf, interval: Option<Duration>) -> Result<Self> {
        let reloader = Reloader::open("identity", vec![cert, key], |c| {
            Identity::from_pem(&c[0], &c[1])
        })?;
        Ok(Self {
            inner: Arc::new(Watched::start(reloader, interval)?),
        })
    }

    /// Checks the files now: `Ok(true)` if a new identity was installed, `Ok(false)` if
    /// unchanged, `Err(reason)` if they changed but do not load (the last good identity
    /// stays in use).
    pub fn reload(&self) -> Result<bool> {
        self.inner.reloader.reload()
    }
}

impl IdentitySource for FileIdentitySource {
    fn current(&self) -> Arc<Identity> {
        self.inner.reloader.cell.load()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        Some(self.inner.reloader.cell.subscribe())
    }
}

impl fmt::Debug for FileIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileIdentitySource")
            .field("paths", &self.inner.reloader.paths)
            .field("current", &self.current())
            .finish()
    }
}

/// A [`TrustSource`] backed by a CA bundle PEM file and, optionally, a CRL PEM file.
/// Same reload rules as [`FileIdentitySource`].
///
/// ```no_run
/// use std::time::Duration;
/// let trust = mtls_core::FileTrustSource::watch("/etc/mtls/ca.pem", None::<&str>, Duration::from_secs(5))?;
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone)]
pub struct FileTrustSource {
    inner: Arc<Watched<TrustBundle>>,
}

impl FileTrustSource {
    /// Loads the files once; reload by calling [`reload`](Self::reload).
    ///
    /// ```
    /// assert!(mtls_core::FileTrustSource::open("/nonexistent/ca.pem", None::<&str>).is_err());
    /// ```
    pub fn open(ca_path: impl Into<PathBuf>, crl_path: Option<impl Into<PathBuf>>) -> Result<Self> {
        Self::start(ca_path.into(), crl_path.map(Into::into), None)
    }

    /// Loads the files and polls them every `interval`.
    pub fn watch(
        ca_path: impl Into<PathBuf>,
        crl_path: Option<impl Into<PathBuf>>,
        interval: Duration,
    ) -> Result<Self> {
        Self::start(ca_path.into(), crl_path.map(Into::into), Some(interval))
    }

    fn start(ca: PathBuf, crl: Option<PathBuf>, interval: Option<Duration>) -> Result<Self> {
        let paths = std::iter::once(ca).chain(crl).collect();
        let reloader = Reloader::open("trust bundle", paths, |c| {
            let bundle = TrustBundle::from_pem(&c[0])?;
            match c.get(1) {
                Some(crls) => bundle.with_crls_pem(crls),
                None => Ok(bundle),
            }
        })?;
        Ok(Self {
            inner: Arc::new(Watched::start(reloader, interval)?),
        })
    }

    /// Checks the files now; see [`FileIdentitySource::reload`].
    pub fn reload(&self) -> Result<bool> {
        self.inner.reloader.reload()
    }
}

impl TrustSource for FileTrustSource {
    fn current(&self) -> Arc<TrustBundle> {
        self.inner.reloader.cell.load()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        Some(self.inner.reloader.cell.subscribe())
    }
}

impl fmt::Debug for FileTrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTrustSource")
            .field("paths", &self.inner.reloader.paths)
            .field("current", &self.current())
            .finish()
    }
}
