//! `authorization: Bearer <token>` on every outgoing call, from a token source.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};
use tracing::warn;

use crate::{Error, Result};

/// Where outgoing calls get their bearer token. Called once per call: keep it cheap.
///
/// Closures `Fn() -> Result<String>` are token sources too.
///
/// ```
/// use mtls_tonic::client::TokenSource;
/// let source = || Ok::<_, mtls_tonic::Error>("eyJ...".to_owned());
/// assert_eq!(source.token()?, "eyJ...");
/// # Ok::<(), mtls_tonic::Error>(())
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send now (without the `Bearer ` prefix).
    fn token(&self) -> Result<String>;
}

impl<F> TokenSource for F
where
    F: Fn() -> Result<String> + Send + Sync + 'static,
{
    fn token(&self) -> Result<String> {
        self()
    }
}

impl TokenSource for Arc<dyn TokenSource> {
    fn token(&self) -> Result<String> {
        (**self).token()
    }
}

/// A fixed token.
#[derive(Clone)]
pub struct StaticToken(Arc<str>);

impl StaticToken {
    /// Always sends `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> Result<String> {
        Ok(self.0.to_string())
    }
}

/// A token read from a file and re-read when the file changes (checked at most every
/// `check_every`), as projected service-account tokens and SPIRE helpers write them.
/// A file that becomes unreadable keeps the last good token (logged at `warn`).
///
/// ```no_run
/// # fn f() -> Result<(), mtls_tonic::Error> {
/// use std::time::Duration;
/// let source = mtls_tonic::client::FileToken::new("/var/run/secrets/token", Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FileToken {
    path: PathBuf,
    check_every: Duration,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    token: String,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl FileToken {
    /// Reads `path` now (an error if it can't be read or is empty).
    pub fn new(path: impl AsRef<Path>, check_every: Duration) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (token, modified) = read_token(&path)?;
        Ok(Self {
            path,
            check_every,
            state: Mutex::new(FileState {
                token,
                modified,
                checked: Instant::now(),
            }),
        })
    }
}

fn read_token(path: &Path) -> Result<(String, Option<SystemTime>)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Token(format!("read {}: {e}", path.display())))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Error::Token(format!("{} is empty", path.display())));
    }
    Ok((token, modified))
}

impl TokenSource for FileToken {
    fn token(&self) -> Result<String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Token("lock poisoned".to_owned()))?;
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if modified != state.modified || modified.is_none() {
                match read_token(&self.path) {
                    Ok((token, modified)) => {
                        state.token = token;
                        state.modified = modified;
                    }
                    Err(error) => warn!(%error, "token file unreadable; keeping the last token"),
                }
            }
        }
        Ok(state.token.clone())
    }
}

/// A tonic [`Interceptor`] adding `authorization: Bearer <token>` from a [`TokenSource`].
///
/// A failing source fails the call with UNAVAILABLE (gRPC's rule for call credentials).
///
/// ```
/// use mtls_tonic::client::{BearerInterceptor, StaticToken};
/// use tonic::service::Interceptor;
/// let mut interceptor = BearerInterceptor::new(StaticToken::new("abc"));
/// let request = interceptor.call(tonic::Request::new(()))?;
/// assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer abc");
/// # Ok::<(), tonic::Status>(())
/// ```
#[derive(Clone)]
pub struct BearerInterceptor {
    source: Arc<dyn TokenSource>,
}

impl std::fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerInterceptor").finish_non_exhaustive()
    }
}

impl BearerInterceptor {
    /// An interceptor over `source`.
    pub fn new(source: impl TokenSource) -> Self {
        Self {
            source: Arc::new(source),
        }
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self
            .source
            .token()
            .map_err(|e| Status::unavailable(format!("bearer token: {e}")))?;
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::unavailable("bearer token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_token_reloads_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let source = FileToken::new(&path, Duration::ZERO).unwrap();
        assert_eq!(source.token().unwrap(), "first");
        // Different length so the change is seen even within one mtime tick.
        std::fs::write(&path, "second-token").unwrap();
        let modified = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(source.token().unwrap(), "second-token");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            source.token().unwrap(),
            "second-token",
            "unreadable file keeps the last token"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").unwrap();
        let err = FileToken::new(&path, Duration::ZERO).unwrap_err();
        assert!(
            matches!(&err, Error::Token(m) if m.ends_with("is empty")),
            "{err}"
        );
    }

    #[test]
    fn failing_source_fails_the_call_unavailable() {
        let mut interceptor = BearerInterceptor::new(|| Err(Error::Token("no token yet".into())));
        let status = interceptor.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
