//! [`ValidatorBuilder`]: what a [`Validator`] accepts, checked and assembled by `build`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::claims::{Check, ClaimRules};
use super::jose::{JoseRules, TypRule};
use super::{Inner, Validator};
use crate::alg::{self, Algorithm};
use crate::bearer::TokenLocation;
use crate::cache::TokenCache;
use crate::claims::Claims;
use crate::error::{Error, Result};
use crate::source::{JwksSource, KeyStore};

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
        Ok(Validator {
            inner: Arc::new(Inner {
                store,
                jose: JoseRules::new(algorithms, self.typ),
                claims: ClaimRules {
                    issuers: self.issuers,
                    audiences: self.audiences,
                    require_exp: self.require_exp,
                    leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX / 2),
                    max_lifetime: self.max_lifetime.map(|d| d.as_secs()),
                    jwt_svid: self.jwt_svid,
                    checks: self.checks,
                },
                hmac,
                max_token_size: self.max_token_size,
                cache: TokenCache::new(self.cache_capacity),
                first_fetch_wait: self.first_fetch_wait,
                location: self.location,
            }),
        })
    }
}
