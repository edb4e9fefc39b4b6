//! Where identities and trust bundles come from, and how they rotate: on the family's one
//! rotation model, [`mtls_identity::source`] ([`Source`], [`Publisher`], `FilePoller`).

use std::fmt;
use std::sync::Arc;

use mtls_identity::source::{Publisher, Source};
use tokio::sync::watch;

use crate::identity::Identity;
use crate::metrics::Installed;
use crate::trust::TrustBundle;

/// Supplies our current [`Identity`]. Certificate resolvers call [`current`] on every
/// handshake, so a source that changes its answer rotates the identity with no restart.
///
/// A thin trait over the family's [`Source<Identity>`](Source) (the rotation model of
/// [`mtls_identity::source`]), which implements it. Implementations: `Arc<Identity>`
/// (static), [`Source<Identity>`](Source), [`IdentityHandle`] (in memory, `rotate`),
/// [`FileIdentitySource`](crate::FileIdentitySource) (watched PEM files, through the one
/// `FilePoller`), and the Workload API source (feeding an [`IdentityHandle`]); each of
/// them hands out its [`Source`] too (`.source()`).
///
/// [`current`]: IdentitySource::current
///
/// ```
/// use std::sync::Arc;
/// use mtls_core::{Identity, IdentitySource};
/// fn serial_of(source: &dyn IdentitySource) -> String {
///     source.current().serial().to_string()
/// }
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
/// let fixed: Arc<Identity> = Arc::new(Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
/// assert!(!serial_of(&fixed).is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IdentitySource: Send + Sync + fmt::Debug + 'static {
    /// The identity to present now. Must be cheap: it runs on every handshake.
    fn current(&self) -> Arc<Identity>;

    /// A receiver that sees every new identity, or `None` if this source never changes.
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        None
    }
}

/// Supplies the current [`TrustBundle`]; verifiers call [`current`] on every handshake.
///
/// A thin trait over [`Source<TrustBundle>`](Source), which implements it.
/// Implementations: `Arc<TrustBundle>` (static), [`Source<TrustBundle>`](Source),
/// [`TrustHandle`] (in memory, `rotate`), [`FileTrustSource`](crate::FileTrustSource)
/// (watched PEM files), the Workload API and federation sources.
///
/// [`current`]: TrustSource::current
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// use mtls_core::{TrustBundle, TrustSource};
/// let fixed = std::sync::Arc::new(TrustBundle::from_pem(ca.cert_pem())?);
/// assert!(fixed.subscribe().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TrustSource: Send + Sync + fmt::Debug + 'static {
    /// The bundle to verify peers against now. Must be cheap, and return the same `Arc`
    /// while the bundle is unchanged: verifiers remember the chains they verified per
    /// bundle (by `Arc` identity), and a new `Arc` makes them verify every chain again.
    fn current(&self) -> Arc<TrustBundle>;

    /// A receiver that sees every new bundle, or `None` if this source never changes.
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        None
    }
}

impl IdentitySource for Arc<Identity> {
    fn current(&self) -> Arc<Identity> {
        Arc::clone(self)
    }
}

impl IdentitySource for Arc<dyn IdentitySource> {
    fn current(&self) -> Arc<Identity> {
        (**self).current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        (**self).subscribe()
    }
}

impl TrustSource for Arc<TrustBundle> {
    fn current(&self) -> Arc<TrustBundle> {
        Arc::clone(self)
    }
}

impl TrustSource for Arc<dyn TrustSource> {
    fn current(&self) -> Arc<TrustBundle> {
        (**self).current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        (**self).subscribe()
    }
}

impl IdentitySource for Source<Identity> {
    fn current(&self) -> Arc<Identity> {
        Source::current(self)
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        Some(Source::subscribe(self))
    }
}

impl TrustSource for Source<TrustBundle> {
    fn current(&self) -> Arc<TrustBundle> {
        Source::current(self)
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        Some(Source::subscribe(self))
    }
}

/// A [`Publisher`] that records each value it puts in place (metrics: expiry gauges,
/// rotation counters).
pub(crate) struct Cell<T> {
    publisher: Publisher<T>,
}

impl<T: Installed> Cell<T> {
    pub(crate) fn new(value: T) -> Self {
        value.installed(false);
        Self {
            publisher: Publisher::new(value),
        }
    }

    pub(crate) fn load(&self) -> Arc<T> {
        self.publisher.current()
    }

    pub(crate) fn store(&self, value: T) {
        value.installed(true);
        self.publisher.publish(value);
    }

    pub(crate) fn source(&self) -> Source<T> {
        self.publisher.source()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.publisher.source().subscribe()
    }
}

impl<T> Clone for Cell<T> {
    fn clone(&self) -> Self {
        Self {
            publisher: self.publisher.clone(),
        }
    }
}

/// An in-memory identity you can [`rotate`](IdentityHandle::rotate). Clones share it.
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// # let (a, b) = (ca.issue(&mtls_certs::LeafParams::server(["x"]))?, ca.issue(&mtls_certs::LeafParams::server(["x"]))?);
/// use mtls_core::{Identity, IdentityHandle, IdentitySource};
/// let handle = IdentityHandle::new(Identity::from_pem(a.chain_pem(), a.key_pem())?);
/// let mut changes = handle.subscribe().expect("handles notify");
/// let new = Identity::from_pem(b.chain_pem(), b.key_pem())?;
/// let new_serial = new.serial().to_string();
/// handle.rotate(new);
/// assert_eq!(handle.current().serial().to_string(), new_serial);
/// assert!(changes.has_changed()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct IdentityHandle {
    cell: Cell<Identity>,
}

impl IdentityHandle {
    /// A handle that starts with `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            cell: Cell::new(identity),
        }
    }

    /// The [`Source`] of this handle's identities (what `current()` reads).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["x"]))?;
    /// use mtls_core::{Identity, IdentityHandle, Source};
    /// let handle = IdentityHandle::new(Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
    /// let source: Source<Identity> = handle.source();
    /// assert_eq!(source.current().serial(), handle.source().current().serial());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(&self) -> Source<Identity> {
        self.cell.source()
    }

    /// Replaces the identity; handshakes that start after this use the new one.
    pub fn rotate(&self, identity: Identity) {
        tracing::info!(serial = %identity.serial(), subject = %identity.subject(), "identity rotated");
        self.cell.store(identity);
    }
}

impl IdentitySource for IdentityHandle {
    fn current(&self) -> Arc<Identity> {
        self.cell.load()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        Some(self.cell.subscribe())
    }
}

impl From<Identity> for IdentityHandle {
    fn from(identity: Identity) -> Self {
        Self::new(identity)
    }
}

impl fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityHandle")
            .field(&self.cell.load())
            .finish()
    }
}

/// An in-memory trust bundle you can [`rotate`](TrustHandle::rotate). Clones share it.
///
/// ```
/// # let a = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
/// # let b = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("B"))?;
/// use mtls_core::{TrustBundle, TrustHandle, TrustSource};
/// let trust = TrustHandle::new(TrustBundle::from_pem(a.cert_pem())?);
/// // during a CA rollover, trust both for a while:
/// trust.rotate(TrustBundle::from_pem(a.cert_pem() + &b.cert_pem())?);
/// assert_eq!(trust.current().roots(None).len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TrustHandle {
    cell: Cell<TrustBundle>,
}

impl TrustHandle {
    /// A handle that starts with `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            cell: Cell::new(bundle),
        }
    }

    /// The [`Source`] of this handle's bundles.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// use mtls_core::{TrustBundle, TrustHandle};
    /// let trust = TrustHandle::new(TrustBundle::from_pem(ca.cert_pem())?);
    /// let source = trust.source();
    /// trust.rotate(TrustBundle::from_pem(ca.cert_pem())?);
    /// assert!(source.has_changed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(&self) -> Source<TrustBundle> {
        self.cell.source()
    }

    /// Replaces the bundle; handshakes that start after this verify against the new one.
    pub fn rotate(&self, bundle: TrustBundle) {
        tracing::info!(bundle = ?bundle, "trust bundle rotated");
        self.cell.store(bundle);
    }
}

impl TrustSource for TrustHandle {
    fn current(&self) -> Arc<TrustBundle> {
        self.cell.load()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        Some(self.cell.subscribe())
    }
}

impl From<TrustBundle> for TrustHandle {
    fn from(bundle: TrustBundle) -> Self {
        Self::new(bundle)
    }
}

impl fmt::Debug for TrustHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustHandle")
            .field(&self.cell.load())
            .finish()
    }
}
