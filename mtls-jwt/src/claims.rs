//! Validated claims: the standard ones parsed, every claim kept.

use mtls_identity::SpiffeId;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::error::{Error, Result};

/// The claims of a validated token. Cheap to clone (an `Arc` inside).
///
/// ```
/// # use std::time::Duration;
/// # use mtls_jwt::*;
/// # let key = SigningKey::generate(Algorithm::ES256)?;
/// # let validator = Validator::builder()
/// #     .jwks(JwksSource::inline(jwks_json([key.jwk(None)])))
/// #     .issuer("https://issuer.test").audience("bookstore").build()?;
/// # let token = key.mint(&TokenSpec::new(Duration::from_secs(60))
/// #     .issuer("https://issuer.test").audience("bookstore").subject("alice").claim("scope", "read"))?;
/// let claims: Claims = validator.validate_now(&token)?;
/// assert_eq!(claims.issuer(), Some("https://issuer.test"));
/// assert_eq!(claims.subject(), Some("alice"));
/// assert_eq!(claims.audiences(), ["bookstore"]);
/// assert_eq!(claims.get("scope").and_then(|v| v.as_str()), Some("read"));
///
/// #[derive(serde::Deserialize)]
/// struct Mine { scope: String }
/// let mine: Mine = claims.deserialize()?;
/// assert_eq!(mine.scope, "read");
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
#[derive(Clone)]
pub struct Claims(Arc<Inner>);

struct Inner {
    map: Map<String, Value>,
    issuer: Option<String>,
    subject: Option<String>,
    audiences: Vec<String>,
    expires: Option<i64>,
    not_before: Option<i64>,
    issued_at: Option<i64>,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.0.issuer)
            .field("sub", &self.0.subject)
            .field("aud", &self.0.audiences)
            .field("exp", &self.0.expires)
            .field("alg", &self.0.algorithm)
            .field("kid", &self.0.kid)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.0.map == other.0.map
    }
}

/// A SPIFFE ID as go-spiffe's `spiffeid.FromString` reads it: the family's strict parser
/// (nothing lower-cased or ignored), the reason in words.
pub(crate) fn canonical_spiffe_id(text: &str) -> std::result::Result<SpiffeId, String> {
    SpiffeId::new(text).map_err(|e| match e {
        mtls_identity::Error::InvalidSpiffeId { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn string_claim(map: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::InvalidClaim {
            claim: name.into(),
            reason: format!("expected a string, found {other}"),
        }),
    }
}

fn time_claim(map: &Map<String, Value>, name: &str) -> Result<Option<i64>> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| Error::InvalidClaim {
                claim: name.into(),
                reason: format!("{n} is not a NumericDate"),
            }),
        Some(other) => Err(Error::InvalidClaim {
            claim: name.into(),
            reason: format!("expected a NumericDate, found {other}"),
        }),
    }
}

impl Claims {
    /// Reads the standard claims from a payload object, refusing badly typed ones.
    pub(crate) fn parse(
        map: Map<String, Value>,
        algorithm: Algorithm,
        kid: Option<String>,
    ) -> Result<Self> {
        let audiences = match map.get("aud") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Error::InvalidClaim {
                            claim: "aud".into(),
                            reason: format!("expected strings, found {v}"),
                        })
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::InvalidClaim {
                    claim: "aud".into(),
                    reason: format!("expected a string or an array, found {other}"),
                });
            }
        };
        Ok(Self(Arc::new(Inner {
            issuer: string_claim(&map, "iss")?,
            subject: string_claim(&map, "sub")?,
            expires: time_claim(&map, "exp")?,
            not_before: time_claim(&map, "nbf")?,
            issued_at: time_claim(&map, "iat")?,
            audiences,
            map,
            algorithm,
            kid,
        })))
    }

    /// `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }

    /// `aud` (a single string becomes one element).
    pub fn audiences(&self) -> &[String] {
        &self.0.audiences
    }

    /// `exp` in seconds since the epoch.
    pub fn expires_at(&self) -> Option<i64> {
        self.0.expires
    }

    /// `nbf` in seconds since the epoch.
    pub fn not_before(&self) -> Option<i64> {
        self.0.not_before
    }

    /// `iat` in seconds since the epoch.
    pub fn issued_at(&self) -> Option<i64> {
        self.0.issued_at
    }

    /// The header's `alg`.
    pub fn algorithm(&self) -> Algorithm {
        self.0.algorithm
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.0.kid.as_deref()
    }

    /// Any claim by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.map.get(name)
    }

    /// Every claim.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0.map
    }

    /// `sub` as a SPIFFE ID in canonical form (for JWT-SVIDs; the JWT-SVID profile has
    /// already checked it). `None` when `sub` is absent or not a canonical SPIFFE ID.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.subject().and_then(|s| canonical_spiffe_id(s).ok())
    }

    /// The claims as your own type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&Value::Object(self.0.map.clone())).map_err(|e| Error::ClaimsType {
            reason: e.to_string(),
        })
    }
}

impl serde::Serialize for Claims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.map.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Claims> {
        let Value::Object(map) = v else { panic!() };
        Claims::parse(map, Algorithm::ES256, None)
    }

    #[test]
    fn standard_claims_are_typed() {
        let c = parse(json!({"aud": ["a", "b"], "exp": 10.7, "iss": "i"})).unwrap();
        assert_eq!(c.audiences(), ["a", "b"]);
        assert_eq!(c.expires_at(), Some(10));
        assert!(
            matches!(parse(json!({"exp": "soon"})), Err(Error::InvalidClaim { claim, .. }) if claim == "exp")
        );
        assert!(
            matches!(parse(json!({"aud": [1]})), Err(Error::InvalidClaim { claim, .. }) if claim == "aud")
        );
        assert!(
            matches!(parse(json!({"iss": 3})), Err(Error::InvalidClaim { claim, .. }) if claim == "iss")
        );
    }
}
