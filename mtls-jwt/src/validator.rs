//! The validator and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::alg::{self, Algorithm};
use crate::bearer::TokenLocation;
use crate::cache::TokenCache;
use crate::claims::Claims;
use crate::error::{Error, Result};
use crate::jwk::KeySet;
use crate::source::{JwksSource, KeyStore};

type Check = Arc<dyn Fn(&Claims) -> std::result::Result<(), String> + Send + Sync>;

/// Which header `typ` values are accepted (case-insensitively).
#[derive(Clone, Debug, Default)]
enum TypRule {
    #[default]
    Any,
    OneOf {
        values: Vec<String>,
        allow_absent: bool,
    },
}

/// Builds a [`Validator`]. Defaults follow Envoy's `jwt_authn` and RFC 8725: asymmetric
/// algorithms only, `exp` required, 60 s clock skew, tokens up to 8 KiB, a cache of 100
/// verified tokens.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{Algorithm, JwksSource, Validator};
///
/// # let jwks = mtls_jwt::jwks_json([mtls_jwt::SigningKey::generate(Algorithm::ES256)?.jwk(None)]);
/// let validator = Validator::builder()
///     .jwks(JwksSource::inline(jwks))
///     .issuer("https://issuer.test")
///     .audiences(["bookstore", "bookstore.internal"])
///     .algorithms([Algorithm::ES256, Algorithm::RS256])
///     .clock_skew(Duration::from_secs(30))
///     .max_lifetime(Duration::from_secs(3600))
///     .accept_typ(["JWT", "at+jwt"])
///     .check("scope includes read", |claims| {
///         match claims.get("scope").and_then(|s| s.as_str()) {
///             Some(s) if s.split(' ').any(|x| x == "read") => Ok(()),
///             other => Err(format!("scope is {other:?}")),
///         }
///     })
///     .build()?;
/// # let _ = validator;
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
#[must_use]
pub struct ValidatorBuilder {
    source: Option<JwksSource>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    algorithms: Option<Vec<Algorithm>>,
    hmac: Option<Vec<u8>>,
    require_exp: bool,
    leeway: Duration,
    max_lifetime: Option<Duration>,
    typ: TypRule,
    checks: Vec<(String, Check)>,
    max_token_size: usize,
    cache_capacity: usize,
    jwt_svid: bool,
    first_fetch_wait: Duration,
    location: TokenLocation,
}

impl fmt::Debug for ValidatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorBuilder")
            .field("source", &self.source)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("jwt_svid", &self.jwt_svid)
            .finish_non_exhaustive()
    }
}

impl Default for ValidatorBuilder {
    fn default() -> Self {
        Self {
            source: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: None,
            hmac: None,
            require_exp: true,
            leeway: Duration::from_secs(60),
            max_lifetime: None,
            typ: TypRule::Any,
            checks: Vec::new(),
            max_token_size: 8 * 1024,
            cache_capacity: 100,
            jwt_svid: false,
            first_fetch_wait: Duration::from_secs(10),
            location: TokenLocation::Authorization,
        }
    }
}

impl ValidatorBuilder {
    /// Where the keys come from.
    pub fn jwks(mut self, source: impl Into<JwksSource>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Accepts tokens from this issuer (may be given several times). Without any issuer,
    /// `iss` is not checked.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuers.push(iss.into());
        self
    }

    /// Accepts tokens from any of these issuers.
    pub fn issuers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, iss: I) -> Self {
        self.issuers.extend(iss.into_iter().map(Into::into));
        self
    }

    /// Accepts tokens for this audience (any-of). With any audience configured, a token
    /// without `aud` is refused.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// Accepts tokens for any of these audiences.
    pub fn audiences<I: IntoIterator<Item = S>, S: Into<String>>(mut self, aud: I) -> Self {
        self.audiences.extend(aud.into_iter().map(Into::into));
        self
    }

    /// The algorithm allow-list (default: every asymmetric algorithm). HMAC algorithms
    /// listed here still need [`ValidatorBuilder::hmac_secret`].
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// Accepts HS256/384/512 tokens signed with this shared secret (added to the allow-list).
    pub fn hmac_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.hmac = Some(secret.into());
        self
    }

    /// Whether `exp` must be present (default true).
    pub fn require_exp(mut self, required: bool) -> Self {
        self.require_exp = required;
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 60 s, as Envoy).
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.leeway = skew;
        self
    }

    /// Refuses tokens living longer than `max`: `exp` minus the earlier of `iat` and now
    /// (now without `iat`). A token whose `iat` lies beyond now + clock skew is refused
    /// ([`Error::IssuedInFuture`]), so a future `iat` cannot stretch the lifetime.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// Accepts a header `typ` among `values` (case-insensitive) or no `typ` at all.
    pub fn accept_typ<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.typ = TypRule::OneOf {
            values: values.into_iter().map(Into::into).collect(),
            allow_absent: true,
        };
        self
    }

    /// Requires a header `typ` among `values` (case-insensitive), e.g. `at+jwt` (RFC 9068).
    pub fn require_typ<I: IntoIterator<Item = S>, S: Into<String>>(mut self, values: I) -> Self {
        self.typ = TypRule::OneOf {
            values: values.into_iter().map(Into::into).collect(),
            allow_absent: false,
        };
        self
    }

    /// A custom check on the claims, run after every standard check on every validation —
    /// also when the token's signature check comes from the verified-token cache (the cache
    /// holds verified signatures, never verdicts). A refusal is [`Error::ClaimCheckFailed`]
    /// (403 / PERMISSION_DENIED).
    pub fn check<F>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn(&Claims) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.checks.push((name.into(), Arc::new(check)));
        self
    }

    /// Longest token accepted, in bytes (default 8192).
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_size = bytes;
        self
    }

    /// How many verified tokens to remember (default 100, as Envoy; 0 turns the cache off).
    pub fn token_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The start-up window of a remote JWKS (default 10 s from [`ValidatorBuilder::build`]):
    /// until its first fetch has ended, [`Validator::validate`] waits for that fetch, at most
    /// until the window closes. It waits for the fetch to end, well or badly: after a
    /// failure the token fails at once, naming what the fetch ran into. After the window
    /// (or the first fetch) no token waits for a fetch in flight, even with no keys loaded:
    /// a JWKS server that hangs holds tokens only in the first `wait` of the process.
    pub fn first_fetch_wait(mut self, wait: Duration) -> Self {
        self.first_fetch_wait = wait;
        self
    }

    /// Where [`Validator::validate_headers`] finds the token (default `authorization: Bearer`).
    pub fn token_location(mut self, location: TokenLocation) -> Self {
        self.location = location;
        self
    }

    /// The JWT-SVID profile (SPIFFE JWT-SVID spec): RS/ES/PS algorithms only, `aud` required
    /// and containing `audience`, `exp` required, `sub` a valid SPIFFE ID, `typ` absent or
    /// `JWT`/`JOSE`. Issuer checks stay as configured (JWT-SVIDs need none).
    pub fn jwt_svid(mut self, audience: impl Into<String>) -> Self {
        self.jwt_svid = true;
        self.audiences.push(audience.into());
        self.require_exp = true;
        self.typ = TypRule::OneOf {
            values: vec!["JWT".into(), "JOSE".into()],
            allow_absent: true,
        };
        self
    }

    /// Builds the validator. A remote source starts its background task, so it needs a
    /// tokio runtime (a JWKS file is polled by its own thread and needs none); an inline
    /// JWKS or a file that does not parse is an error here.
    pub fn build(self) -> Result<Validator> {
        let mut algorithms = self.algorithms.unwrap_or_else(|| alg::ASYMMETRIC.to_vec());
        if self.jwt_svid {
            algorithms.retain(|a| alg::JWT_SVID.contains(a));
        }
        let hmac = match &self.hmac {
            Some(secret) => {
                if secret.len() < 32 {
                    return Err(Error::Config {
                        reason: format!(
                            "HMAC secret of {} bytes: at least 32 are required",
                            secret.len()
                        ),
                    });
                }
                if self.jwt_svid {
                    return Err(Error::Config {
                        reason: "JWT-SVIDs are never HMAC-signed".into(),
                    });
                }
                if !algorithms.iter().any(|a| a.is_hmac()) {
                    algorithms.extend([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
                }
                Some(secret.clone())
            }
            None => {
                algorithms.retain(|a| !a.is_hmac());
                None
            }
        };
        if algorithms.is_empty() {
            return Err(Error::Config {
                reason: "no algorithm is allowed".into(),
            });
        }
        let store = match self.source {
            Some(source) => Some(KeyStore::start(source)?),
            None if hmac.is_some() => None,
            None => {
                return Err(Error::Config {
                    reason: "no JWKS source (and no HMAC secret) configured".into(),
                });
            }
        };
        let allowed_names = algorithms.iter().map(|a| a.as_str().to_owned()).collect();
        Ok(Validator {
            inner: Arc::new(Inner {
                store,
                issuers: self.issuers,
                audiences: self.audiences,
                algorithms,
                allowed_names,
                hmac,
                require_exp: self.require_exp,
                leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX / 2),
                max_lifetime: self.max_lifetime.map(|d| d.as_secs()),
                typ: self.typ,
                checks: self.checks,
                max_token_size: self.max_token_size,
                cache: TokenCache::new(self.cache_capacity),
                jwt_svid: self.jwt_svid,
                first_fetch_wait: self.first_fetch_wait,
                location: self.location,
            }),
        })
    }
}

/// Validates JWTs against a JWKS. Cheap to clone (an `Arc` inside); share one per issuer.
///
/// [`Validator::validate_now`] is synchronous and never waits: it uses the keys at hand.
/// [`Validator::validate`] is the same, except that a token naming an unknown `kid` may wait
/// for a rate-limited refetch it starts, and one arriving during a remote JWKS's first fetch
/// waits for it (within [`ValidatorBuilder::first_fetch_wait`] of the build). Tokens
/// whose key is known never wait for any fetch: keys are swapped in atomically by the
/// background refresh.
///
/// ```
/// use std::time::Duration;
/// use mtls_jwt::{Algorithm, Error, JwksSource, SigningKey, TokenSpec, Validator};
///
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let validator = Validator::builder()
///     .jwks(JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
///     .issuer("https://issuer.test")
///     .audience("bookstore")
///     .build()?;
///
/// let spec = TokenSpec::new(Duration::from_secs(300)).issuer("https://issuer.test");
/// let token = key.mint(&spec.clone().audience("bookstore"))?;
/// let claims = validator.validate_now(&token)?;
/// assert_eq!(claims.audiences(), ["bookstore"]);
///
/// let other = key.mint(&spec.audience("elsewhere"))?;
/// let err = validator.validate_now(&other).unwrap_err();
/// assert!(matches!(err, Error::AudienceNotAllowed { .. }));
/// assert_eq!(err.http_status(), 403);
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Option<Arc<KeyStore>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    allowed_names: Vec<String>,
    hmac: Option<Vec<u8>>,
    require_exp: bool,
    leeway: i64,
    max_lifetime: Option<u64>,
    typ: TypRule,
    checks: Vec<(String, Check)>,
    max_token_size: usize,
    cache: TokenCache,
    jwt_svid: bool,
    first_fetch_wait: Duration,
    location: TokenLocation,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("issuers", &self.inner.issuers)
            .field("audiences", &self.inner.audiences)
            .field("algorithms", &self.inner.algorithms)
            .field("jwt_svid", &self.inner.jwt_svid)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

impl Header {
    /// The JOSE header: a JSON object (RFC 7515 §5.2) of valid UTF-8. Parsing into a
    /// `Value` first validates every member (serde skips ignored members unchecked, and
    /// would fill the struct by position from an array).
    fn parse(json: &[u8]) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedHeader { reason };
        let value: Value = serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))?;
        if !value.is_object() {
            return Err(malformed(format!(
                "the JOSE header must be a JSON object, presented {}",
                json_kind(&value)
            )));
        }
        serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

impl Validator {
    /// A builder with Envoy-like defaults.
    pub fn builder() -> ValidatorBuilder {
        ValidatorBuilder::default()
    }

    /// Validates `token` with the keys at hand; never waits. A token naming an unknown `kid`
    /// of a remote JWKS fails with [`Error::UnknownKid`] and starts a background refetch
    /// (rate-limited), so a retry may succeed.
    pub fn validate_now(&self, token: &str) -> Result<Claims> {
        let seen = self.generation();
        let result = self.check(token, true);
        if let (Err(e), Some(store)) = (&result, &self.inner.store)
            && e.is_key_miss()
            && store.is_remote()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = store.clone();
            runtime.spawn(async move {
                store.refetch_for_miss(seen, Duration::ZERO).await;
            });
        }
        crate::metrics::verdict(&result);
        result
    }

    /// Validates `token`. Waits only when its key is unknown, and only for a refetch it
    /// starts itself (at most once per the source's `refetch_min_interval`, for at most its
    /// `miss_wait`), never behind a fetch in flight; then the token is checked again. The
    /// exception is start-up: until a remote JWKS's first fetch has ended, a token waits for
    /// it, at most until [`ValidatorBuilder::first_fetch_wait`] after the build.
    pub async fn validate(&self, token: &str) -> Result<Claims> {
        let seen = self.generation();
        let result = match self.check(token, true) {
            Err(e) if e.is_key_miss() => {
                match self.inner.store.as_ref().filter(|s| s.is_remote()) {
                    Some(store) => {
                        store
                            .refetch_for_miss(seen, self.inner.first_fetch_wait)
                            .await;
                        // Checked again whether or not the keys changed: after the wait, a
                        // failure names what the fetch ran into (not "no JWKS fetched yet").
                        self.check(token, false)
                    }
                    None => Err(e),
                }
            }
            result => result,
        };
        crate::metrics::verdict(&result);
        result
    }

    /// Validates `token` and deserializes its claims into `T`.
    pub async fn validate_as<T: DeserializeOwned>(&self, token: &str) -> Result<T> {
        self.validate(token).await?.deserialize()
    }

    /// Finds the token in `headers` (see [`ValidatorBuilder::token_location`]) and validates
    /// it; no token is [`Error::Missing`].
    pub async fn validate_headers(&self, headers: &http::HeaderMap) -> Result<Claims> {
        self.validate(self.find_token(headers)?).await
    }

    /// The token in `headers`, where this validator looks for it
    /// ([`ValidatorBuilder::token_location`]); no token is [`Error::Missing`].
    ///
    /// ```
    /// use mtls_jwt::{JwksSource, TokenLocation, Validator};
    /// # let jwks = mtls_jwt::jwks_json([mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256)?.jwk(None)]);
    /// let v = Validator::builder()
    ///     .jwks(JwksSource::inline(jwks))
    ///     .token_location(TokenLocation::header("x-jwt-assertion")?)
    ///     .build()?;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("authorization", "Bearer a.b.c".parse()?);
    /// assert!(v.find_token(&headers).is_err(), "not where it looks");
    /// headers.insert("x-jwt-assertion", "d.e.f".parse()?);
    /// assert_eq!(v.find_token(&headers)?, "d.e.f");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Result<&'h str> {
        let found = self.inner.location.find(headers);
        if let Err(error) = &found {
            crate::metrics::denied(error);
        }
        found
    }

    /// Fetches a remote JWKS now (after any fetch in progress). True if the keys changed.
    pub async fn refresh(&self) -> Result<bool> {
        match &self.inner.store {
            Some(store) => store.refresh().await,
            None => Ok(false),
        }
    }

    /// Waits up to `timeout` for keys (a remote JWKS's first fetch). True if keys are loaded.
    pub async fn wait_for_keys(&self, timeout: Duration) -> bool {
        match &self.inner.store {
            Some(store) => store.wait_loaded(timeout).await,
            None => true,
        }
    }

    /// The `kid`s of the keys in use (empty before a remote JWKS's first fetch).
    pub fn key_ids(&self) -> Vec<String> {
        self.inner
            .store
            .as_ref()
            .and_then(|s| s.load().as_ref().map(|l| l.set.key_ids()))
            .unwrap_or_default()
    }

    /// The [`Source`](mtls_identity::source::Source) of the key set this validator
    /// follows (`None` with an HMAC secret only): for another validator
    /// ([`JwksSource::source`]) or to watch rotations with `changed()`. A remote source's
    /// holds no keys until the first fetch.
    ///
    /// ```
    /// # fn main() -> Result<(), mtls_jwt::Error> {
    /// let key = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256)?;
    /// let v = mtls_jwt::Validator::builder()
    ///     .jwks(mtls_jwt::JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
    ///     .build()?;
    /// assert_eq!(v.jwks().expect("a key source").current().key_ids(), [key.kid()]);
    /// # Ok(()) }
    /// ```
    pub fn jwks(&self) -> Option<mtls_identity::source::Source<KeySet>> {
        self.inner.store.as_ref().map(|s| s.source())
    }

    /// The verdict on `token` from the verified-token cache, without verifying a signature
    /// or waiting: `Some` when this token was verified against the keys in use and is within
    /// its lifetime (the claim checks run again, as on every call), `None` otherwise — then
    /// [`validate`](Self::validate) does the work. A server layer can answer a cache hit
    /// synchronously, without a future of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator, jwks_json};
    /// let key = SigningKey::generate(Algorithm::ES256)?;
    /// let validator = Validator::builder()
    ///     .jwks(JwksSource::inline(jwks_json([key.jwk(Some(key.kid()))])))
    ///     .audience("bookstore")
    ///     .build()?;
    /// let token = key.mint(&TokenSpec::new(Duration::from_secs(300)).audience("bookstore"))?;
    /// assert!(validator.validate_cached(&token).is_none(), "not verified yet");
    /// validator.validate_now(&token)?;
    /// let claims = validator.validate_cached(&token).expect("a cache hit")?;
    /// assert_eq!(claims.audiences(), ["bookstore"]);
    /// # Ok::<(), mtls_jwt::Error>(())
    /// ```
    pub fn validate_cached(&self, token: &str) -> Option<Result<Claims>> {
        let verdict = self.cache_hit(token, self.generation(), unix_now())?;
        crate::metrics::cache_lookup(true);
        crate::metrics::verdict(&verdict);
        Some(verdict)
    }

    fn cache_hit(&self, token: &str, generation: u64, now: i64) -> Option<Result<Claims>> {
        let claims = self.inner.cache.get(token, generation, now)?;
        Some(self.check_claims(&claims, now).map(|()| claims))
    }

    fn generation(&self) -> u64 {
        self.inner.store.as_ref().map_or(0, |s| s.generation())
    }

    /// `count_lookup`: count the cache lookup in `mtls.jwt.cache.lookups` (false for the
    /// second look after a refetch: one lookup per verdict).
    fn check(&self, token: &str, count_lookup: bool) -> Result<Claims> {
        let inner = &*self.inner;
        if token.is_empty() {
            return Err(Error::Missing);
        }
        if token.len() > inner.max_token_size {
            return Err(Error::TooLarge {
                size: token.len(),
                limit: inner.max_token_size,
            });
        }
        let now = unix_now();
        let keys = inner.store.as_ref().map(|s| s.load());
        let generation = keys
            .as_ref()
            .and_then(|k| k.as_ref().map(|l| l.generation))
            .unwrap_or(0);
        // The cache spares the signature verification and the parsing, never the verdict:
        // the claim checks (custom ones may depend on time or state) run on every call.
        let cached = self.cache_hit(token, generation, now);
        if count_lookup && inner.cache.is_enabled() {
            crate::metrics::cache_lookup(cached.is_some());
        }
        if let Some(verdict) = cached {
            return verdict;
        }

        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::WrongSegmentCount {
                found: token.split('.').count(),
            });
        };
        let header_json = b64(h).ok_or_else(|| Error::MalformedHeader {
            reason: "not base64url".into(),
        })?;
        let header = Header::parse(&header_json)?;
        let alg: Algorithm = header.alg.parse()?;
        if !inner.algorithms.contains(&alg) {
            return Err(Error::AlgorithmNotAllowed {
                presented: header.alg,
                allowed: inner.allowed_names.clone(),
            });
        }
        if let Some(names) = header.crit {
            return Err(Error::UnsupportedCritical { names });
        }
        self.check_typ(header.typ.as_deref())?;
        let signature = b64(s).ok_or(Error::MalformedSignature)?;
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];

        if alg.is_hmac() {
            let (Some(secret), Some(hmac_alg)) = (&inner.hmac, alg.hmac()) else {
                return Err(Error::NoKeyForAlgorithm {
                    alg: alg.to_string(),
                });
            };
            let key = aws_lc_rs::hmac::Key::new(hmac_alg, secret);
            aws_lc_rs::hmac::verify(&key, message, &signature).map_err(|_| Error::BadSignature)?;
        } else {
            let loaded = match (&inner.store, keys.as_ref()) {
                (Some(_), Some(guard)) => guard.as_ref(),
                _ => None,
            };
            let Some(loaded) = loaded else {
                return Err(match &inner.store {
                    Some(store) => store.not_loaded(),
                    None => Error::NoKeyForAlgorithm {
                        alg: alg.to_string(),
                    },
                });
            };
            loaded
                .set
                .verify(header.kid.as_deref(), alg, message, &signature)?;
        }

        let payload = b64(p).ok_or_else(|| Error::MalformedPayload {
            reason: "not base64url".into(),
        })?;
        let map: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|e| Error::MalformedPayload {
                reason: e.to_string(),
            })?;
        let claims = Claims::parse(map, alg, header.kid)?;
        if let Some(exp) = claims.expires_at() {
            inner.cache.insert(
                token,
                claims.clone(),
                exp.saturating_add(inner.leeway),
                generation,
                now,
            );
        }
        self.check_claims(&claims, now)?;
        tracing::trace!(iss = ?claims.issuer(), sub = ?claims.subject(), "token verified");
        Ok(claims)
    }

    fn check_typ(&self, typ: Option<&str>) -> Result<()> {
        match &self.inner.typ {
            TypRule::Any => Ok(()),
            TypRule::OneOf {
                values,
                allow_absent,
            } => {
                let ok = match typ {
                    None => *allow_absent,
                    Some(t) => values.iter().any(|v| v.eq_ignore_ascii_case(t)),
                };
                if ok {
                    Ok(())
                } else {
                    Err(Error::TypNotAllowed {
                        presented: typ.map(str::to_owned),
                        expected: format!(
                            "{}{values:?}",
                            if *allow_absent {
                                "absent or one of "
                            } else {
                                "one of "
                            }
                        ),
                    })
                }
            }
        }
    }

    fn check_claims(&self, claims: &Claims, now: i64) -> Result<()> {
        let inner = &*self.inner;
        if !inner.issuers.is_empty()
            && !claims
                .issuer()
                .is_some_and(|iss| inner.issuers.iter().any(|i| i == iss))
        {
            return Err(Error::IssuerNotAllowed {
                presented: claims.issuer().map(str::to_owned),
                expected: inner.issuers.clone(),
            });
        }
        let leeway = inner.leeway;
        match claims.expires_at() {
            Some(exp) if now > exp.saturating_add(leeway) => {
                return Err(Error::Expired {
                    exp,
                    now,
                    leeway: leeway as u64,
                });
            }
            None if inner.require_exp || inner.max_lifetime.is_some() => {
                return Err(Error::MissingClaim { claim: "exp" });
            }
            _ => {}
        }
        if let Some(nbf) = claims.not_before()
            && nbf > now.saturating_add(leeway)
        {
            return Err(Error::NotYetValid {
                nbf,
                now,
                leeway: leeway as u64,
            });
        }
        if let (Some(max), Some(exp)) = (inner.max_lifetime, claims.expires_at()) {
            // A future `iat` would shrink `exp - iat`: refuse it beyond the skew, and count
            // the lifetime from the earlier of `iat` and now.
            let issued = claims.issued_at().unwrap_or(now);
            if issued > now.saturating_add(leeway) {
                return Err(Error::IssuedInFuture {
                    iat: issued,
                    now,
                    leeway: leeway as u64,
                });
            }
            let lifetime = exp.saturating_sub(issued.min(now));
            if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
                return Err(Error::LifetimeTooLong { lifetime, max });
            }
        }
        if !inner.audiences.is_empty() {
            if claims.audiences().is_empty() {
                return Err(Error::AudienceMissing {
                    expected: inner.audiences.clone(),
                });
            }
            if !claims
                .audiences()
                .iter()
                .any(|a| inner.audiences.contains(a))
            {
                return Err(Error::AudienceNotAllowed {
                    presented: claims.audiences().to_vec(),
                    expected: inner.audiences.clone(),
                });
            }
        }
        if inner.jwt_svid {
            let sub = claims
                .subject()
                .ok_or(Error::MissingClaim { claim: "sub" })?;
            crate::claims::canonical_spiffe_id(sub).map_err(|e| Error::InvalidClaim {
                claim: "sub".into(),
                reason: format!("{sub:?} is not a canonical SPIFFE ID: {e}"),
            })?;
        }
        for (name, check) in &inner.checks {
            check(claims).map_err(|reason| Error::ClaimCheckFailed {
                check: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}
