//! SPIFFE federation (SPIFFE_Federation.md): fetching foreign trust domains' bundles from
//! their bundle endpoints, and a [`TrustSource`] that keeps them current.
//!
//! The HTTP client is hyper's HTTP/1.1 client over tokio-rustls with a config from
//! [`ClientConfigBuilder`](crate::ClientConfigBuilder): no second TLS stack, no reqwest.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;
use tokio::sync::watch;

use crate::authorizer::Authorize;
use crate::bundle::{BundleSet, DEFAULT_REFRESH_HINT, SpiffeBundle};
use crate::client::ClientConfigBuilder;
use crate::error::{Error, Result};
use crate::source::{Cell, TrustSource};
use crate::trust::TrustBundle;
use mtls_identity::source::Publisher;
use mtls_identity::{SpiffeId, TrustDomain};

/// The largest bundle document we read (SPIRE's bundles are a few KB).
pub const MAX_BUNDLE_SIZE: usize = 1 << 20;

/// How the client authenticates a bundle endpoint (SPIFFE_Federation.md §5).
#[derive(Clone)]
#[non_exhaustive]
pub enum EndpointProfile {
    /// `https_web`: the server proves the URL's host name with a certificate chaining to
    /// `roots` (WebPKI server authentication); the client presents no certificate.
    HttpsWeb {
        /// The CAs the endpoint's certificate chains to.
        roots: Arc<TrustBundle>,
    },
    /// `https_spiffe`: the server must present the X509-SVID `endpoint_id`, verified
    /// against the bundle of that ID's trust domain: `initial` until the first fetch, then
    /// the last bundle fetched.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint must present.
        endpoint_id: SpiffeId,
        /// The bundle to start from (obtained out of band).
        initial: SpiffeBundle,
    },
}

impl fmt::Debug for EndpointProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HttpsWeb { roots } => f.debug_struct("HttpsWeb").field("roots", roots).finish(),
            Self::HttpsSpiffe {
                endpoint_id,
                initial,
            } => f
                .debug_struct("HttpsSpiffe")
                .field("endpoint_id", endpoint_id)
                .field("initial", initial)
                .finish(),
        }
    }
}

/// One foreign trust domain's bundle endpoint: its URL and how it is authenticated.
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// use mtls_core::{BundleEndpoint, SpiffeBundle};
/// let initial = SpiffeBundle::new("other.org".parse()?).add_x509_authorities_pem(ca.cert_pem())?;
/// let endpoint = BundleEndpoint::https_spiffe(
///     "other.org".parse()?,
///     "https://127.0.0.1:8443/bundle",
///     "spiffe://other.org/spire/server".parse()?,
///     initial,
/// )?;
/// assert_eq!(endpoint.trust_domain().as_str(), "other.org");
/// assert!(BundleEndpoint::https_web("other.org".parse()?, "http://x/b", ca.cert_pem()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BundleEndpoint {
    trust_domain: TrustDomain,
    url: http::Uri,
    authority: (String, u16),
    profile: EndpointProfile,
}

impl BundleEndpoint {
    /// An `https_web` endpoint: the server's certificate must chain to `roots_pem` and be
    /// valid for the URL's host.
    pub fn https_web(
        trust_domain: TrustDomain,
        url: &str,
        roots_pem: impl AsRef<[u8]>,
    ) -> Result<Self> {
        let roots = Arc::new(TrustBundle::from_pem(roots_pem)?);
        Self::new(trust_domain, url, EndpointProfile::HttpsWeb { roots })
    }

    /// An `https_spiffe` endpoint: the server must present `endpoint_id`, verified against
    /// `initial` (the bundle of `endpoint_id`'s trust domain) until a bundle is fetched.
    pub fn https_spiffe(
        trust_domain: TrustDomain,
        url: &str,
        endpoint_id: SpiffeId,
        initial: SpiffeBundle,
    ) -> Result<Self> {
        if initial.trust_domain() != endpoint_id.trust_domain() {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the initial bundle of {url} must be of the endpoint's trust domain {}, not {}",
                    endpoint_id.trust_domain(),
                    initial.trust_domain()
                ),
            });
        }
        Self::new(
            trust_domain,
            url,
            EndpointProfile::HttpsSpiffe {
                endpoint_id,
                initial,
            },
        )
    }

    fn new(trust_domain: TrustDomain, url: &str, profile: EndpointProfile) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConfig {
            reason: format!("bundle endpoint URL {url:?}: {why}"),
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("expected an https:// URL"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        Ok(Self {
            trust_domain,
            url: uri,
            authority: (host, port),
            profile,
        })
    }

    /// The trust domain whose bundle this endpoint serves.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// The profile.
    pub fn profile(&self) -> &EndpointProfile {
        &self.profile
    }

    /// Fetches the bundle once. For `https_spiffe`, the server is verified against
    /// `endpoint_bundle` (the current bundle of the endpoint ID's trust domain), or the
    /// initial bundle when `None`.
    pub async fn fetch(
        &self,
        endpoint_bundle: Option<&SpiffeBundle>,
        timeout: Duration,
    ) -> Result<SpiffeBundle> {
        let failed = |reason: String| Error::BundleFetch {
            url: self.url(),
            reason,
        };
        let config = match &self.profile {
            EndpointProfile::HttpsWeb { roots } => {
                ClientConfigBuilder::without_identity(Arc::clone(roots))
            }
            EndpointProfile::HttpsSpiffe {
                endpoint_id,
                initial,
            } => {
                let bundle = endpoint_bundle.unwrap_or(initial);
                let trust = TrustBundle::spiffe().add_domain_der(
                    bundle.trust_domain().clone(),
                    bundle.x509_authorities().to_vec(),
                )?;
                ClientConfigBuilder::without_identity(Arc::new(trust))
                    .authorize(Authorize::exact(endpoint_id.clone()))
            }
        }
        .alpn_protocols(["http/1.1"])
        .build()?;
        let (host, port) = &self.authority;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| failed(format!("{host:?} is not a valid server name")))?;
        let work = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| failed(format!("cannot connect: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| match Error::from_io(&e) {
                    Some(inner) => failed(format!("the endpoint is refused: {inner}")),
                    None => failed(format!("TLS handshake failed: {e}")),
                })?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| failed(format!("HTTP handshake failed: {e}")))?;
            let driver = tokio::spawn(async move {
                // The connection ends with the response (or the timeout drops it).
                let _ = conn.await;
            });
            let path = self
                .url
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let request = http::Request::get(path)
                .header(http::header::HOST, format!("{host}:{port}"))
                .header(http::header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| failed(format!("cannot build the request: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| failed(format!("request failed: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BUNDLE_SIZE)
                .collect()
                .await
                .map_err(|e| {
                    failed(format!(
                        "reading the body (at most {MAX_BUNDLE_SIZE} bytes): {e}"
                    ))
                })?
                .to_bytes();
            driver.abort();
            if status != http::StatusCode::OK {
                return Err(failed(format!("expected HTTP 200, saw {status}")));
            }
            let text = std::str::from_utf8(&body)
                .map_err(|_| failed("expected a UTF-8 JSON body, saw other bytes".to_owned()))?;
            SpiffeBundle::parse(self.trust_domain.clone(), text)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| failed(format!("no bundle within {}", humanize(timeout))))?
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What a [`FederatedTrustSource`] knows about one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// When a bundle was last fetched (installed or not).
    pub last_success: Option<SystemTime>,
    /// The last failure, if the last attempt failed (the last good bundle stays in use).
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Bundles installed from this endpoint.
    pub installed: u64,
}

struct Shared {
    bundles: Publisher<BundleSet>,
    trust: Cell<TrustBundle>,
    status: Mutex<BTreeMap<TrustDomain, EndpointStatus>>,
}

impl Shared {
    fn bundles(&self) -> Arc<BundleSet> {
        self.bundles.current()
    }

    /// Installs `bundle` if [`BundleSet::insert`] takes it; the trust bundle follows.
    fn offer(&self, bundle: SpiffeBundle) -> Result<bool> {
        let mut result = Ok(false);
        let mut trust = None;
        self.bundles.update_if(|set| {
            let mut next = BundleSet::clone(set);
            result = next.insert(bundle);
            if matches!(result, Ok(true)) {
                trust = Some(next.to_trust_bundle());
                Some(next)
            } else {
                None
            }
        });
        if let Some(trust) = trust {
            self.trust.store(trust?);
        }
        result
    }

    fn status(&self, td: &TrustDomain, edit: impl FnOnce(&mut EndpointStatus)) {
        let mut map = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        edit(map.entry(td.clone()).or_default());
    }
}

/// A [`TrustSource`] over our own bundle(s) and foreign trust domains' bundles fetched from
/// their bundle endpoints, each kept current in the background (SPIFFE_Federation.md §4):
///
/// - polled at the bundle's `spiffe_refresh_hint` ([`DEFAULT_REFRESH_HINT`], 5 min, if
///   unset), never more often than [`min_refresh`](FederationBuilder::min_refresh);
/// - on failure, retried with exponential backoff from
///   [`retry_initial`](FederationBuilder::retry_initial) up to the refresh interval, the
///   **last good bundle kept** (one `warn` per failure state, [`EndpointStatus`] says why);
/// - a fetched bundle replaces the current one only with a `spiffe_sequence` not lower
///   ([`BundleSet::insert`]);
/// - per-domain isolation: an endpoint only ever updates its own trust domain's bundle, and
///   bundles are never merged.
///
/// Needs a tokio runtime ([`FederationBuilder::start`] spawns one task per endpoint; they
/// stop when the source and all its clones are dropped).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// # let (own, initial) = (mtls_core::SpiffeBundle::new("a.org".parse()?), mtls_core::SpiffeBundle::new("b.org".parse()?));
/// use mtls_core::{BundleEndpoint, FederatedTrustSource, TrustSource};
/// let trust = FederatedTrustSource::builder()
///     .local(own)
///     .endpoint(BundleEndpoint::https_spiffe("b.org".parse()?, "https://bundles.b.org:8443",
///         "spiffe://b.org/spire/server".parse()?, initial)?)
///     .start()?;
/// let roots_of_b = trust.current().roots(Some(&"b.org".parse()?)).len();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FederatedTrustSource {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Configures a [`FederatedTrustSource`].
#[derive(Debug)]
pub struct FederationBuilder {
    local: Vec<SpiffeBundle>,
    endpoints: Vec<BundleEndpoint>,
    min_refresh: Duration,
    retry_initial: Duration,
    fetch_timeout: Duration,
}

impl FederatedTrustSource {
    /// A builder: local bundles, endpoints, timings.
    ///
    /// ```
    /// let builder = mtls_core::FederatedTrustSource::builder()
    ///     .min_refresh(std::time::Duration::from_secs(1));
    /// # let _ = builder;
    /// ```
    pub fn builder() -> FederationBuilder {
        FederationBuilder {
            local: Vec::new(),
            endpoints: Vec::new(),
            min_refresh: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(10),
        }
    }

    /// The bundles now, by trust domain (local and federated).
    pub fn bundles(&self) -> Arc<BundleSet> {
        self.shared.bundles()
    }

    /// The [`Source`](crate::Source) of the trust bundle (local and federated roots, each
    /// for its own trust domain). The fetches run as long as this `FederatedTrustSource`
    /// (or a clone) lives; after that the source keeps the last bundle.
    pub fn source(&self) -> crate::Source<TrustBundle> {
        self.shared.trust.source()
    }

    /// A receiver that sees every new bundle set (e.g. to hand federated bundles to
    /// workloads).
    pub fn subscribe_bundles(&self) -> watch::Receiver<Arc<BundleSet>> {
        self.shared.bundles.source().subscribe()
    }

    /// Replaces a local bundle (our own trust domain's, after a CA rotation). The
    /// [`BundleSet::insert`] rules apply.
    pub fn update_local(&self, bundle: SpiffeBundle) -> Result<bool> {
        self.shared.offer(bundle)
    }

    /// The status of the endpoint of `trust_domain`.
    pub fn status(&self, trust_domain: &TrustDomain) -> Option<EndpointStatus> {
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(trust_domain)
            .cloned()
    }
}

impl TrustSource for FederatedTrustSource {
    fn current(&self) -> Arc<TrustBundle> {
        self.shared.trust.load()
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<TrustBundle>>> {
        Some(self.shared.trust.subscribe())
    }
}

impl fmt::Debug for FederatedTrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedTrustSource")
            .field("bundles", &self.bundles())
            .finish()
    }
}

impl FederationBuilder {
    /// Adds a local bundle (our own trust domain's, or any fixed one).
    pub fn local(mut self, bundle: SpiffeBundle) -> Self {
        self.local.push(bundle);
        self
    }

    /// Adds a foreign trust domain's bundle endpoint.
    pub fn endpoint(mut self, endpoint: BundleEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// The shortest interval between two fetches of one endpoint (default 1 s), whatever
    /// the refresh hint says.
    pub fn min_refresh(mut self, every: Duration) -> Self {
        self.min_refresh = every;
        self
    }

    /// The first retry delay after a failure (default 1 s), doubled on each failure in a
    /// row up to the refresh interval.
    pub fn retry_initial(mut self, delay: Duration) -> Self {
        self.retry_initial = delay;
        self
    }

    /// The bound on one fetch: connect, handshake, response (default 10 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Starts one background task per endpoint (the first fetch at once). Until a
    /// foreign domain's first fetch succeeds, an `https_spiffe` endpoint's initial bundle is
    /// its domain's bundle; an `https_web` domain has none. Must run inside a tokio runtime.
    pub fn start(self) -> Result<FederatedTrustSource> {
        let mut set = BundleSet::new();
        for bundle in self.local {
            set.insert(bundle)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for endpoint in &self.endpoints {
            if !seen.insert(endpoint.trust_domain.clone()) {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "two bundle endpoints for trust domain {}",
                        endpoint.trust_domain
                    ),
                });
            }
            if set.get(&endpoint.trust_domain).is_some() {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "trust domain {} is both local and federated",
                        endpoint.trust_domain
                    ),
                });
            }
            if let EndpointProfile::HttpsSpiffe { initial, .. } = &endpoint.profile
                && set.get(initial.trust_domain()).is_none()
            {
                set.insert(initial.clone())?;
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfig {
            reason: "FederatedTrustSource::start needs a tokio runtime".to_owned(),
        })?;
        let shared = Arc::new(Shared {
            trust: Cell::new(set.to_trust_bundle()?),
            bundles: Publisher::new(set),
            status: Mutex::new(BTreeMap::new()),
        });
        let timing = Timing {
            min_refresh: self.min_refresh,
            retry_initial: self.retry_initial,
            fetch_timeout: self.fetch_timeout,
        };
        let tasks = self
            .endpoints
            .into_iter()
            .map(|endpoint| {
                runtime.spawn(watch_endpoint(Arc::downgrade(&shared), endpoint, timing))
            })
            .collect();
        Ok(FederatedTrustSource {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }
}

#[derive(Clone, Copy)]
struct Timing {
    min_refresh: Duration,
    retry_initial: Duration,
    fetch_timeout: Duration,
}

async fn watch_endpoint(shared: std::sync::Weak<Shared>, endpoint: BundleEndpoint, timing: Timing) {
    let td = endpoint.trust_domain.clone();
    let url = endpoint.url();
    let mut failures: u32 = 0;
    let mut warned: Option<String> = None;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let current = shared.bundles();
        let endpoint_bundle = match &endpoint.profile {
            EndpointProfile::HttpsSpiffe { endpoint_id, .. } => {
                current.get(endpoint_id.trust_domain()).cloned()
            }
            EndpointProfile::HttpsWeb { .. } => None,
        };
        let refresh = current
            .get(&td)
            .and_then(SpiffeBundle::refresh_hint)
            .unwrap_or(DEFAULT_REFRESH_HINT)
            .max(timing.min_refresh);
        let outcome = match endpoint
            .fetch(endpoint_bundle.as_ref(), timing.fetch_timeout)
            .await
        {
            Ok(bundle) => {
                let summary = bundle.summary();
                let hint = bundle.refresh_hint();
                shared
                    .offer(bundle)
                    .map(|installed| (installed, summary, hint))
            }
            Err(e) => Err(e),
        };
        let wait = match outcome {
            Ok((installed, summary, hint)) => {
                if installed {
                    tracing::info!(trust_domain = %td, url = %url, bundle = %summary, "federated bundle installed");
                } else {
                    tracing::debug!(trust_domain = %td, url = %url, "federated bundle unchanged");
                }
                if let Some(bad) = warned.take() {
                    tracing::info!(trust_domain = %td, url = %url, was = %bad, "bundle endpoint is good again");
                }
                failures = 0;
                shared.status(&td, |s| {
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                    s.failures = 0;
                    s.installed += u64::from(installed);
                });
                hint.unwrap_or(refresh).max(timing.min_refresh)
            }
            Err(e) => {
                let text = e.to_string();
                failures = failures.saturating_add(1);
                if warned.as_ref() != Some(&text) {
                    tracing::warn!(trust_domain = %td, url = %url, error = %text,
                        "bundle endpoint failed; keeping the last good bundle");
                    warned = Some(text.clone());
                }
                shared.status(&td, |s| {
                    s.last_error = Some(text);
                    s.failures = failures;
                });
                let backoff = timing
                    .retry_initial
                    .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
                backoff.min(refresh)
            }
        };
        drop(shared);
        tokio::time::sleep(wait).await;
    }
}
