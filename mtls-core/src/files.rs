//! Identity and trust read from PEM files, polled and reloaded atomically.
//!
//! Both go through the family's one [`FilePoller`] (contents compared, not mtime; bad
//! files keep the last good value with one warning per bad state; a thread per poller):
//! see [`mtls_identity::source::FilePoller`] for the change test and why polling. The
//! bad-state rules specific to identities are on [`FileIdentitySource`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mtls_identity::source::{FilePoller, ReadError, Source};
use rustls_pki_types::UnixTime;
use tokio::sync::watch;

use crate::bundle::{SpiffeBundle, looks_like_json};
use crate::cert::{LeafInfo, rfc3339};
use crate::error::{Error, Result};
use crate::identity::{Identity, certs_from_pem, check_validity, key_from_pem};
use crate::metrics::Installed;
use crate::source::{IdentitySource, TrustSource};
use crate::trust::TrustBundle;
use crate::verify::check_own_chain;
use mtls_identity::TrustDomain;

/// The credential file of SPIFFE Filesystem Delivery: PKCS#8 key, then the chain.
const CREDENTIAL_FILE: &str = "credential-bundle.private-key.pem";
/// What follows the trust domain in a delivered trust bundle's file name.
const TRUST_BUNDLE_SUFFIX: &str = ".spiffe-trust-bundle.pem";

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        let ReadError { path, source, .. } = e;
        Error::Io { path, source }
    }
}

/// A poller of files with a source of its value; clones share both.
struct Watched<T> {
    poller: Arc<FilePoller<T, Error>>,
    source: Source<T>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self {
            poller: Arc::clone(&self.poller),
            source: self.source.clone(),
        }
    }
}

impl<T: Installed + Send + Sync + 'static> Watched<T> {
    /// Reads `paths` once with `load` and, with an interval, polls them; `installed` logs a
    /// change (the files, previous, new). Metrics record every value put in place.
    fn start(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn(&[Vec<u8>]) -> Result<T> + Send + Sync + 'static,
        installed: fn(&str, &T, &T),
        interval: Option<Duration>,
    ) -> Result<Self> {
        let builder =
            FilePoller::builder(what, paths, load).on_publish(move |paths, previous, new| {
                if let Some(previous) = previous {
                    installed(paths, previous, new);
                }
                new.installed(previous.is_some());
            });
        let poller = match interval {
            Some(every) => builder.interval(every),
            None => builder,
        }
        .start()?;
        Ok(Self {
            source: poller.source(),
            poller: Arc::new(poller),
        })
    }

    fn paths_text(&self) -> String {
        self.poller
            .paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Builds our identity from the certificate-chain and key file contents, refusing a leaf
/// outside its validity window and, with `trust`, one that does not chain to it. The
/// certificate's own checks come before the key's, so an in-place write of a bad leaf and
/// then its key is one bad state, not two.
fn load_identity(
    cert_path: &Path,
    trust: Option<&dyn TrustSource>,
    contents: &[Vec<u8>],
) -> Result<Identity> {
    let (Some(chain_pem), Some(key_pem)) = (contents.first(), contents.get(1)) else {
        return Err(Error::InvalidConfig {
            reason: "an identity needs a certificate file and a key file".to_owned(),
        });
    };
    let chain = certs_from_pem(chain_pem, "certificate chain")?;
    let Some(leaf_der) = chain.first() else {
        return Err(Error::Pem {
            what: "certificate chain",
            reason: "no certificate found".to_owned(),
        });
    };
    let leaf = LeafInfo::parse(leaf_der)?;
    check_validity(cert_path, &leaf, SystemTime::now())?;
    if let Some(trust) = trust {
        check_own_chain(&chain, &leaf, &trust.current(), UnixTime::now()).map_err(
            |(trusted, reason)| Error::IdentityUntrusted {
                path: cert_path.to_owned(),
                presented: format!("{} (issuer {})", leaf.display_name(), leaf.issuer),
                expected: format!("{trusted}: {reason}"),
            },
        )?;
    }
    Identity::from_der(chain, key_from_pem(key_pem)?)
}

/// The roots of a trust file: PEM `CERTIFICATE` blocks or a SPIFFE bundle (JSON), told
/// apart by the first non-blank byte (`{`).
fn load_roots(trust_domain: Option<&TrustDomain>, contents: &[u8]) -> Result<TrustBundle> {
    if !looks_like_json(contents) {
        return match trust_domain {
            Some(td) => TrustBundle::spiffe().add_domain_pem(td.clone(), contents),
            None => TrustBundle::from_pem(contents),
        };
    }
    let text = std::str::from_utf8(contents).map_err(|_| Error::InvalidBundle {
        trust_domain: trust_domain.map_or_else(|| "(any)".to_owned(), ToString::to_string),
        reason: "expected UTF-8 JSON, saw bytes that are not UTF-8".to_owned(),
    })?;
    // A plain CA bundle has no trust domain: the SPIFFE document is read for its X.509
    // authorities only, checked as those of no particular domain.
    let td = match trust_domain {
        Some(td) => td.clone(),
        None => TrustDomain::new("unnamed.invalid")?,
    };
    let bundle = SpiffeBundle::parse_checked(td.clone(), text, trust_domain.is_some())?;
    if bundle.x509_authorities().is_empty() {
        return Err(Error::InvalidBundle {
            trust_domain: td.to_string(),
            reason: "expected at least one x509-svid key, saw none".to_owned(),
        });
    }
    match trust_domain {
        Some(td) => {
            TrustBundle::spiffe().add_domain_der(td.clone(), bundle.x509_authorities().to_vec())
        }
        None => TrustBundle::from_der(bundle.x509_authorities().to_vec()),
    }
}

fn identity_installed(paths: &str, previous: &Identity, new: &Identity) {
    if previous.issuer() != new.issuer() {
        tracing::warn!(paths, subject = %new.subject(), previous_issuer = %previous.issuer(),
            new_issuer = %new.issuer(), serial = %new.serial(),
            "identity issuer changed; peers must trust the new issuer");
    }
    tracing::info!(paths, subject = %new.subject(), serial = %new.serial(),
        not_after = %rfc3339(new.not_after()), "identity reloaded");
}

fn trust_installed(paths: &str, _previous: &TrustBundle, new: &TrustBundle) {
    tracing::info!(paths, bundle = %trust_summary(new), "trust bundle reloaded");
}

fn trust_summary(bundle: &TrustBundle) -> String {
    if bundle.is_spiffe() {
        bundle
            .trust_domains()
            .map(|td| format!("{td}: {} roots", bundle.roots(Some(td)).len()))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        format!("{} CA roots", bundle.roots(None).len())
    }
}

/// An [`IdentitySource`] backed by a certificate-chain PEM file and a key PEM file.
///
/// The files are read at start (a failure there is an error, and so is a leaf outside its
/// validity window: an expired certificate is never served) and, with
/// [`watch`](FileIdentitySource::watch), polled every interval by the family's one
/// [`FilePoller`] (a small background thread, no async runtime needed; the contents are
/// compared, not the modification time). A change is installed atomically. A new leaf from
/// another issuer than the last one is installed with a `warn` line naming both issuers.
/// Clones share the watcher, which stops when the last clone is dropped.
///
/// New contents that do not make a usable identity are a **bad state**, and the last good
/// identity stays in place: a half-written file, a key that does not (yet) match the new
/// certificate, a leaf outside its validity window (expired or not yet valid), a leaf that
/// does not chain to the current trust (with [`watch_trusted`](Self::watch_trusted)),
/// files that cannot be read. Each bad state is logged **once** at `warn`, when it is seen
/// on two checks in a row (the error names the file, and the dates or the issuer presented
/// and the roots expected), and not again on later ticks; the passing mismatched pair of an
/// in-place write of a certificate and then its key, or of a `..data` swap between the
/// reads of the two files, is no warning. An `info` line says when the source is good
/// again. Bad contents are re-checked every tick, so a not-yet-valid leaf is installed once
/// its time comes and a leaf of a new CA once the trust has it.
///
/// ```no_run
/// use std::time::Duration;
/// use mtls_core::{FileIdentitySource, IdentitySource};
/// let source = FileIdentitySource::watch("/run/svid/cert.pem", "/run/svid/key.pem", Duration::from_secs(1))?;
/// println!("current serial {}", source.current().serial().to_string());
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone)]
pub struct FileIdentitySource {
    inner: Watched<Identity>,
}

impl FileIdentitySource {
    /// Loads the files once; reload by calling [`reload`](Self::reload).
    ///
    /// ```
    /// let err = mtls_core::FileIdentitySource::open("/nonexistent/c.pem", "/nonexistent/k.pem").unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::Io { .. }));
    /// ```
    pub fn open(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Result<Self> {
        Self::start(cert_path.into(), key_path.into(), None, None)
    }

    /// Loads the files and polls them every `interval`.
    pub fn watch(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<Self> {
        Self::start(cert_path.into(), key_path.into(), None, Some(interval))
    }

    /// Like [`watch`](Self::watch), and the leaf must also chain to `trust` (its current
    /// bundle at each check; for a SPIFFE bundle set, the bundle of the leaf's trust
    /// domain): a leaf of a foreign CA is refused at start
    /// ([`Error::IdentityUntrusted`]) and, dropped in later, keeps the last good identity.
    /// Use it when our own certificate comes from the CA our peers trust, as in a mesh.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Ours"))?;
    /// # let other = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Foreign"))?;
    /// # let dir = tempfile::tempdir()?;
    /// # let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    /// # let foreign = other.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// # std::fs::write(&cert, foreign.chain_pem())?;
    /// # std::fs::write(&key, foreign.key_pem())?;
    /// use std::{sync::Arc, time::Duration};
    /// use mtls_core::{Error, FileIdentitySource, TrustBundle};
    /// let trust = Arc::new(TrustBundle::from_pem(ca.cert_pem())?);
    /// let err = FileIdentitySource::watch_trusted(&cert, &key, trust, Duration::from_secs(1)).unwrap_err();
    /// assert!(matches!(err, Error::IdentityUntrusted { .. }), "{err}");
    /// assert!(err.to_string().contains("issuer CN=Foreign"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_trusted(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        trust: impl TrustSource,
        interval: Duration,
    ) -> Result<Self> {
        let trust: Arc<dyn TrustSource> = Arc::new(trust);
        Self::start(
            cert_path.into(),
            key_path.into(),
            Some(trust),
            Some(interval),
        )
    }

    /// The identity of a SPIFFE Filesystem Delivery folder (`$SPIFFE_CREDENTIAL_FOLDER`, as
    /// `mtls-agent --deliver-to` and spiffe-helper write it): `credential-bundle.private-key.pem`,
    /// the PKCS#8 key followed by the chain, leaf first — one file, so key and certificate
    /// always change together. Polled every `interval`.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let svid = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/web")?))?;
    /// # let dir = tempfile::tempdir()?;
    /// # std::fs::write(dir.path().join("credential-bundle.private-key.pem"), svid.key_pem() + &svid.chain_pem())?;
    /// use mtls_core::{FileIdentitySource, IdentitySource};
    /// let identity = FileIdentitySource::watch_delivered(dir.path(), std::time::Duration::from_secs(1))?;
    /// assert_eq!(identity.current().spiffe_id().map(|id| id.to_string()).as_deref(), Some("spiffe://example.org/web"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_delivered(dir: impl AsRef<Path>, interval: Duration) -> Result<Self> {
        let file = dir.as_ref().join(CREDENTIAL_FILE);
        Self::start(file.clone(), file, None, Some(interval))
    }

    fn start(
        cert: PathBuf,
        key: PathBuf,
        trust: Option<Arc<dyn TrustSource>>,
        interval: Option<Duration>,
    ) -> Result<Self> {
        let cert_path = cert.clone();
        let load = move |c: &[Vec<u8>]| load_identity(&cert_path, trust.as_deref(), c);
        Ok(Self {
            inner: Watched::start(
                "identity",
                vec![cert, key],
                load,
                identity_installed,
                interval,
            )?,
        })
    }

    /// The [`Source`] of the identities these files hold; it keeps the poller running.
    pub fn source(&self) -> Source<Identity> {
        self.inner.source.clone()
    }

    /// Checks the files now: `Ok(true)` if a new identity was installed, `Ok(false)` if
    /// unchanged, `Err(reason)` if they cannot be read or changed but are refused (the last
    /// good identity stays in use).
    pub fn reload(&self) -> Result<bool> {
        self.inner.poller.check()
    }
}

impl IdentitySource for FileIdentitySource {
    fn current(&self) -> Arc<Identity> {
        self.inner.source.current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        Some(self.inner.source.subscribe())
    }
}

impl fmt::Debug for FileIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileIdentitySource")
            .field("paths", &self.inner.paths_text())
            .field("current", &self.current())
            .finish()
    }
}

/// A [`TrustSource`] backed by a CA bundle PEM file and, optionally, a CRL PEM file: a
/// plain CA bundle ([`watch`](Self::watch)) or the X.509 bundle of one SPIFFE trust domain
/// ([`watch_spiffe`](Self::watch_spiffe)). Same reload rules as [`FileIdentitySource`].
///
/// ```no_run
/// use std::time::Duration;
/// let trust = mtls_core::FileTrustSource::watch("/etc/mtls/ca.pem", None::<&str>, Duration::from_secs(5))?;
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone)]
pub struct FileTrustSource {
    inner: Watched<TrustBundle>,
}

impl FileTrustSource {
    /// Loads the files once; reload by calling [`reload`](Self::reload).
    ///
    /// ```
    /// assert!(mtls_core::FileTrustSource::open("/nonexistent/ca.pem", None::<&str>).is_err());
    /// ```
    pub fn open(ca_path: impl Into<PathBuf>, crl_path: Option<impl Into<PathBuf>>) -> Result<Self> {
        Self::start(None, ca_path.into(), crl_path.map(Into::into), None)
    }

    /// Loads the files and polls them every `interval`.
    pub fn watch(
        ca_path: impl Into<PathBuf>,
        crl_path: Option<impl Into<PathBuf>>,
        interval: Duration,
    ) -> Result<Self> {
        Self::start(
            None,
            ca_path.into(),
            crl_path.map(Into::into),
            Some(interval),
        )
    }

    /// Like [`watch`](Self::watch), but the roots in `ca_path` are the X.509 bundle of
    /// `trust_domain` in a SPIFFE bundle set ([`TrustBundle::spiffe`]): peers must be
    /// X509-SVIDs of that trust domain, verified against these roots only.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("bundle.pem");
    /// # std::fs::write(&path, ca.cert_pem())?;
    /// use mtls_core::{FileTrustSource, TrustSource};
    /// let trust = FileTrustSource::watch_spiffe("example.org".parse()?, &path, None::<&str>,
    ///     std::time::Duration::from_secs(1))?;
    /// assert!(trust.current().is_spiffe());
    /// assert_eq!(trust.current().roots(Some(&"example.org".parse()?)).len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_spiffe(
        trust_domain: TrustDomain,
        ca_path: impl Into<PathBuf>,
        crl_path: Option<impl Into<PathBuf>>,
        interval: Duration,
    ) -> Result<Self> {
        Self::start(
            Some(trust_domain),
            ca_path.into(),
            crl_path.map(Into::into),
            Some(interval),
        )
    }

    /// The trust bundles of a SPIFFE Filesystem Delivery folder: one
    /// `<trust-domain>.spiffe-trust-bundle.pem` per trust domain given (PEM or SPIFFE JSON),
    /// as a SPIFFE bundle set — each domain's roots vouch for that domain only. Polled every
    /// `interval`.
    ///
    /// ```
    /// # let a = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// # let b = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("B"))?;
    /// # let dir = tempfile::tempdir()?;
    /// # std::fs::write(dir.path().join("a.org.spiffe-trust-bundle.pem"), a.cert_pem())?;
    /// # std::fs::write(dir.path().join("b.org.spiffe-trust-bundle.pem"), b.cert_pem())?;
    /// use mtls_core::{FileTrustSource, TrustSource};
    /// let trust = FileTrustSource::watch_delivered(dir.path(), ["a.org".parse()?, "b.org".parse()?],
    ///     std::time::Duration::from_secs(1))?;
    /// assert_eq!(trust.current().roots(Some(&"b.org".parse()?)), [b.cert_der().clone()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_delivered(
        dir: impl AsRef<Path>,
        trust_domains: impl IntoIterator<Item = TrustDomain>,
        interval: Duration,
    ) -> Result<Self> {
        let domains: Vec<TrustDomain> = trust_domains.into_iter().collect();
        if domains.is_empty() {
            return Err(Error::InvalidConfig {
                reason: "a delivered trust bundle needs at least one trust domain".to_owned(),
            });
        }
        let paths = domains
            .iter()
            .map(|td| dir.as_ref().join(format!("{td}{TRUST_BUNDLE_SUFFIX}")))
            .collect();
        let load = move |c: &[Vec<u8>]| {
            let mut set = TrustBundle::spiffe();
            for (td, contents) in domains.iter().zip(c) {
                let one = load_roots(Some(td), contents)?;
                set = set.add_domain_der(td.clone(), one.roots(Some(td)).to_vec())?;
            }
            Ok(set)
        };
        Ok(Self {
            inner: Watched::start("trust bundle", paths, load, trust_installed, Some(interval))?,
        })
    }

    fn start(
        trust_domain: Option<TrustDomain>,
        ca: PathBuf,
        crl: Option<PathBuf>,
        interval: Option<Duration>,
    ) -> Result<Self> {
        let paths = std::iter::once(ca).chain(crl).collect();
        let load = move |c: &[Vec<u8>]| {
            let Some(roots) = c.first() else {
                return Err(Error::InvalidConfig {
                    reason: "a trust bundle needs a CA file".to_owned(),
                });
            };
            let bundle = load_roots(trust_domain.as_ref(), roots)?;
            match c.get(1) {
                Some(crls) => bundle.add_crls_pem(crls),
                None => Ok(bundle),
            }
        };
        Ok(Self {
            inner: Watched::start("trust bundle", paths, load, trust_installed, interval)?,
        })
    }

    /// The [`Source`] of the bundles these files hold; it keeps the poller running.
    pub fn source(&self) -> Source<TrustBundle> {
        self.inner.source.clone()
    }

    /// Checks the files now; see [`FileIdentitySource::reload`].
    pub fn reload(&self) -> Result<bool> {
        self.inner.poller.check()
    }
}

impl TrustSource for FileTrustSource {
    fn current(&self) -> Arc<TrustBundle> {
        self.inner.source.current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        Some(self.inner.source.subscribe())
    }
}

impl fmt::Debug for FileTrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTrustSource")
            .field("paths", &self.inner.paths_text())
            .field("current", &self.current())
            .finish()
    }
}
