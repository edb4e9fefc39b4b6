//! The family's one rotation model: a [`Source`] of a value that can change (an identity,
//! a trust bundle, a JWKS, a bearer token), the in-memory [`Publisher`] that changes it, and
//! the one [`FilePoller`] that changes it from files.
//!
//! ```text
//!   Publisher<T> ──publish(T)──►  ┌──────────────┐  ──current()──► Arc<T> (every handshake,
//!   FilePoller<T> ──(a thread)──► │ watch::Sender│                 every request: no I/O)
//!   a Workload API stream ──────► └──────────────┘  ──changed()──► the next value (async)
//! ```
//!
//! - **Readers** hold a [`Source<T>`]: cheap to clone, [`current`](Source::current) returns
//!   the value now as an `Arc<T>` without I/O and without blocking on a writer (plain sync
//!   code can call it: a certificate resolver, a tonic interceptor), and
//!   [`changed`](Source::changed) waits for the next value. It is a
//!   [`tokio::sync::watch`] receiver, nothing more: no runtime is needed to read it.
//! - **Writers** hold a [`Publisher<T>`]: [`publish`](Publisher::publish) puts a new value
//!   in place (readers see it on their next `current()`), [`update`](Publisher::update)
//!   computes it from the current one. Dropping every publisher keeps the last value; the
//!   sources' [`changed`](Source::changed) then returns `None` (nothing more will come).
//! - **Files** are polled by a [`FilePoller`], which owns a publisher: see there for the
//!   change test, what happens with bad files and which thread polls.
//!
//! Every mtls crate builds its sources on these: mtls-core's identities and trust bundles
//! (`IdentityHandle`, `FileIdentitySource`, the Workload API and federation sources),
//! mtls-jwt's JWKS (`Source<KeySet>`), mtls-tonic's bearer tokens, mtls-agent's published
//! SVIDs and bundles.
//!
//! ```
//! use mtls_identity::source::{Publisher, Source};
//!
//! let publisher = Publisher::new(String::from("first"));
//! let source: Source<String> = publisher.source();
//! assert_eq!(*source.current(), "first");
//!
//! publisher.publish(String::from("second"));
//! assert_eq!(*source.current(), "second");
//! publisher.update(|old| format!("{old}, third"));
//! assert_eq!(*source.current(), "second, third");
//!
//! drop(publisher);
//! assert_eq!(*source.current(), "second, third", "the last value stays");
//! ```

mod poller;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

pub use poller::{FilePoller, FilePollerBuilder, ReadError};

/// What keeps a source's writer running (a [`FilePoller`]'s thread), type-erased.
type KeepAlive = Arc<dyn Any + Send + Sync>;

/// A value that can change, read cheaply: [`current`](Self::current) now,
/// [`changed`](Self::changed) to wait for the next one. See the [module docs](self).
///
/// Clones share the value and each remembers which value it saw last (for `changed`).
/// A source of a [`FilePoller`] keeps the poller running; the poller stops when the last
/// such source (and the poller itself) is dropped.
///
/// ```
/// use mtls_identity::source::Source;
/// let fixed = Source::fixed(42u16);
/// assert_eq!(*fixed.current(), 42);
/// assert!(!fixed.has_changed());
/// ```
pub struct Source<T> {
    rx: watch::Receiver<Arc<T>>,
    keep: Option<KeepAlive>,
}

impl<T> Source<T> {
    /// A source that never changes: `current()` is always `value`, and `changed()` returns
    /// `None` at once.
    pub fn fixed(value: T) -> Self {
        let (tx, rx) = watch::channel(Arc::new(value));
        drop(tx);
        Self { rx, keep: None }
    }

    fn with_keep(rx: watch::Receiver<Arc<T>>, keep: Option<KeepAlive>) -> Self {
        Self { rx, keep }
    }

    /// The value now. Never does I/O and never waits for a writer longer than the pointer
    /// swap of a [`publish`](Publisher::publish): call it on every handshake or request.
    ///
    /// ```
    /// let publisher = mtls_identity::source::Publisher::new(1u8);
    /// let source = publisher.source();
    /// publisher.publish(2);
    /// assert_eq!(*source.current(), 2);
    /// ```
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits for a value newer than the last one this source saw (through `changed` or
    /// since it was made) and returns it; `None` once no writer is left (the value then
    /// stays as it is for good).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let publisher = mtls_identity::source::Publisher::new(1u8);
    /// let mut source = publisher.source();
    /// publisher.publish(2);
    /// assert_eq!(source.changed().await.as_deref(), Some(&2));
    /// drop(publisher);
    /// assert_eq!(source.changed().await, None);
    /// # }
    /// ```
    pub async fn changed(&mut self) -> Option<Arc<T>> {
        self.rx.changed().await.ok()?;
        Some(Arc::clone(&self.rx.borrow_and_update()))
    }

    /// True if a value newer than the last one this source saw is in place.
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }

    /// A bare [`watch::Receiver`] that sees every later value (the current one marked as
    /// seen), for code that selects over several channels. It does not keep a
    /// [`FilePoller`] running: hold the `Source` for that.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
            keep: self.keep.clone(),
        }
    }
}

impl<T> From<T> for Source<T> {
    fn from(value: T) -> Self {
        Self::fixed(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Source").field(&self.current()).finish()
    }
}

/// The writer of [`Source`]s held in memory: [`publish`](Self::publish) a new value and
/// every source sees it on its next [`current`](Source::current). Clones share it; when
/// the last one is dropped the sources keep the last value.
///
/// ```
/// use mtls_identity::source::Publisher;
/// let publisher = Publisher::new(vec!["a"]);
/// let source = publisher.source();
/// publisher.update(|v| [v.as_slice(), &["b"]].concat());
/// assert_eq!(*source.current(), ["a", "b"]);
/// assert_eq!(*publisher.current(), ["a", "b"]);
/// ```
pub struct Publisher<T> {
    tx: Arc<watch::Sender<Arc<T>>>,
}

impl<T> Publisher<T> {
    /// A publisher whose sources start with `value`.
    pub fn new(value: T) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Arc::new(value))),
        }
    }

    /// A source of this publisher's values.
    pub fn source(&self) -> Source<T> {
        Source::with_keep(self.tx.subscribe(), None)
    }

    /// Puts `value` in place; sources see it on their next `current()`, and their
    /// `changed()` wakes.
    pub fn publish(&self, value: T) {
        self.tx.send_replace(Arc::new(value));
    }

    /// Puts `f(current)` in place, atomically: two updates at once never lose one
    /// (`f` runs while readers wait, so keep it short).
    pub fn update(&self, f: impl FnOnce(&T) -> T) {
        self.tx.send_modify(|value| *value = Arc::new(f(value)));
    }

    /// Puts `f(current)` in place if it is `Some`, atomically; true if it did. For writers
    /// that publish only what passes a check against the current value (a newer sequence).
    ///
    /// ```
    /// let publisher = mtls_identity::source::Publisher::new(3u64);
    /// let source = publisher.source();
    /// assert!(!publisher.update_if(|seq| (5 < *seq).then_some(5)), "older: refused");
    /// assert!(!source.has_changed());
    /// assert!(publisher.update_if(|seq| (4 > *seq).then_some(4)));
    /// assert_eq!(*source.current(), 4);
    /// ```
    pub fn update_if(&self, f: impl FnOnce(&T) -> Option<T>) -> bool {
        self.tx.send_if_modified(|value| match f(value) {
            Some(next) => {
                *value = Arc::new(next);
                true
            }
            None => false,
        })
    }

    /// The value in place now.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.tx.borrow())
    }
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Self {
            tx: Arc::clone(&self.tx),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Publisher").field(&self.current()).finish()
    }
}
