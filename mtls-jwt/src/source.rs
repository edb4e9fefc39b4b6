//! Where keys come from: inline JSON, a file (reloaded on change), any [`Source<KeySet>`],
//! a remote URL or OIDC discovery (cached, refreshed in the background, refetched on an
//! unknown `kid`; feature `remote`). Every one of them is a `Source<KeySet>`, the family's
//! rotation model ([`mtls_identity::source`]).

use std::path::PathBuf;
#[cfg(feature = "remote")]
use std::sync::Weak;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
#[cfg(feature = "remote")]
use std::time::Instant;

use arc_swap::ArcSwapOption;
use mtls_identity::source::{FilePoller, Publisher, ReadError, Source};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::jwk::KeySet;

/// Where a validator gets its JWKS.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{JwksSource, FileJwks};
///
/// let inline = JwksSource::inline(r#"{"keys": []}"#);
/// let file = JwksSource::from(FileJwks::new("/etc/mesh/jwks.json").poll_interval(Duration::from_secs(5)));
/// # let _ = (inline, file);
/// // With the `remote` feature:
/// # #[cfg(feature = "remote")] {
/// use mtls_jwt::RemoteJwks;
/// let remote = JwksSource::from(
///     RemoteJwks::new("https://issuer.example/.well-known/jwks.json")
///         .cache_duration(Duration::from_secs(300))
///         .refetch_min_interval(Duration::from_secs(10)),
/// );
/// let discovered = JwksSource::from(RemoteJwks::oidc_discovery("https://accounts.example"));
/// # let _ = (remote, discovered);
/// # }
/// ```
#[derive(Debug)]
pub struct JwksSource(pub(crate) Kind);

#[derive(Debug)]
pub(crate) enum Kind {
    Inline(String),
    KeySet(KeySet),
    Source(Source<KeySet>),
    File(FileJwks),
    #[cfg(feature = "remote")]
    Remote(RemoteJwks),
}

impl JwksSource {
    /// A JWKS document given as a string (parsed when the validator is built).
    pub fn inline(json: impl Into<String>) -> Self {
        Self(Kind::Inline(json.into()))
    }

    /// An already parsed key set.
    pub fn key_set(set: KeySet) -> Self {
        Self(Kind::KeySet(set))
    }

    /// Keys from any [`Source<KeySet>`]: a [`Publisher`] the application feeds (SPIFFE
    /// Workload API JWT bundles, a CA rotation, tests), or another validator's
    /// [`Validator::jwks`](crate::Validator::jwks). Validation reads `current()` on every
    /// token, so a published key set counts from the next token on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), mtls_jwt::Error> {
    /// use mtls_identity::source::Publisher;
    /// use mtls_jwt::{Algorithm, JwksSource, KeySet, SigningKey, TokenSpec, Validator};
    /// let (old, new) = (SigningKey::generate(Algorithm::ES256)?, SigningKey::generate(Algorithm::ES256)?);
    /// let keys = Publisher::new(KeySet::from_json(&mtls_jwt::jwks_json([old.jwk(None)]))?);
    /// let validator = Validator::builder().jwks(JwksSource::source(keys.source())).build()?;
    /// let token = new.mint(&TokenSpec::new(std::time::Duration::from_secs(60)))?;
    /// assert!(validator.validate(&token).await.is_err());
    /// keys.publish(KeySet::from_json(&mtls_jwt::jwks_json([new.jwk(None)]))?);
    /// validator.validate(&token).await?;
    /// # Ok(()) }
    /// ```
    pub fn source(keys: Source<KeySet>) -> Self {
        Self(Kind::Source(keys))
    }

    /// A JWKS file, reloaded when it changes (see [`FileJwks`]).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        FileJwks::new(path).into()
    }

    /// A JWKS URL with the default cache and refetch settings (see [`RemoteJwks`]).
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub fn remote(url: impl Into<String>) -> Self {
        RemoteJwks::new(url).into()
    }
}

/// A JWKS file, polled for changes by the family's one [`FilePoller`] (its contents
/// compared, not its modification time; a small thread, no runtime needed); a file that
/// stops parsing keeps the last good keys, with one warning naming the file and the error.
#[derive(Debug, Clone)]
pub struct FileJwks {
    path: PathBuf,
    poll_interval: Duration,
}

impl FileJwks {
    /// The file at `path`, checked every second.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// How often the file's contents are read and compared (default 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }
}

impl From<FileJwks> for JwksSource {
    fn from(f: FileJwks) -> Self {
        Self(Kind::File(f))
    }
}

#[cfg(feature = "remote")]
#[derive(Debug, Clone)]
enum Location {
    Jwks(String),
    Discovery(String),
}

/// A remote JWKS over HTTPS: fetched in the background every `cache_duration` (default 10 min,
/// as Envoy), refetched when a token names an unknown `kid` (at most once per
/// `refetch_min_interval`, default 10 s), last good keys kept when the server fails.
/// Validation never waits for a fetch when the token's key is known.
///
/// What a JWKS server can make us do is bounded:
/// - **body size**: at most [`RemoteJwks::max_body_size`] bytes are read (default 1 MiB),
///   whatever `Content-Length` says or does not say (chunked bodies included); past the
///   limit reading stops and the fetch fails, naming the limit and the URL;
/// - **redirects**: not followed by default (as Envoy, which treats any non-200 as a failed
///   fetch): a 3xx fails the fetch, naming its `Location`. [`RemoteJwks::follow_redirects`]
///   follows hops that pass the URL policy, never from https to plain http;
/// - **time**: one fetch takes at most [`RemoteJwks::fetch_timeout`]; a token naming an
///   unknown `kid` waits for a refetch only if it started that refetch (at most one per
///   `refetch_min_interval`), and then at most [`RemoteJwks::miss_wait`] — never for a fetch
///   already in flight, so a hanging server holds no request (but in the start-up window:
///   until the first fetch ends, at most `first_fetch_wait` after the build, a token waits
///   for it; see [`crate::ValidatorBuilder::first_fetch_wait`]);
/// - **retries**: a failed fetch is retried after [`RemoteJwks::retry_interval`] (default
///   1 s, Envoy's `failed_refetch_duration`), growing by a quarter per further failure up to
///   [`RemoteJwks::retry_max`] (default 10 s), each delay jittered down by up to a quarter.
///
/// Plain `http://` is accepted only for loopback hosts (tests, local sidecars). Requests
/// carry `User-Agent: mtls-jwt/<version>`.
///
/// Feature `remote` (off by default): it brings `reqwest` (rustls with aws-lc-rs, HTTP/2)
/// and with it hyper, hyper-util, tower and their dependencies.
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    location: Location,
    cache_duration: Duration,
    refetch_min_interval: Duration,
    fetch_timeout: Duration,
    miss_wait: Duration,
    retry_interval: Duration,
    retry_max: Duration,
    max_body: usize,
    follow_redirects: bool,
    client: Option<reqwest::Client>,
}

/// `User-Agent` of every fetch made with our client.
#[cfg(feature = "remote")]
const USER_AGENT: &str = concat!("mtls-jwt/", env!("CARGO_PKG_VERSION"));

/// Redirect hops a fetch follows at most (with [`RemoteJwks::follow_redirects`]).
#[cfg(feature = "remote")]
const MAX_REDIRECTS: usize = 10;

#[cfg(feature = "remote")]
impl RemoteJwks {
    /// The JWKS at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_location(Location::Jwks(url.into()))
    }

    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    pub fn oidc_discovery(issuer: impl Into<String>) -> Self {
        Self::with_location(Location::Discovery(issuer.into()))
    }

    fn with_location(location: Location) -> Self {
        Self {
            location,
            cache_duration: Duration::from_secs(600),
            refetch_min_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
            miss_wait: Duration::from_secs(1),
            retry_interval: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            max_body: 1 << 20,
            follow_redirects: false,
            client: None,
        }
    }

    /// How long fetched keys are used before the background refresh (default 10 min).
    pub fn cache_duration(mut self, d: Duration) -> Self {
        self.cache_duration = d;
        self
    }

    /// The least time between two refetches caused by unknown `kid`s (default 10 s).
    pub fn refetch_min_interval(mut self, d: Duration) -> Self {
        self.refetch_min_interval = d;
        self
    }

    /// Timeout of one fetch, discovery document included (default 10 s).
    pub fn fetch_timeout(mut self, d: Duration) -> Self {
        self.fetch_timeout = d;
        self
    }

    /// How long a token naming an unknown `kid` waits for the refetch it started (default
    /// 1 s). The fetch itself goes on (up to `fetch_timeout`) and its keys serve later tokens.
    pub fn miss_wait(mut self, d: Duration) -> Self {
        self.miss_wait = d;
        self
    }

    /// The delay before retrying a failed fetch (default 1 s, as Envoy's
    /// `failed_refetch_duration`); each further failure makes it a quarter longer, up to
    /// [`RemoteJwks::retry_max`].
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    /// The longest delay between retries of a failing fetch (default 10 s).
    pub fn retry_max(mut self, d: Duration) -> Self {
        self.retry_max = d;
        self
    }

    /// The largest response body read, in bytes (default 1 MiB); a longer one fails the fetch
    /// as soon as the limit is passed, without reading further.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Follows redirects (default: off, as Envoy), at most 10 hops, each checked against the
    /// URL policy before it is made and never from https to plain http
    /// ([`RemoteJwks::redirect_policy`]). Applies to our client, not to one given with
    /// [`RemoteJwks::http_client`].
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.follow_redirects = follow;
        self
    }

    /// Uses this HTTP client (e.g. one trusting a private CA): start from
    /// [`RemoteJwks::client_builder`] to keep our defaults (no redirects, the User-Agent).
    ///
    /// Whatever the client does, keys from a response whose final URL the policy refuses
    /// (or that went from https to plain http) are not trusted.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// A client builder with our defaults: rustls, redirects off, `User-Agent:
    /// mtls-jwt/<version>`, a 10 s connect timeout. Add a private CA and give the client to
    /// [`RemoteJwks::http_client`].
    ///
    /// ```
    /// # let ca_pem = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256)?.public_pem();
    /// # let _ = ca_pem;
    /// let client = mtls_jwt::RemoteJwks::client_builder()
    ///     // .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
    ///     .build()?;
    /// let source = mtls_jwt::RemoteJwks::new("https://issuer.example/jwks").http_client(client);
    /// # let _ = source;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
    }

    /// The redirect policy of [`RemoteJwks::follow_redirects`]: at most 10 hops, each one
    /// checked against the URL policy (https, or http to loopback only) before it is made,
    /// and none from https to plain http. An allowed URL answering `302` to
    /// `http://elsewhere/` gets its fetch refused, naming the hop.
    ///
    /// ```
    /// let client = mtls_jwt::RemoteJwks::client_builder()
    ///     .redirect(mtls_jwt::RemoteJwks::redirect_policy())
    ///     .build()?;
    /// let source = mtls_jwt::RemoteJwks::new("https://issuer.example/jwks").http_client(client);
    /// # let _ = source;
    /// # Ok::<(), reqwest::Error>(())
    /// ```
    pub fn redirect_policy() -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
            match check_hop(attempt.url().as_str(), from_https) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(format!("redirect refused: {e}")),
            }
        })
    }

    fn name(&self) -> &str {
        match &self.location {
            Location::Jwks(u) | Location::Discovery(u) => u,
        }
    }

    /// The client to fetch with: the caller's, or ours with this source's settings.
    fn client(&self) -> Result<reqwest::Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let policy = if self.follow_redirects {
            Self::redirect_policy()
        } else {
            reqwest::redirect::Policy::none()
        };
        Self::client_builder()
            .connect_timeout(self.fetch_timeout)
            .redirect(policy)
            .build()
            .map_err(|e| Error::Config {
                reason: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })
    }

    /// The delay before the next attempt after `failures` consecutive failed fetches.
    fn retry_delay(&self, failures: u32) -> Duration {
        let growth = 1.25f64.powi(i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX));
        // Jitter: 75–100 % of the delay, so replicas that failed together spread out.
        let mut byte = [0u8; 1];
        let jitter = match aws_lc_rs::rand::fill(&mut byte) {
            Ok(()) => f64::from(byte[0]) / 255.0,
            Err(_) => 0.5,
        };
        let secs = (self.retry_interval.as_secs_f64() * growth).min(self.retry_max.as_secs_f64());
        Duration::try_from_secs_f64(secs * (1.0 - 0.25 * jitter)).unwrap_or(self.retry_max)
    }
}

#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
impl From<RemoteJwks> for JwksSource {
    fn from(r: RemoteJwks) -> Self {
        Self(Kind::Remote(r))
    }
}

/// The keys in use, with a generation that changes whenever they do.
pub(crate) struct Loaded {
    pub(crate) set: Arc<KeySet>,
    pub(crate) generation: u64,
}

#[cfg(feature = "remote")]
struct Remote {
    config: RemoteJwks,
    client: reqwest::Client,
    /// Held by the one fetch in flight. Owned guards let a fetch a token started outlive
    /// the token's wait.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// Counts finished fetches (good or failed): what a request waiting for a fetch watches.
    fetched: watch::Sender<u64>,
    /// When the source was built: the start of the `first_fetch_wait` window.
    started: Instant,
    last_miss_fetch: Mutex<Option<Instant>>,
    last_success: Mutex<Option<Instant>>,
    jwks_uri: Mutex<Option<String>>,
}

#[cfg(feature = "remote")]
impl Remote {
    fn new(config: RemoteJwks) -> Result<Self> {
        Ok(Self {
            client: config.client()?,
            config,
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            fetched: watch::channel(0).0,
            started: Instant::now(),
            last_miss_fetch: Mutex::new(None),
            last_success: Mutex::new(None),
            jwks_uri: Mutex::new(None),
        })
    }

    /// True if a miss may not refetch now (one did less than `refetch_min_interval` ago).
    fn miss_rate_limited(&self) -> bool {
        self.last_miss_fetch.lock().map_or(true, |last| {
            last.is_some_and(|at| at.elapsed() < self.config.refetch_min_interval)
        })
    }

    /// Takes the refetch slot of the interval; false if another miss took it first.
    fn take_miss_slot(&self) -> bool {
        let Ok(mut last) = self.last_miss_fetch.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < self.config.refetch_min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn fresh(&self) -> Option<Duration> {
        let at = self.last_success.lock().ok().and_then(|t| *t)?;
        self.config.cache_duration.checked_sub(at.elapsed())
    }
}

/// Without the `remote` feature there is no remote source: a store's `remote` is `None`.
#[cfg(not(feature = "remote"))]
enum Remote {}

/// Follows a [`Source<KeySet>`] (fixed, a file poller's, the caller's, or the remote
/// fetches' publisher) and stamps each new key set with a generation (the token cache is
/// keyed by it).
pub(crate) struct KeyStore {
    /// The keys as their source has them now.
    keys: Source<KeySet>,
    /// Where remote fetches publish (`keys` is its source).
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    publisher: Option<Publisher<KeySet>>,
    /// `keys` as validation uses them; `None` until a remote source's first fetch.
    current: ArcSwapOption<Loaded>,
    /// Serializes generation steps.
    follow: Mutex<()>,
    changed: watch::Sender<u64>,
    name: String,
    remote: Option<Remote>,
    last_error: Mutex<Option<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for KeyStore {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl KeyStore {
    pub(crate) fn start(source: JwksSource) -> Result<Arc<Self>> {
        let (changed, _) = watch::channel(0);
        let new = |name: String, keys: Source<KeySet>, publisher, remote| Self {
            keys,
            publisher,
            current: ArcSwapOption::empty(),
            follow: Mutex::new(()),
            changed,
            name,
            remote,
            last_error: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        };
        let followed = |store: Self| {
            let store = Arc::new(store);
            store.follow(store.keys.current());
            store
        };
        match source.0 {
            Kind::Inline(json) => {
                let keys = Source::fixed(KeySet::from_json(&json)?);
                Ok(followed(new("inline JWKS".into(), keys, None, None)))
            }
            Kind::KeySet(set) => Ok(followed(new(
                "key set".into(),
                Source::fixed(set),
                None,
                None,
            ))),
            Kind::Source(keys) => Ok(followed(new("key source".into(), keys, None, None))),
            Kind::File(file) => {
                let name = file.path.display().to_string();
                let path = file.path.clone();
                let poller = FilePoller::builder("JWKS", [&file.path], move |c: &[Vec<u8>]| {
                    parse_file(&path, c)
                })
                .interval(file.poll_interval)
                .start()?;
                Ok(followed(new(name, poller.source(), None, None)))
            }
            #[cfg(feature = "remote")]
            Kind::Remote(config) => {
                let runtime = runtime("fetching a remote JWKS")?;
                check_url(config.name())?;
                let name = config.name().to_owned();
                let remote = Remote::new(config)?;
                // The first fetch holds the lock from now on: a validation arriving before
                // it runs waits for it rather than starting another.
                let first = remote.fetch_lock.clone().try_lock_owned().ok();
                let publisher = Publisher::new(KeySet::empty());
                let store = Arc::new(new(name, publisher.source(), Some(publisher), Some(remote)));
                let task = runtime.spawn(refresh_remote(Arc::downgrade(&store), first));
                store.add_task(task);
                Ok(store)
            }
        }
    }

    /// The key source validation follows.
    pub(crate) fn source(&self) -> Source<KeySet> {
        self.keys.clone()
    }

    #[cfg(feature = "remote")]
    fn add_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// The keys in use (`None` before a remote source's first successful fetch): the
    /// source's current key set, with a new generation if it is not the one seen last.
    pub(crate) fn load(&self) -> Option<Arc<Loaded>> {
        let loaded = self.current.load_full();
        if loaded.is_none() && self.remote.is_some() {
            return None;
        }
        let now = self.keys.current();
        match loaded {
            Some(l) if Arc::ptr_eq(&l.set, &now) => Some(l),
            _ => Some(self.follow(now)),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.load().map_or(0, |l| l.generation)
    }

    /// Puts `set` (the source's current one) in use: a new generation unless its document
    /// equals the one in use. Holding the last `Arc` in `current` keeps its address from
    /// being reused, so "same pointer" means "same key set".
    fn follow(&self, set: Arc<KeySet>) -> Arc<Loaded> {
        let _step = self.follow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        if let Some(cur) = &current {
            if Arc::ptr_eq(&cur.set, &set) {
                return Arc::clone(cur);
            }
            if cur.set.document() == set.document() {
                let same = Arc::new(Loaded {
                    set,
                    generation: cur.generation,
                });
                self.current.store(Some(Arc::clone(&same)));
                return same;
            }
        }
        let generation = current.as_ref().map_or(0, |l| l.generation) + 1;
        tracing::info!(source = %self.name, generation, keys = set.len(), "JWKS loaded");
        let (usable, skipped) = set.usable_and_skipped();
        crate::metrics::jwks_keys(&self.name, usable, skipped);
        let loaded = Arc::new(Loaded { set, generation });
        self.current.store(Some(Arc::clone(&loaded)));
        self.changed.send_replace(generation);
        loaded
    }

    /// Publishes fetched keys (remote sources); true if the keys changed.
    #[cfg(feature = "remote")]
    fn store(&self, set: KeySet) -> bool {
        let before = self.current.load().as_ref().map(|l| l.generation);
        if let Some(publisher) = &self.publisher {
            publisher.publish(set);
        }
        let after = self.follow(self.keys.current()).generation;
        before != Some(after)
    }

    #[cfg(feature = "remote")]
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = e;
        }
    }

    /// The error to give when there are no keys yet.
    pub(crate) fn not_loaded(&self) -> Error {
        let reason = self
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "no JWKS fetched yet".into());
        Error::JwksFetchFailed {
            source_name: self.name.clone(),
            reason,
        }
    }

    pub(crate) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Waits (at most `timeout`) until keys are loaded and, for a remote source, the fetch
    /// that loaded them has finished; true if keys are loaded.
    pub(crate) async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut keys = self.changed.subscribe();
        let loaded = async {
            let _ = keys.wait_for(|g| *g > 0).await;
            #[cfg(feature = "remote")]
            if let Some(remote) = &self.remote {
                let mut fetched = remote.fetched.subscribe();
                let _ = fetched.wait_for(|n| *n > 0).await;
            }
        };
        let _ = tokio::time::timeout(timeout, loaded).await;
        self.generation() > 0
    }

    /// After a key miss against generation `seen` (0: no keys yet): a refetch, never
    /// queued behind another. A miss refetches at most once per `refetch_min_interval`
    /// (checked first, before anything else) and only when no fetch is in flight, and
    /// waits for its own fetch at most `miss_wait`. The one exception is start-up: until
    /// the first fetch has ended, and at most `first_fetch_wait` after the source was
    /// built, a token without keys waits for that fetch (there is nothing to answer it
    /// with yet). After that, a hanging server holds no token. True if the keys changed
    /// since `seen`.
    #[cfg(feature = "remote")]
    pub(crate) async fn refetch_for_miss(
        self: &Arc<Self>,
        seen: u64,
        first_fetch_wait: Duration,
    ) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        let no_keys = seen == 0;
        // Subscribed before looking at anything: a fetch finishing in between still counts.
        let mut finished = remote.fetched.subscribe();
        let start_up = if no_keys && *finished.borrow() == 0 {
            (remote.started + first_fetch_wait)
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
        } else {
            None
        };
        if start_up.is_none() && remote.miss_rate_limited() {
            tracing::debug!(source = %self.name, no_keys, "key miss: refetch rate-limited");
            return self.generation() != seen;
        }
        let wait = match remote.fetch_lock.clone().try_lock_owned() {
            // The first fetch, in flight since the source was built.
            Err(_) if start_up.is_some() => start_up.unwrap_or_default(),
            // Its keys serve the next token; a hanging server holds no request.
            Err(_) => return self.generation() != seen,
            Ok(guard) => {
                if !remote.take_miss_slot() {
                    return self.generation() != seen;
                }
                tracing::info!(source = %self.name, no_keys, "key miss: refetching the JWKS");
                let store = Arc::clone(self);
                tokio::spawn(async move {
                    if let Some(remote) = &store.remote {
                        let _ = store.fetch_and_store(remote, guard).await;
                    }
                });
                start_up.unwrap_or(remote.config.miss_wait)
            }
        };
        let _ = tokio::time::timeout(wait, finished.changed()).await;
        self.generation() != seen
    }

    /// Without a remote source there is nothing to refetch: the keys did not change.
    #[cfg(not(feature = "remote"))]
    pub(crate) async fn refetch_for_miss(
        self: &Arc<Self>,
        _seen: u64,
        _first_fetch_wait: Duration,
    ) -> bool {
        false
    }

    /// Fetches now (waits for a fetch in progress first). True if the keys changed.
    pub(crate) async fn refresh(&self) -> Result<bool> {
        #[cfg(feature = "remote")]
        if let Some(remote) = &self.remote {
            let guard = remote.fetch_lock.clone().lock_owned().await;
            return self.fetch_and_store(remote, guard).await;
        }
        Ok(false)
    }

    /// Fetches with `fetch_lock` held (`guard`), released before the fetch is announced as
    /// finished: whoever sees it finished finds the lock free.
    #[cfg(feature = "remote")]
    async fn fetch_and_store(
        &self,
        remote: &Remote,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<bool> {
        let timeout = remote.config.fetch_timeout;
        let result = tokio::time::timeout(timeout, fetch(remote))
            .await
            .unwrap_or_else(|_| {
                Err(Error::JwksFetchFailed {
                    source_name: self.name.clone(),
                    reason: format!("timed out after {timeout:?} (fetch_timeout)"),
                })
            });
        crate::metrics::jwks_fetch(&self.name, result.is_ok());
        let result = match result {
            Ok(set) => {
                self.set_error(None);
                if let Ok(mut at) = remote.last_success.lock() {
                    *at = Some(Instant::now());
                }
                Ok(self.store(set))
            }
            Err(e) => {
                let keeping = self.current.load().is_some();
                // Said once: the error names the URL; the reason alone goes under our name.
                let reason = match &e {
                    Error::JwksFetchFailed {
                        source_name,
                        reason,
                    } if *source_name == self.name => reason.clone(),
                    Error::JwksFetchFailed {
                        source_name,
                        reason,
                    } => format!("{source_name}: {reason}"),
                    other => other.to_string(),
                };
                tracing::warn!(source = %self.name, error = %reason, keeping_last_good_keys = keeping,
                    "JWKS fetch failed");
                self.set_error(Some(reason));
                if let (Location::Discovery(_), Ok(mut uri)) =
                    (&remote.config.location, remote.jwks_uri.lock())
                {
                    *uri = None;
                }
                Err(e)
            }
        };
        drop(guard);
        remote.fetched.send_modify(|n| *n = n.wrapping_add(1));
        result
    }
}

#[cfg(feature = "remote")]
fn runtime(what: &str) -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| Error::Config {
        reason: format!("{what} needs a tokio runtime: build the validator inside one"),
    })
}

/// An error with its sources, each said once ("error sending request: client error
/// (Connect): tcp connect error: Connection refused (os error 111)").
#[cfg(feature = "remote")]
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// A reqwest error with its causes, without the URL (the error around it names it).
#[cfg(feature = "remote")]
fn reqwest_reason(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// Refuses URLs other than https, and http except to loopback.
#[cfg(feature = "remote")]
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::Config {
        reason: format!("bad JWKS URL {url:?}: {e}"),
    })?;
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        scheme => Err(Error::Config {
            reason: format!(
                "JWKS URL {url:?}: scheme {scheme} is not allowed, expected https (http only to loopback)"
            ),
        }),
    }
}

/// The URL policy for a redirect hop (or a final URL): [`check_url`], and never plain http
/// after https.
#[cfg(feature = "remote")]
fn check_hop(url: &str, from_https: bool) -> Result<()> {
    let parsed = check_url(url)?;
    if from_https && parsed.scheme() != "https" {
        return Err(Error::Config {
            reason: format!("JWKS URL {url:?}: a redirect from https to plain http is not allowed"),
        });
    }
    Ok(())
}

#[cfg(feature = "remote")]
async fn get_json(remote: &Remote, url: &str) -> Result<serde_json::Value> {
    let fail = |reason: String| Error::JwksFetchFailed {
        source_name: url.to_owned(),
        reason,
    };
    let mut response = remote
        .client
        .get(check_url(url)?)
        .header(http::header::ACCEPT, "application/json")
        .timeout(remote.config.fetch_timeout)
        .send()
        .await
        .map_err(|e| fail(reqwest_reason(e)))?;
    // A caller's client may follow redirects on its own: whatever it did, the answer
    // counts only if its final URL passes the policy too.
    if response.url().as_str() != url {
        check_hop(response.url().as_str(), url.starts_with("https:"))
            .map_err(|e| fail(format!("redirected to a refused URL: {}", error_chain(&e))))?;
    }
    let status = response.status();
    if status.is_redirection() {
        let location = response.headers().get(http::header::LOCATION).map_or_else(
            || "no Location".to_owned(),
            |l| String::from_utf8_lossy(l.as_bytes()).into_owned(),
        );
        return Err(fail(format!(
            "HTTP status {status}: the redirect to {location} is not allowed (redirects are not followed; see RemoteJwks::follow_redirects)"
        )));
    }
    if status != http::StatusCode::OK {
        return Err(fail(format!("HTTP status {status}, expected 200 OK")));
    }
    let limit = remote.config.max_body;
    let too_large = || {
        fail(format!(
            "the response body is over the limit of {limit} bytes (max_body_size); reading stopped there"
        ))
    };
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Read chunk by chunk: a body without Content-Length (chunked, or until close) is
    // bounded by what we keep, not by what the server sends.
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(reqwest_reason(e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| fail(format!("the answer is not JSON: {e}")))
}

#[cfg(feature = "remote")]
async fn fetch(remote: &Remote) -> Result<KeySet> {
    let url = match &remote.config.location {
        Location::Jwks(url) => url.clone(),
        Location::Discovery(issuer) => {
            let known = remote.jwks_uri.lock().ok().and_then(|u| u.clone());
            match known {
                Some(uri) => uri,
                None => {
                    let discovery = format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    );
                    let doc = get_json(remote, &discovery).await?;
                    let uri = doc
                        .get("jwks_uri")
                        .and_then(|u| u.as_str())
                        .ok_or_else(|| Error::JwksFetchFailed {
                            source_name: discovery.clone(),
                            reason: "no jwks_uri in the OpenID configuration".into(),
                        })?
                        .to_owned();
                    if let Ok(mut known) = remote.jwks_uri.lock() {
                        *known = Some(uri.clone());
                    }
                    uri
                }
            }
        }
    };
    KeySet::from_source(get_json(remote, &url).await?, &url)
}

/// The background refresh: every `cache_duration` after a good fetch (one a token
/// started counts), after the jittered retry delay after a failed one. `first` is the
/// lock the first fetch holds from the moment the source was built.
#[cfg(feature = "remote")]
async fn refresh_remote(
    store: Weak<KeyStore>,
    mut first: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let Some(remote) = &strong.remote else {
            return;
        };
        let fresh = if first.is_some() {
            None
        } else {
            remote.fresh()
        };
        let wait = match fresh {
            Some(left) => left,
            None => {
                let guard = match first.take() {
                    Some(guard) => guard,
                    None => remote.fetch_lock.clone().lock_owned().await,
                };
                match strong.fetch_and_store(remote, guard).await {
                    Ok(_) => {
                        failures = 0;
                        remote.config.cache_duration
                    }
                    Err(_) => {
                        failures = failures.saturating_add(1);
                        remote.config.retry_delay(failures)
                    }
                }
            }
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        let ReadError { path, source, .. } = e;
        Error::Io { path, source }
    }
}

/// A JWKS file's contents as a key set.
fn parse_file(path: &std::path::Path, contents: &[Vec<u8>]) -> Result<KeySet> {
    let json = contents.first().map(Vec::as_slice).unwrap_or_default();
    let document = serde_json::from_slice(json).map_err(|e| Error::InvalidJwks {
        reason: format!("{}: {e}", path.display()),
    })?;
    KeySet::from_source(document, &path.display().to_string())
}

#[cfg(feature = "remote")]
impl KeySet {
    /// Fetches a JWKS once, with the policy of a [`RemoteJwks`] (https, or http to loopback;
    /// no redirects; the body limit), within `timeout` — for tools that check a token once;
    /// a service uses a [`RemoteJwks`] source, which refreshes. A command-line tool without
    /// a runtime blocks on it with a current-thread tokio runtime (as `mtls jwt verify` does).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), mtls_jwt::Error> {
    /// use std::time::Duration;
    /// let keys = mtls_jwt::KeySet::fetch("https://issuer.example/jwks.json", Duration::from_secs(10)).await?;
    /// println!("{} keys", keys.len());
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    pub async fn fetch(url: &str, timeout: Duration) -> Result<KeySet> {
        let remote = Remote::new(RemoteJwks::new(url).fetch_timeout(timeout))?;
        tokio::time::timeout(timeout, fetch(&remote))
            .await
            .unwrap_or_else(|_| {
                Err(Error::JwksFetchFailed {
                    source_name: url.to_owned(),
                    reason: format!("timed out after {timeout:?}"),
                })
            })
    }
}

#[cfg(all(test, feature = "remote"))]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://issuer.example/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(matches!(
            check_url("http://issuer.example/jwks"),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            check_url("file:///etc/jwks"),
            Err(Error::Config { .. })
        ));
        assert!(matches!(check_url("not a url"), Err(Error::Config { .. })));
    }

    #[test]
    fn retries_start_at_1_s_grow_by_a_quarter_jittered_and_capped() {
        let remote = RemoteJwks::new("https://issuer.example/jwks");
        for failures in 1..=40u32 {
            let full = (1.25f64.powi(failures as i32 - 1)).min(10.0);
            for _ in 0..20 {
                let d = remote.retry_delay(failures).as_secs_f64();
                assert!(
                    d >= 0.75 * full - 1e-6 && d <= full + 1e-6,
                    "failure {failures}: {d} s, expected 75-100 % of {full} s"
                );
            }
        }
        // Three failures in a row cost at most 1 + 1.25 + 1.5625 s of waiting.
        let total: f64 = (1..=3).map(|n| remote.retry_delay(n).as_secs_f64()).sum();
        assert!(total <= 3.8125 + 1e-6, "{total}");
        let custom = remote
            .retry_interval(Duration::from_millis(200))
            .retry_max(Duration::from_millis(300));
        assert!(custom.retry_delay(u32::MAX) <= Duration::from_millis(300));
    }

    #[test]
    fn sources_needing_tasks_need_a_runtime() {
        let err = KeyStore::start(JwksSource::remote("https://issuer.example/jwks"))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Config { .. }), "{err}");
    }
}
