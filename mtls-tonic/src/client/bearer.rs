//! `authorization: Bearer <token>` on every outgoing call, from a token source.

use std::{fmt, path::Path, sync::Arc, time::Duration};

use mtls_identity::source::{FilePoller, ReadError, Source};
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

use crate::{Error, Result};

/// Where outgoing calls get their bearer token. Called once per call: keep it cheap.
///
/// A [`Source<String>`](Source) — the family's rotation model
/// ([`mtls_identity::source`]) — is a token source: publish a new token into its
/// `Publisher` and the next call sends it. [`FileToken`] is one over a file. Closures
/// `Fn() -> Result<String>` are token sources too.
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

impl TokenSource for Source<String> {
    fn token(&self) -> Result<String> {
        Ok(self.current().as_str().to_owned())
    }
}

/// A token read from a file and re-read when it changes, as projected service-account
/// tokens and SPIRE helpers write them: a [`Source<String>`](Source) fed by the family's
/// one [`FilePoller`] (every `check_every` on its own small thread; the contents compared,
/// not the modification time). A call only reads the token in place, never the file. A
/// file that becomes unreadable or empty keeps the last good token (one `warn` per bad
/// state, naming the file). The poller stops when the `FileToken`, its clones and its
/// [`source`](Self::source)s are dropped.
///
/// ```no_run
/// # fn f() -> Result<(), mtls_tonic::Error> {
/// use std::time::Duration;
/// let source = mtls_tonic::client::FileToken::new("/var/run/secrets/token", Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileToken {
    poller: Arc<FilePoller<String, TokenFileError>>,
    source: Source<String>,
}

/// A token file's error, as the poller needs it (`From<ReadError>`).
struct TokenFileError(Error);

impl From<ReadError> for TokenFileError {
    fn from(e: ReadError) -> Self {
        Self(Error::Token(e.to_string()))
    }
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FileToken {
    /// Reads `path` now (an error if it can't be read or is empty) and then every
    /// `check_every` (at least every millisecond).
    pub fn new(path: impl AsRef<Path>, check_every: Duration) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let poller = FilePoller::builder("token", [&path], move |files: &[Vec<u8>]| {
            let text = files
                .first()
                .map(|f| String::from_utf8_lossy(f))
                .unwrap_or_default();
            let token = text.trim();
            if token.is_empty() {
                return Err(TokenFileError(Error::Token(format!("{shown} is empty"))));
            }
            Ok(token.to_owned())
        })
        .interval(check_every)
        .start()
        .map_err(|e| e.0)?;
        Ok(Self {
            source: poller.source(),
            poller: Arc::new(poller),
        })
    }

    /// Reads the file now: `Ok(true)` if a new token is in place, `Ok(false)` if it is
    /// unchanged, an error if it cannot be read or is empty (the last token stays).
    pub fn reload(&self) -> Result<bool> {
        self.poller.check().map_err(|e| e.0)
    }

    /// The [`Source`] of the tokens; it keeps the poller running.
    pub fn source(&self) -> Source<String> {
        self.source.clone()
    }
}

impl fmt::Debug for FileToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileToken")
            .field("path", &self.poller.paths())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenSource for FileToken {
    fn token(&self) -> Result<String> {
        self.source.token()
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

    /// A poll interval that never fires during a test: `reload()` is the tick.
    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn file_token_reloads_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let source = FileToken::new(&path, NEVER).unwrap();
        assert_eq!(source.token().unwrap(), "first");
        // Same length and the same mtime as before: only the contents tell.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "secon\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            source.token().unwrap(),
            "first",
            "calls never read the file"
        );
        assert!(source.reload().unwrap());
        assert_eq!(source.token().unwrap(), "secon");
        std::fs::remove_file(&path).unwrap();
        let err = source.reload().unwrap_err();
        assert!(
            matches!(&err, Error::Token(m) if m.contains(&path.display().to_string())),
            "{err}"
        );
        assert_eq!(
            source.token().unwrap(),
            "secon",
            "unreadable file keeps the last token"
        );
        std::fs::write(&path, " \n").unwrap();
        assert!(source.reload().is_err());
        assert_eq!(source.token().unwrap(), "secon", "an empty file too");
    }

    #[test]
    fn file_token_is_polled_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first").unwrap();
        let source = FileToken::new(&path, Duration::from_millis(5)).unwrap();
        let mut interceptor = BearerInterceptor::new(source.clone());
        std::fs::write(&path, "second").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let request = interceptor.call(Request::new(())).unwrap();
            if request.metadata().get("authorization").unwrap() == "Bearer second" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "new token not sent within 10 s"
            );
            std::thread::yield_now();
        }
        assert!(!format!("{source:?}").contains("second"), "{source:?}");
    }

    #[test]
    fn a_published_token_is_sent_on_the_next_call() {
        let tokens = mtls_identity::source::Publisher::new("one".to_owned());
        let mut interceptor = BearerInterceptor::new(tokens.source());
        let first = interceptor.call(Request::new(())).unwrap();
        assert_eq!(first.metadata().get("authorization").unwrap(), "Bearer one");
        tokens.publish("two".to_owned());
        let second = interceptor.call(Request::new(())).unwrap();
        assert_eq!(
            second.metadata().get("authorization").unwrap(),
            "Bearer two"
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
