//! Where keys come from: inline JSON, a file (reloaded on change), a remote URL or OIDC
//! discovery (cached, refreshed in the background, refetched on an unknown `kid`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::jwk::KeySet;

/// Where a validator gets its JWKS.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{JwksSource, RemoteJwks, FileJwks};
///
/// let inline = JwksSource::inline(r#"{"keys": []}"#);
/// let file = JwksSource::from(FileJwks::new("/etc/mesh/jwks.json").poll_interval(Duration::from_secs(5)));
/// let remote = JwksSource::from(
///     RemoteJwks::new("https://issuer.example/.well-known/jwks.json")
///         .cache_duration(Duration::from_secs(300))
///         .refetch_min_interval(Duration::from_secs(10)),
/// );
/// let discovered = JwksSource::from(RemoteJwks::oidc_discovery("https://accounts.example"));
/// # let _ = (inline, file, remote, discovered);
/// ```
#[derive(Debug)]
pub struct JwksSource(pub(crate) Kind);

#[derive(Debug)]
pub(crate) enum Kind {
    Inline(String),
    KeySet(KeySet),
    File(FileJwks),
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

    /// A JWKS file, reloaded when it changes (see [`FileJwks`]).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        FileJwks::new(path).into()
    }

    /// A JWKS URL with the default cache and refetch settings (see [`RemoteJwks`]).
    pub fn remote(url: impl Into<String>) -> Self {
        RemoteJwks::new(url).into()
    }
}

/// A JWKS file, polled for changes; a file that stops parsing keeps the last good keys.
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

    /// How often the file's modification time and size are checked (default 1 s).
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
/// Plain `http://` is accepted only for loopback hosts (tests, local sidecars).
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    location: Location,
    cache_duration: Duration,
    refetch_min_interval: Duration,
    fetch_timeout: Duration,
    retry_interval: Duration,
    max_body: usize,
    client: Option<reqwest::Client>,
}

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
            retry_interval: Duration::from_secs(30),
            max_body: 1 << 20,
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

    /// Timeout of one fetch (default 10 s).
    pub fn fetch_timeout(mut self, d: Duration) -> Self {
        self.fetch_timeout = d;
        self
    }

    /// How soon the background task retries after a failed fetch (default 30 s).
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    /// Uses this HTTP client (e.g. one trusting a private CA). Default: reqwest with rustls
    /// and [`RemoteJwks::redirect_policy`].
    ///
    /// The URL policy (https, or http to loopback only) applies to every redirect hop: give
    /// your client [`RemoteJwks::redirect_policy`] (or `Policy::none()`) so that a refused
    /// hop is never made. Whatever the client does, keys from a response whose final URL
    /// the policy refuses are not trusted.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The redirect policy of the default client: at most 10 hops, each one checked
    /// against the URL policy (https, or http to loopback only) before it is made. An
    /// allowed URL answering `302` to `http://elsewhere/` gets its fetch refused, naming
    /// the hop.
    ///
    /// ```
    /// let client = reqwest::Client::builder()
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
            match check_url(attempt.url().as_str()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(format!("redirect refused: {e}")),
            }
        })
    }

    fn name(&self) -> &str {
        match &self.location {
            Location::Jwks(u) | Location::Discovery(u) => u,
        }
    }
}

impl From<RemoteJwks> for JwksSource {
    fn from(r: RemoteJwks) -> Self {
        Self(Kind::Remote(r))
    }
}

/// The keys in use, with a generation that changes whenever they do.
pub(crate) struct Loaded {
    pub(crate) set: KeySet,
    pub(crate) generation: u64,
}

struct Remote {
    config: RemoteJwks,
    client: reqwest::Client,
    fetch_lock: tokio::sync::Mutex<()>,
    last_miss_fetch: Mutex<Option<Instant>>,
    jwks_uri: Mutex<Option<String>>,
}

/// Holds the current keys; background tasks (remote refresh, file watch) update it.
pub(crate) struct KeyStore {
    current: ArcSwapOption<Loaded>,
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
        let new = |name: String, remote| Self {
            current: ArcSwapOption::empty(),
            changed,
            name,
            remote,
            last_error: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        };
        match source.0 {
            Kind::Inline(json) => {
                let store = Arc::new(new("inline JWKS".into(), None));
                store.store(KeySet::from_json(&json)?);
                Ok(store)
            }
            Kind::KeySet(set) => {
                let store = Arc::new(new("key set".into(), None));
                store.store(set);
                Ok(store)
            }
            Kind::File(file) => {
                let runtime = runtime("watching a JWKS file")?;
                let store = Arc::new(new(file.path.display().to_string(), None));
                let (set, stamp) = read_file(&file.path)?;
                store.store(set);
                let task = runtime.spawn(watch_file(Arc::downgrade(&store), file, stamp));
                store.add_task(task);
                Ok(store)
            }
            Kind::Remote(config) => {
                let runtime = runtime("fetching a remote JWKS")?;
                let client = match &config.client {
                    Some(c) => c.clone(),
                    None => default_client(config.fetch_timeout)?,
                };
                check_url(config.name())?;
                let store = Arc::new(new(
                    config.name().to_owned(),
                    Some(Remote {
                        config,
                        client,
                        fetch_lock: tokio::sync::Mutex::new(()),
                        last_miss_fetch: Mutex::new(None),
                        jwks_uri: Mutex::new(None),
                    }),
                ));
                let task = runtime.spawn(refresh_remote(Arc::downgrade(&store)));
                store.add_task(task);
                Ok(store)
            }
        }
    }

    fn add_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// The keys in use (`None` before the first successful fetch).
    pub(crate) fn load(&self) -> arc_swap::Guard<Option<Arc<Loaded>>> {
        self.current.load()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |l| l.generation)
    }

    /// Installs `set` unless it equals the current one; true if the keys changed.
    fn store(&self, set: KeySet) -> bool {
        let current = self.current.load();
        if let Some(cur) = current.as_ref()
            && cur.set.document() == set.document()
        {
            return false;
        }
        let generation = current.as_ref().map_or(0, |l| l.generation) + 1;
        tracing::info!(source = %self.name, generation, kids = ?set.key_ids(), "JWKS loaded");
        self.current
            .store(Some(Arc::new(Loaded { set, generation })));
        self.changed.send_replace(generation);
        true
    }

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

    /// Waits (at most `timeout`) until keys are loaded; true if they are.
    pub(crate) async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|g| *g > 0)).await,
            Ok(Ok(_))
        )
    }

    /// After a key miss against generation `seen`: refetch, rate-limited. True if the keys
    /// changed since `seen` (so validating again may succeed).
    pub(crate) async fn refetch_for_miss(&self, seen: u64) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        let timeout = remote.config.fetch_timeout;
        let Ok(_guard) = tokio::time::timeout(timeout, remote.fetch_lock.lock()).await else {
            return self.generation() != seen;
        };
        if self.generation() != seen {
            return true;
        }
        {
            let Ok(mut last) = remote.last_miss_fetch.lock() else {
                return false;
            };
            if let Some(at) = *last
                && at.elapsed() < remote.config.refetch_min_interval
            {
                tracing::debug!(source = %self.name, "unknown kid: refetch rate-limited");
                return false;
            }
            *last = Some(Instant::now());
        }
        tracing::info!(source = %self.name, "unknown kid: refetching the JWKS");
        self.fetch_and_store(remote).await.unwrap_or(false)
    }

    /// Fetches now (waits for a fetch in progress first). True if the keys changed.
    pub(crate) async fn refresh(&self) -> Result<bool> {
        match &self.remote {
            Some(remote) => {
                let _guard = remote.fetch_lock.lock().await;
                self.fetch_and_store(remote).await
            }
            None => Ok(false),
        }
    }

    /// Call with `fetch_lock` held.
    async fn fetch_and_store(&self, remote: &Remote) -> Result<bool> {
        let result = tokio::time::timeout(remote.config.fetch_timeout, fetch(remote)).await;
        let result = result.unwrap_or_else(|_| {
            Err(Error::JwksFetchFailed {
                source_name: self.name.clone(),
                reason: format!("timed out after {:?}", remote.config.fetch_timeout),
            })
        });
        match result {
            Ok(set) => {
                self.set_error(None);
                Ok(self.store(set))
            }
            Err(e) => {
                let keeping = self.current.load().is_some();
                tracing::warn!(source = %self.name, error = %e, keeping_last_good_keys = keeping,
                    "JWKS fetch failed");
                self.set_error(Some(e.to_string()));
                if let Some(remote) = &self.remote
                    && let (Location::Discovery(_), Ok(mut uri)) =
                        (&remote.config.location, remote.jwks_uri.lock())
                {
                    *uri = None;
                }
                Err(e)
            }
        }
    }
}

fn runtime(what: &str) -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| Error::Config {
        reason: format!("{what} needs a tokio runtime: build the validator inside one"),
    })
}

/// Redirect hops a fetch follows at most.
const MAX_REDIRECTS: usize = 10;

/// An error with its sources, for messages ("error sending request: ...: redirect refused").
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

/// The default HTTP client: rustls, the connect timeout, and the checked redirect policy.
fn default_client(connect_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(RemoteJwks::redirect_policy())
        .build()
        .map_err(|e| Error::Config {
            reason: format!("cannot build the HTTP client: {e}"),
        })
}

/// Refuses URLs other than https, and http except to loopback.
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

async fn get_json(remote: &Remote, url: &str) -> Result<serde_json::Value> {
    let fail = |reason: String| Error::JwksFetchFailed {
        source_name: url.to_owned(),
        reason,
    };
    let response = remote
        .client
        .get(check_url(url)?)
        .header(http::header::ACCEPT, "application/json")
        .timeout(remote.config.fetch_timeout)
        .send()
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    // A caller's client may follow redirects on its own: whatever it did, the answer
    // counts only if its final URL passes the policy too.
    if response.url().as_str() != url {
        check_url(response.url().as_str())
            .map_err(|e| fail(format!("redirected to a refused URL: {}", error_chain(&e))))?;
    }
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP status {status}")));
    }
    if response
        .content_length()
        .is_some_and(|n| n > remote.config.max_body as u64)
    {
        return Err(fail("response too large".into()));
    }
    let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    if body.len() > remote.config.max_body {
        return Err(fail("response too large".into()));
    }
    serde_json::from_slice(&body).map_err(|e| Error::InvalidJwks {
        reason: format!("{url}: {e}"),
    })
}

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
    KeySet::from_value(get_json(remote, &url).await?)
}

async fn refresh_remote(store: Weak<KeyStore>) {
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let Some(remote) = &strong.remote else {
            return;
        };
        let wait = {
            let _guard = remote.fetch_lock.lock().await;
            match strong.fetch_and_store(remote).await {
                Ok(_) => remote.config.cache_duration,
                Err(_) => remote.config.retry_interval,
            }
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

fn read_file(path: &Path) -> Result<(KeySet, Option<Stamp>)> {
    let before = stamp(path);
    let json = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((KeySet::from_json(&json)?, before))
}

async fn watch_file(store: Weak<KeyStore>, file: FileJwks, mut last: Option<Stamp>) {
    loop {
        tokio::time::sleep(file.poll_interval).await;
        let Some(strong) = store.upgrade() else {
            return;
        };
        let now = stamp(&file.path);
        if now == last {
            continue;
        }
        match read_file(&file.path) {
            Ok((set, stamp)) => {
                strong.set_error(None);
                strong.store(set);
                last = stamp;
            }
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e,
                    "JWKS file unreadable; keeping the last good keys");
                strong.set_error(Some(e.to_string()));
                last = now;
            }
        }
    }
}

impl KeySet {
    /// Fetches a JWKS once, blocking the calling thread (for command-line tools; inside an
    /// async runtime use a [`RemoteJwks`] source instead, this refuses to run there).
    pub fn fetch_blocking(url: &str, timeout: Duration) -> Result<KeySet> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Config {
                reason: "KeySet::fetch_blocking called inside an async runtime".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config {
                reason: format!("cannot start a runtime: {e}"),
            })?;
        let config = RemoteJwks::new(url).fetch_timeout(timeout);
        runtime.block_on(async move {
            let client = default_client(timeout)?;
            let remote = Remote {
                config,
                client,
                fetch_lock: tokio::sync::Mutex::new(()),
                last_miss_fetch: Mutex::new(None),
                jwks_uri: Mutex::new(None),
            };
            tokio::time::timeout(timeout, fetch(&remote))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::JwksFetchFailed {
                        source_name: url.to_owned(),
                        reason: format!("timed out after {timeout:?}"),
                    })
                })
        })
    }
}

#[cfg(test)]
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
    fn sources_needing_tasks_need_a_runtime() {
        let err = KeyStore::start(JwksSource::remote("https://issuer.example/jwks"))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Config { .. }), "{err}");
    }
}
