//! The validator: the token's segments, the signature, the verified-token cache and the
//! JWKS refetch on a key miss. Its builder ([`builder`]), the JOSE header rules ([`jose`]) and
//! the claim rules ([`claims`]) live beside it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bearer::TokenLocation;
use crate::cache::TokenCache;
use crate::claims::Claims;
use crate::error::{Error, Result};
use crate::jwk::KeySet;
use crate::source::KeyStore;

mod builder;
mod claims;
mod jose;

pub use builder::ValidatorBuilder;
use claims::ClaimRules;
use jose::JoseRules;

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
    jose: JoseRules,
    claims: ClaimRules,
    hmac: Option<Vec<u8>>,
    max_token_size: usize,
    cache: TokenCache,
    first_fetch_wait: Duration,
    location: TokenLocation,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("issuers", &self.inner.claims.issuers)
            .field("audiences", &self.inner.claims.audiences)
            .field("algorithms", &self.inner.jose.algorithms)
            .field("jwt_svid", &self.inner.claims.jwt_svid)
            .finish_non_exhaustive()
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
    /// ([`JwksSource::source`](crate::JwksSource::source)) or to watch rotations with
    /// `changed()`. A remote source's holds no keys until the first fetch.
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
        Some(self.inner.claims.check(&claims, now).map(|()| claims))
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
        let jose::Accepted { alg, kid } = inner.jose.check(&header_json)?;
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
                .verify(kid.as_deref(), alg, message, &signature)?;
        }

        let payload = b64(p).ok_or_else(|| Error::MalformedPayload {
            reason: "not base64url".into(),
        })?;
        let map: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|e| Error::MalformedPayload {
                reason: e.to_string(),
            })?;
        let claims = Claims::parse(map, alg, kid)?;
        if let Some(exp) = claims.expires_at() {
            inner.cache.insert(
                token,
                claims.clone(),
                exp.saturating_add(inner.claims.leeway),
                generation,
                now,
            );
        }
        self.inner.claims.check(&claims, now)?;
        tracing::trace!(iss = ?claims.issuer(), sub = ?claims.subject(), "token verified");
        Ok(claims)
    }
}
