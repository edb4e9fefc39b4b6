//! The one file poller of the family.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{KeepAlive, Publisher, Source};

/// A file of a [`FilePoller`] that could not be read. Parse errors of a poller are `E:
/// From<ReadError>`, so this becomes the caller's own I/O error (naming the file).
///
/// ```
/// let err = mtls_identity::source::ReadError::new("/nonexistent/ca.pem",
///     std::io::Error::from(std::io::ErrorKind::NotFound));
/// assert!(err.to_string().starts_with("cannot read /nonexistent/ca.pem: "), "{err}");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub source: io::Error,
}

impl ReadError {
    /// `path` could not be read because of `source`.
    pub fn new(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read {}: {}", self.path.display(), self.source)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

type Parse<T, E> = Box<dyn Fn(&[Vec<u8>]) -> Result<T, E> + Send + Sync>;
type OnPublish<T> = Box<dyn Fn(&str, Option<&T>, &T) + Send + Sync>;

/// The shortest polling interval; a shorter one (zero included) is taken as this.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Polls a set of files read together, parses them into a `T` and publishes it when the
/// contents change and parse: the one file watcher of the mtls crates (PEM identities and
/// trust bundles, JWKS files, bearer token files).
///
/// **The change test is the files' contents**, compared byte for byte with the contents of
/// the value in place, never their modification time: mtime has a granularity (a second on
/// some file systems, so two writes in one tick look like one), a rename over the file or
/// Kubernetes' `..data` symlink swap can bring an older mtime, and copying tools keep it.
/// Rewriting the same contents is no change (nothing is published); different contents
/// with the same mtime are. Reading a few KB per interval is the cost. Polling rather than
/// inotify: it sees every way of replacing a file (rename over, symlink swap, in-place
/// write, NFS) and needs no OS facility or dependency.
///
/// **Bad files keep the last good value.** Files that cannot be read, or whose new
/// contents `parse` refuses, leave the value in place and are re-checked every interval
/// (so a certificate that is not valid yet is taken once its time comes). Each bad state
/// is logged **once** at `warn`, naming the files and the error, when it is seen on two
/// checks in a row — the passing mismatch of a certificate written before its key is no
/// warning — and not again on later ticks; an `info` line says when the files are good
/// again.
///
/// **One thread per poller, no runtime.** With an [`interval`](FilePollerBuilder::interval)
/// a small OS thread (`mtls-poll-<what>`) checks the files: the reads are blocking file
/// I/O, which has no place on an async executor, and a thread works the same under any
/// runtime or none (a sync CLI, a tokio service, tests). It sleeps on a channel, not a
/// timer: when the poller and every [`Source`] of it are dropped the channel closes and
/// the thread ends at once. Without an interval nothing polls; call
/// [`check`](Self::check).
///
/// ```
/// use std::time::Duration;
/// use mtls_identity::source::{FilePoller, ReadError};
///
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("token");
/// std::fs::write(&path, "first\n")?;
/// let poller = FilePoller::builder("token", [&path], |files: &[Vec<u8>]| {
///     let text = String::from_utf8_lossy(&files[0]).trim().to_owned();
///     match text.is_empty() {
///         true => Err(std::io::Error::other("the token file is empty")),
///         false => Ok(text),
///     }
/// })
/// .interval(Duration::from_secs(1))
/// .start()?;
/// let source = poller.source();
/// assert_eq!(*source.current(), "first");
///
/// std::fs::write(&path, "first\n")?;
/// assert!(!poller.check()?, "the same contents are no change");
/// std::fs::write(&path, "")?;
/// assert!(poller.check().is_err());
/// assert_eq!(*source.current(), "first", "a bad file keeps the last good value");
/// std::fs::write(&path, "second")?;
/// assert!(poller.check()?);
/// assert_eq!(*source.current(), "second");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// (`io::Error` here; a crate uses its own error type with `From<ReadError>`.)
pub struct FilePoller<T, E> {
    inner: Arc<Inner<T, E>>,
    stop: KeepAlive,
}

/// Configures a [`FilePoller`]: [`FilePoller::builder`].
pub struct FilePollerBuilder<T, E> {
    what: String,
    paths: Vec<PathBuf>,
    parse: Parse<T, E>,
    on_publish: Option<OnPublish<T>>,
    interval: Option<Duration>,
}

struct Inner<T, E> {
    what: String,
    paths: Vec<PathBuf>,
    paths_text: String,
    parse: Parse<T, E>,
    on_publish: Option<OnPublish<T>>,
    publisher: Publisher<T>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// The contents of the value in place.
    good: Vec<Vec<u8>>,
    /// A bad state (its message) seen on the last check and not warned about yet.
    pending: Option<String>,
    /// The bad state (its message) warned about; cleared when the files are good again.
    warned: Option<String>,
}

/// Closes the poller thread's channel when dropped (the thread then ends).
struct Stop {
    _tx: Option<mpsc::Sender<()>>,
}

impl<T, E> FilePoller<T, E>
where
    T: Send + Sync + 'static,
    E: From<ReadError> + fmt::Display + 'static,
{
    /// A poller of `paths` (read together, in this order, and given to `parse` as their
    /// contents); `what` names the value in logs and the thread (`"identity"`, `"JWKS"`).
    pub fn builder<P>(
        what: impl Into<String>,
        paths: impl IntoIterator<Item = P>,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, E> + Send + Sync + 'static,
    ) -> FilePollerBuilder<T, E>
    where
        P: AsRef<Path>,
    {
        FilePollerBuilder {
            what: what.into(),
            paths: paths.into_iter().map(|p| p.as_ref().to_owned()).collect(),
            parse: Box::new(parse),
            on_publish: None,
            interval: None,
        }
    }

    /// A source of the parsed value; it keeps the poller running (see the type docs).
    pub fn source(&self) -> Source<T> {
        Source::with_keep(
            self.inner.publisher.source().rx,
            Some(Arc::clone(&self.stop)),
        )
    }

    /// The value in place now.
    pub fn current(&self) -> Arc<T> {
        self.inner.publisher.current()
    }

    /// The files, in the order `parse` sees them.
    pub fn paths(&self) -> &[PathBuf] {
        &self.inner.paths
    }

    /// Checks the files now: `Ok(true)` if new contents parsed and were published,
    /// `Ok(false)` if the contents are those of the value in place, `Err` if a file cannot
    /// be read or the new contents are refused (the last good value stays).
    pub fn check(&self) -> Result<bool, E> {
        self.inner.check()
    }
}

impl<T, E> FilePollerBuilder<T, E>
where
    T: Send + Sync + 'static,
    E: From<ReadError> + fmt::Display + 'static,
{
    /// Checks the files every `interval` on the poller's thread (without it, only
    /// [`FilePoller::check`] does). An interval under 1 ms is taken as 1 ms.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval.max(MIN_INTERVAL));
        self
    }

    /// Calls `f(paths, previous, new)` for each value put in place, before readers see it:
    /// first for the value read at start (`previous` is `None`), then for each change.
    /// For logs naming what changed and for metrics.
    pub fn on_publish(mut self, f: impl Fn(&str, Option<&T>, &T) + Send + Sync + 'static) -> Self {
        self.on_publish = Some(Box::new(f));
        self
    }

    /// Reads and parses the files once (an error there is returned: there is no last good
    /// value yet) and, with an interval, starts the thread.
    pub fn start(self) -> Result<FilePoller<T, E>, E> {
        let contents = read_all(&self.paths)?;
        let value = (self.parse)(&contents)?;
        let paths_text = self
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(f) = &self.on_publish {
            f(&paths_text, None, &value);
        }
        let inner = Arc::new(Inner {
            what: self.what,
            paths: self.paths,
            paths_text,
            parse: self.parse,
            on_publish: self.on_publish,
            publisher: Publisher::new(value),
            seen: Mutex::new(Seen {
                good: contents,
                ..Seen::default()
            }),
        });
        let tx = match self.interval {
            None => None,
            Some(interval) => {
                let (tx, rx) = mpsc::channel::<()>();
                let polled = Arc::clone(&inner);
                std::thread::Builder::new()
                    .name(format!("mtls-poll-{}", polled.what))
                    .spawn(move || {
                        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                            // Bad states are logged inside check().
                            let _ = polled.check();
                        }
                    })
                    .map_err(|e| {
                        E::from(ReadError::new(
                            inner.paths.first().cloned().unwrap_or_default(),
                            io::Error::new(
                                e.kind(),
                                format!("cannot start the file poller thread: {e}"),
                            ),
                        ))
                    })?;
                Some(tx)
            }
        };
        Ok(FilePoller {
            inner,
            stop: Arc::new(Stop { _tx: tx }),
        })
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, ReadError> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| ReadError::new(p, e)))
        .collect()
}

impl<T, E> Inner<T, E>
where
    E: From<ReadError> + fmt::Display,
{
    fn check(&self) -> Result<bool, E> {
        let contents = read_all(&self.paths);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let contents = match contents {
            Ok(c) => c,
            Err(e) => {
                let e = E::from(e);
                self.bad_state(
                    &mut seen,
                    &e,
                    "cannot read files; keeping the last good value",
                );
                return Err(e);
            }
        };
        if contents == seen.good {
            seen.pending = None;
            if let Some(bad) = seen.warned.take() {
                tracing::info!(what = %self.what, paths = %self.paths_text, was = %bad,
                    "files are back to the last good value");
            }
            return Ok(false);
        }
        match (self.parse)(&contents) {
            Ok(value) => {
                if let Some(f) = &self.on_publish {
                    f(&self.paths_text, Some(&self.publisher.current()), &value);
                }
                self.publisher.publish(value);
                seen.good = contents;
                seen.pending = None;
                if let Some(bad) = seen.warned.take() {
                    tracing::info!(what = %self.what, paths = %self.paths_text, was = %bad,
                        "new files load; the source is good again");
                }
                Ok(true)
            }
            Err(e) => {
                self.bad_state(
                    &mut seen,
                    &e,
                    "new files are refused; keeping the last good value",
                );
                Err(e)
            }
        }
    }

    /// Warns about a bad state once, when it is seen on two checks in a row.
    fn bad_state(&self, seen: &mut Seen, error: &E, message: &'static str) {
        let state = error.to_string();
        if seen.warned.as_ref() == Some(&state) {
            return;
        }
        if seen.pending.as_ref() == Some(&state) {
            tracing::warn!(what = %self.what, paths = %self.paths_text, error = %state, "{message}");
            seen.pending = None;
            seen.warned = Some(state);
        } else {
            tracing::debug!(what = %self.what, error = %state,
                "{message} (warned if still so on the next check)");
            seen.pending = Some(state);
        }
    }
}

impl<T: fmt::Debug, E> fmt::Debug for FilePoller<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePoller")
            .field("what", &self.inner.what)
            .field("paths", &self.inner.paths_text)
            .field("current", &self.inner.publisher.current())
            .finish()
    }
}

impl<T, E> fmt::Debug for FilePollerBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePollerBuilder")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}
