//! A [`TokenSource`] of JWT-SVIDs from the SPIFFE Workload API (feature `workload-api`).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use mtls_core::WorkloadApiEndpoint;
use spiffe::{JwtSvid, SpiffeId, WorkloadApiClient};
use tokio::task::JoinHandle;

use super::bearer::TokenSource;
use crate::{Error, Result};

/// JWT-SVIDs for an audience from the Workload API's `FetchJWTSVID`, cached until near
/// expiry: a background task fetches a fresh token at half of the current one's remaining
/// lifetime (retrying every second on failure while the cached one is still valid), so
/// [`token`](TokenSource::token) never waits on the network. An expired cached token is an
/// error (the call then fails UNAVAILABLE through [`BearerInterceptor`](crate::client::BearerInterceptor)).
///
/// Clones share the cache; the refresh task stops when the last clone is dropped.
///
/// ```no_run
/// # async fn f() -> Result<(), mtls_tonic::Error> {
/// use mtls_tonic::client::{BearerInterceptor, WorkloadJwtToken};
/// let tokens = WorkloadJwtToken::builder(["bookstore"]).connect().await?; // $SPIFFE_ENDPOINT_SOCKET
/// let interceptor = BearerInterceptor::new(tokens);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WorkloadJwtToken {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    audiences: Vec<String>,
    cached: Arc<Mutex<Cached>>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Cached {
    token: String,
    expiry: SystemTime,
    last_error: Option<String>,
}

/// Configures a [`WorkloadJwtToken`].
#[derive(Debug, Clone)]
pub struct WorkloadJwtTokenBuilder {
    endpoint: Option<String>,
    audiences: Vec<String>,
    spiffe_id: Option<SpiffeId>,
    startup_timeout: Duration,
}

impl WorkloadJwtToken {
    /// A builder for tokens carrying `audiences` (at least one).
    pub fn builder<I, S>(audiences: I) -> WorkloadJwtTokenBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WorkloadJwtTokenBuilder {
            endpoint: None,
            audiences: audiences.into_iter().map(Into::into).collect(),
            spiffe_id: None,
            startup_timeout: Duration::from_secs(10),
        }
    }

    /// The endpoint tokens come from.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Expiry of the cached token.
    pub fn expiry(&self) -> SystemTime {
        lock(&self.inner.cached).expiry
    }
}

impl WorkloadJwtTokenBuilder {
    /// The Workload API endpoint (`unix:///path` or a bare socket path). Default:
    /// `$SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Asks for the JWT-SVID of this SPIFFE ID (default: the agent's first/default one).
    pub fn spiffe_id(mut self, id: SpiffeId) -> Self {
        self.spiffe_id = Some(id);
        self
    }

    /// Bound on fetching the first token (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Fetches the first token (bounded by the start-up timeout; the error names the
    /// endpoint) and starts the refresh task. Needs a tokio runtime.
    pub async fn connect(self) -> Result<WorkloadJwtToken> {
        if self.audiences.is_empty() {
            return Err(Error::Token(
                "a JWT-SVID needs at least one audience; none was given".to_owned(),
            ));
        }
        let address = WorkloadApiEndpoint::resolve(self.endpoint.as_deref())
            .map_err(|e| Error::Token(e.to_string()))?;
        let endpoint = address.as_str().to_owned();
        let fetcher = Fetcher {
            endpoint: endpoint.clone(),
            audiences: self.audiences.clone(),
            spiffe_id: self.spiffe_id,
        };
        let last = Mutex::new(String::new());
        let first = tokio::time::timeout(self.startup_timeout, async {
            loop {
                match fetcher.fetch().await {
                    Ok(svid) => return Ok(svid),
                    // The agent may still be starting: retry transport failures until the bound.
                    Err(Failure { retry: true, reason }) => {
                        tracing::debug!(endpoint = %fetcher.endpoint, error = %reason, "JWT-SVID fetch failed; retrying");
                        *lock_str(&last) = reason;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(Failure { reason, .. }) => return Err(reason),
                }
            }
        })
        .await;
        let svid = match first {
            Ok(Ok(svid)) => svid,
            Ok(Err(e)) => {
                return Err(Error::Token(format!(
                    "Workload API at {endpoint}: FetchJWTSVID: {e}"
                )));
            }
            Err(_) => {
                return Err(Error::Token(format!(
                    "Workload API at {endpoint}: no JWT-SVID within {:?}: {}{}",
                    self.startup_timeout,
                    lock_str(&last),
                    address.socket_state("token")
                )));
            }
        };
        let cached = Arc::new(Mutex::new(Cached {
            token: svid.token().to_owned(),
            expiry: expiry_of(&svid),
            last_error: None,
        }));
        tracing::info!(%endpoint, spiffe_id = %svid.spiffe_id(), audiences = ?self.audiences, "JWT-SVID from the Workload API");
        let task = tokio::spawn(refresh(fetcher, Arc::clone(&cached)));
        Ok(WorkloadJwtToken {
            inner: Arc::new(Inner {
                endpoint,
                audiences: self.audiences,
                cached,
                task,
            }),
        })
    }
}

struct Fetcher {
    endpoint: String,
    audiences: Vec<String>,
    spiffe_id: Option<SpiffeId>,
}

impl Fetcher {
    async fn fetch(&self) -> std::result::Result<JwtSvid, Failure> {
        let client = WorkloadApiClient::connect_to(&self.endpoint)
            .await
            .map_err(|e| Failure {
                retry: true,
                reason: format!("connect: {}", error_chain(&e)),
            })?;
        client
            .fetch_jwt_svid(&self.audiences, self.spiffe_id.as_ref())
            .await
            .map_err(|e| Failure {
                retry: matches!(e, spiffe::WorkloadApiError::Transport(_)),
                reason: error_chain(&e),
            })
    }
}

struct Failure {
    retry: bool,
    reason: String,
}

/// Refreshes at half of the remaining lifetime; on failure retries every second.
async fn refresh(fetcher: Fetcher, cached: Arc<Mutex<Cached>>) {
    loop {
        let expiry = lock(&cached).expiry;
        let remaining = expiry
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep((remaining / 2).max(Duration::from_millis(500))).await;
        loop {
            match fetcher.fetch().await {
                Ok(svid) => {
                    let mut c = lock(&cached);
                    c.token = svid.token().to_owned();
                    c.expiry = expiry_of(&svid);
                    c.last_error = None;
                    tracing::debug!(endpoint = %fetcher.endpoint, "JWT-SVID refreshed");
                    break;
                }
                Err(Failure { reason, .. }) => {
                    tracing::warn!(endpoint = %fetcher.endpoint, error = %reason, "JWT-SVID refresh failed; retrying in 1 s");
                    lock(&cached).last_error = Some(reason);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl TokenSource for WorkloadJwtToken {
    fn token(&self) -> Result<String> {
        let c = lock(&self.inner.cached);
        if SystemTime::now() < c.expiry {
            return Ok(c.token.clone());
        }
        Err(Error::Token(format!(
            "JWT-SVID for {:?} from {} expired and could not be refreshed{}",
            self.inner.audiences,
            self.inner.endpoint,
            c.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )))
    }
}

impl std::fmt::Debug for WorkloadJwtToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadJwtToken")
            .field("endpoint", &self.inner.endpoint)
            .field("audiences", &self.inner.audiences)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Cached>) -> std::sync::MutexGuard<'_, Cached> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_str(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expiry_of(svid: &JwtSvid) -> SystemTime {
    let secs = svid.expiry().unix_timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
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
