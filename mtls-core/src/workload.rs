//! Identity and trust from the SPIFFE Workload API (feature `workload-api`).
//!
//! [`WorkloadApiSource`] wraps the `spiffe` crate's `X509Source` (which keeps a stream to
//! the agent open, reconnects with backoff and keeps the last good SVID) and mirrors every
//! update into an [`IdentityHandle`] and a [`TrustHandle`], so configs built on it present
//! the newest SVID and verify against the newest bundles on the next handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{X509Source, X509Svid};

use mtls_identity::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::source::{IdentityHandle, IdentitySource, TrustHandle, TrustSource};
use crate::trust::TrustBundle;

/// The environment variable naming the Workload API endpoint (`unix:///run/agent.sock`).
pub const SPIFFE_ENDPOINT_SOCKET: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Default bound on waiting for the first SVID.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Our X509-SVID and the trust bundles, streamed from a SPIFFE Workload API (SPIRE agent,
/// `mtls-agent`, ...). An [`IdentitySource`] and a [`TrustSource`]: pass clones of it to
/// [`ServerConfigBuilder`](crate::ServerConfigBuilder) /
/// [`ClientConfigBuilder`](crate::ClientConfigBuilder). Clones share one stream; the
/// stream stops when the last clone is dropped.
///
/// The trust bundle is a SPIFFE bundle set ([`TrustBundle::spiffe`]): each trust domain
/// the agent sends (ours and federated ones) with its own roots.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use mtls_core::{Authorize, ServerConfigBuilder, WorkloadApiSource};
/// // SPIFFE_ENDPOINT_SOCKET=unix:///run/mtls-agent/workload.sock, or .endpoint(...)
/// let source = WorkloadApiSource::builder().connect().await?;
/// let config = ServerConfigBuilder::new(source.clone(), source.clone())
///     .authorize(Authorize::member_of("example.org".parse()?))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WorkloadApiSource {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    identity: IdentityHandle,
    trust: TrustHandle,
    source: X509Source,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Configures and connects a [`WorkloadApiSource`].
#[derive(Debug, Clone)]
pub struct WorkloadApiSourceBuilder {
    endpoint: Option<String>,
    spiffe_id: Option<SpiffeId>,
    startup_timeout: Duration,
}

/// Picks the SVID with a given SPIFFE ID out of all the caller is entitled to.
#[derive(Debug)]
struct ById(SpiffeId);

impl spiffe::x509_source::SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids.iter().position(|s| &self.0 == s.spiffe_id())
    }
}

impl WorkloadApiSource {
    /// A builder: endpoint from `SPIFFE_ENDPOINT_SOCKET`, start-up timeout
    /// [`DEFAULT_STARTUP_TIMEOUT`].
    pub fn builder() -> WorkloadApiSourceBuilder {
        WorkloadApiSourceBuilder {
            endpoint: None,
            spiffe_id: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    /// The endpoint this source reads from (`unix:///...`).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The identity handle fed by the stream (clone it to share; `.source()` for its
    /// [`Source`](crate::Source)).
    pub fn identity(&self) -> &IdentityHandle {
        &self.inner.identity
    }

    /// The trust handle fed by the stream.
    pub fn trust(&self) -> &TrustHandle {
        &self.inner.trust
    }

    /// The underlying `spiffe::X509Source` (health, raw SVIDs and bundles).
    pub fn x509_source(&self) -> &X509Source {
        &self.inner.source
    }
}

impl WorkloadApiSourceBuilder {
    /// The Workload API endpoint: `unix:///path`, `unix:/path`, `tcp://ip:port`, or a bare
    /// filesystem path (taken as a Unix socket). Default: `$SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Use the SVID with this SPIFFE ID when the agent grants several (default: the first,
    /// which the Workload API calls the default SVID).
    pub fn spiffe_id(mut self, id: SpiffeId) -> Self {
        self.spiffe_id = Some(id);
        self
    }

    /// How long [`connect`](Self::connect) waits for the first SVID and bundle.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Connects, waits (bounded) for the first X509-SVID and bundle, and keeps following
    /// updates in a background task. Needs a tokio runtime.
    ///
    /// Fails with [`Error::WorkloadApi`] naming the endpoint when the variable is unset, the
    /// endpoint is malformed, or no SVID arrived in time (the message says whether the
    /// socket file exists and what the last attempt reported).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = mtls_core::WorkloadApiSource::builder()
    ///     .endpoint("/nonexistent/agent.sock")
    ///     .startup_timeout(std::time::Duration::from_millis(200))
    ///     .connect()
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/agent.sock"), "{err}");
    /// # }
    /// ```
    pub async fn connect(self) -> Result<WorkloadApiSource> {
        let address = WorkloadApiEndpoint::resolve(self.endpoint.as_deref())?;
        let endpoint = address.as_str().to_owned();
        let mut builder = X509Source::builder()
            .endpoint(&endpoint)
            .initial_sync_timeout(self.startup_timeout)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(5));
        if let Some(id) = &self.spiffe_id {
            builder = builder.picker(ById(id.clone()));
        }
        let built = builder.build().await;
        let source = match built {
            Ok(s) => s,
            Err(e) => {
                let state = address.socket_state("SVID");
                let which = self
                    .spiffe_id
                    .as_ref()
                    .map(|id| format!(" for {id}"))
                    .unwrap_or_default();
                return Err(Error::WorkloadApi {
                    endpoint,
                    reason: format!(
                        "no X509-SVID{which} within {:?}: {}{state}",
                        self.startup_timeout,
                        error_chain(&e)
                    ),
                });
            }
        };
        let (identity, trust) = snapshot(&source).map_err(|reason| Error::WorkloadApi {
            endpoint: endpoint.clone(),
            reason,
        })?;
        let identity = IdentityHandle::new(identity);
        let trust = TrustHandle::new(trust);
        tracing::info!(%endpoint, spiffe_id = ?identity.current().spiffe_id(),
            serial = %identity.current().serial(), "X509-SVID from the Workload API");
        let task = tokio::spawn(follow(
            source.clone(),
            identity.clone(),
            trust.clone(),
            endpoint.clone(),
        ));
        Ok(WorkloadApiSource {
            inner: Arc::new(Inner {
                endpoint,
                identity,
                trust,
                source,
                task,
            }),
        })
    }
}

/// Mirrors every update of `source` into the handles.
async fn follow(
    source: X509Source,
    identity: IdentityHandle,
    trust: TrustHandle,
    endpoint: String,
) {
    let mut updates = source.updated();
    loop {
        if let Err(e) = updates.changed().await {
            tracing::warn!(%endpoint, error = %e, "Workload API updates ended; keeping the last SVID");
            return;
        }
        match snapshot(&source) {
            Ok((id, bundle)) => {
                let old = identity.current();
                if old.cert_chain() != id.cert_chain() {
                    identity.rotate(id);
                }
                trust.rotate(bundle);
            }
            Err(reason) => {
                tracing::warn!(%endpoint, %reason, "unusable Workload API update; keeping the last SVID");
            }
        }
    }
}

fn snapshot(source: &X509Source) -> std::result::Result<(Identity, TrustBundle), String> {
    let svid = source.svid().map_err(|e| error_chain(&e))?;
    let identity = identity_from_svid(&svid)?;
    let bundles = source.bundle_set().map_err(|e| error_chain(&e))?;
    let mut trust = TrustBundle::spiffe();
    for (td, bundle) in bundles.iter() {
        let certs = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()));
        let td = TrustDomain::try_from(td.clone()).map_err(|e| e.to_string())?;
        trust = trust
            .add_domain_der(td.clone(), certs)
            .map_err(|e| format!("bundle of {td}: {e}"))?;
    }
    Ok((identity, trust))
}

fn identity_from_svid(svid: &X509Svid) -> std::result::Result<Identity, String> {
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    Identity::from_der(chain, key).map_err(|e| format!("X509-SVID {}: {e}", svid.spiffe_id()))
}

/// `unix:///p`, `unix:/p`, `tcp://...` stay; a bare path becomes `unix://<abs path>`.
/// A Workload API address as the `spiffe` crate takes it: what the caller gave, or
/// `$SPIFFE_ENDPOINT_SOCKET`; a bare filesystem path becomes `unix://<absolute path>`.
/// Every Workload API client here (X509-SVIDs, JWT-SVIDs) resolves its address this way.
///
/// ```
/// use mtls_core::WorkloadApiEndpoint;
///
/// let e = WorkloadApiEndpoint::resolve(Some("/run/agent.sock"))?;
/// assert_eq!(e.as_str(), "unix:///run/agent.sock");
/// assert_eq!(WorkloadApiEndpoint::resolve(Some("tcp://127.0.0.1:8081"))?.as_str(), "tcp://127.0.0.1:8081");
/// assert!(e.socket_state("SVID").contains("/run/agent.sock does not exist"));
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadApiEndpoint(String);

impl WorkloadApiEndpoint {
    /// `given`, else `$SPIFFE_ENDPOINT_SOCKET`; [`Error::WorkloadApi`] naming the variable
    /// when neither is set.
    pub fn resolve(given: Option<&str>) -> Result<Self> {
        let raw = match given {
            Some(e) => e.to_owned(),
            None => match std::env::var(SPIFFE_ENDPOINT_SOCKET) {
                Ok(e) if !e.trim().is_empty() => e.trim().to_owned(),
                _ => {
                    return Err(Error::WorkloadApi {
                        endpoint: format!("${SPIFFE_ENDPOINT_SOCKET}"),
                        reason: format!(
                            "{SPIFFE_ENDPOINT_SOCKET} is not set; set it to unix:///path/to/agent.sock or pass an endpoint"
                        ),
                    });
                }
            },
        };
        if raw.contains("://") || raw.starts_with("unix:") {
            return Ok(Self(raw));
        }
        let path = Path::new(&raw);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        Ok(Self(format!("unix://{}", abs.display())))
    }

    /// The address, e.g. `unix:///run/agent.sock`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unix socket's path, for a `unix:` address.
    pub fn socket_path(&self) -> Option<PathBuf> {
        let rest = self.0.strip_prefix("unix:")?;
        Some(PathBuf::from(rest.strip_prefix("//").unwrap_or(rest)))
    }

    /// For error messages: `"; socket <path> does not exist"` or `"; socket <path> exists
    /// but gave no <what>"` (empty for a non-Unix address).
    pub fn socket_state(&self, what: &str) -> String {
        match self.socket_path() {
            Some(p) if !p.exists() => format!("; socket {} does not exist", p.display()),
            Some(p) => format!("; socket {} exists but gave no {what}", p.display()),
            None => String::new(),
        }
    }
}

impl fmt::Display for WorkloadApiEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl IdentitySource for WorkloadApiSource {
    fn current(&self) -> Arc<Identity> {
        self.inner.identity.current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<Identity>>> {
        self.inner.identity.subscribe()
    }
}

impl TrustSource for WorkloadApiSource {
    fn current(&self) -> Arc<TrustBundle> {
        self.inner.trust.current()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        self.inner.trust.subscribe()
    }
}

impl fmt::Debug for WorkloadApiSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadApiSource")
            .field("endpoint", &self.inner.endpoint)
            .field("identity", &self.inner.identity)
            .field("trust", &self.inner.trust)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        let e = |s: &str| WorkloadApiEndpoint::resolve(Some(s)).unwrap();
        assert_eq!(e("/run/a.sock").as_str(), "unix:///run/a.sock");
        assert_eq!(e("unix:///run/a.sock").as_str(), "unix:///run/a.sock");
        assert_eq!(e("tcp://127.0.0.1:1").as_str(), "tcp://127.0.0.1:1");
        let relative = e("run/a.sock");
        assert!(relative.as_str().starts_with("unix:///"), "{relative}");
        assert!(relative.as_str().ends_with("/run/a.sock"), "{relative}");
        assert_eq!(
            e("unix:///run/a.sock").socket_path().as_deref(),
            Some(Path::new("/run/a.sock"))
        );
        assert_eq!(
            e("unix:/run/a.sock").socket_path().as_deref(),
            Some(Path::new("/run/a.sock"))
        );
        assert_eq!(e("tcp://127.0.0.1:1").socket_path(), None);
        assert_eq!(e("tcp://127.0.0.1:1").socket_state("SVID"), "");
    }
}
