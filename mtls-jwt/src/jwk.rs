//! A parsed JWKS: verification keys, pre-parsed once so each validation only verifies.

use std::fmt;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::alg::Algorithm;
use crate::der;
use crate::error::{Error, Result};

/// The key type and curve of a JWK: which algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    P521,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::P521 => alg == ES512,
            Self::Ed25519 => alg == EdDSA,
        }
    }

    fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Self::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Self::P256 => &[ES256],
            Self::P384 => &[ES384],
            Self::P521 => &[ES512],
            Self::Ed25519 => &[EdDSA],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::P256 => "EC P-256",
            Self::P384 => "EC P-384",
            Self::P521 => "EC P-521",
            Self::Ed25519 => "OKP Ed25519",
        }
    }
}

/// One verification key of a JWKS.
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<String>,
    /// The JWK's own `alg`, as written.
    jwk_alg: Option<String>,
    /// `Some(description)` when `use`/`key_ops` say the key is not for verifying signatures.
    not_for_signing: Option<String>,
    /// `Some(bits)` for an RSA key outside 2048–8192 bits: kept so a token naming it is
    /// told why, never used.
    refused_rsa_bits: Option<usize>,
    kind: KeyKind,
    /// One parsed key per algorithm the key may verify.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.jwk_alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Why this key may not verify a token signed with `alg`, if it may not.
    pub(crate) fn refuse(&self, alg: Algorithm) -> Option<Error> {
        let kid = || self.kid.clone().unwrap_or_default();
        if let Some(bits) = self.refused_rsa_bits {
            return Some(Error::WeakKey { kid: kid(), bits });
        }
        if let Some(key_use) = &self.not_for_signing {
            return Some(Error::KeyNotForSignature {
                kid: kid(),
                key_use: key_use.clone(),
            });
        }
        if let Some(jwk_alg) = &self.jwk_alg
            && jwk_alg != alg.as_str()
        {
            return Some(Error::KeyAlgorithmMismatch {
                kid: kid(),
                key_alg: jwk_alg.clone(),
                token_alg: alg.as_str().to_owned(),
            });
        }
        if !self.kind.fits(alg) {
            return Some(Error::KeyAlgorithmMismatch {
                kid: kid(),
                key_alg: self.kind.name().to_owned(),
                token_alg: alg.as_str().to_owned(),
            });
        }
        None
    }

    /// Verifies `signature` over `message` with `alg` (which [`Self::refuse`] accepted).
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    fn parse(jwk: &Value) -> std::result::Result<Self, String> {
        let obj = jwk.as_object().ok_or("a key is not a JSON object")?;
        let text = |name: &str| -> std::result::Result<Option<&str>, String> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("[{name}] is not a string")),
            }
        };
        let b64 = |name: &str| -> std::result::Result<Vec<u8>, String> {
            let s = text(name)?.ok_or_else(|| format!("[{name}] is missing"))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|e| format!("[{name}] is not base64url: {e}"))
        };
        let kid = text("kid")?.map(str::to_owned);
        let kty = text("kty")?.ok_or("[kty] is missing")?;
        let (kind, bytes) = match (kty, text("crv")?) {
            ("RSA", _) => {
                let n = b64("n")?;
                let e = b64("e")?;
                let bits = rsa_bits(&n);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Ok(Self {
                        kid,
                        jwk_alg: text("alg")?.map(str::to_owned),
                        not_for_signing: None,
                        refused_rsa_bits: Some(bits),
                        kind: KeyKind::Rsa,
                        parsed: Vec::new(),
                    });
                }
                (KeyKind::Rsa, der::encode_rsa_public_key(&n, &e))
            }
            ("EC", Some(crv)) => {
                let (kind, len) = match crv {
                    "P-256" => (KeyKind::P256, 32),
                    "P-384" => (KeyKind::P384, 48),
                    "P-521" => (KeyKind::P521, 66),
                    other => return Err(format!("EC curve {other:?} is not supported")),
                };
                let (x, y) = (b64("x")?, b64("y")?);
                if x.len() != len || y.len() != len {
                    return Err(format!("{crv} [x]/[y] must be {len} bytes each"));
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                (kind, point)
            }
            ("OKP", Some("Ed25519")) => (KeyKind::Ed25519, b64("x")?),
            ("oct", _) => {
                return Err("symmetric (oct) keys in a JWKS are never used; \
                            configure an HMAC secret on the validator instead"
                    .into());
            }
            (kty, crv) => return Err(format!("key type {kty:?} (crv {crv:?}) is not supported")),
        };
        let jwk_alg = text("alg")?.map(str::to_owned);
        let not_for_signing = match (text("use")?, obj.get("key_ops")) {
            (Some(u), _) if u != "sig" => Some(format!("use: {u}")),
            (_, Some(Value::Array(ops))) if !ops.iter().any(|o| o == "verify") => {
                Some(format!("key_ops: {}", Value::Array(ops.clone())))
            }
            _ => None,
        };
        let algs: Vec<Algorithm> = match jwk_alg.as_deref().map(str::parse::<Algorithm>) {
            Some(Ok(alg)) if kind.fits(alg) => vec![alg],
            _ => kind.algorithms().to_vec(),
        };
        let mut parsed = Vec::with_capacity(algs.len());
        for alg in algs {
            let Some(verification) = alg.verification() else {
                continue;
            };
            let key = ParsedPublicKey::new(verification, &bytes)
                .map_err(|e| format!("{} key rejected: {e}", kind.name()))?;
            parsed.push((alg, key));
        }
        Ok(Self {
            kid,
            jwk_alg,
            not_for_signing,
            refused_rsa_bits: None,
            kind,
            parsed,
        })
    }

    /// Why the key can never verify anything, if it cannot.
    fn unusable(&self) -> Option<String> {
        let kid = self.kid.as_deref().unwrap_or("");
        if let Some(bits) = self.refused_rsa_bits {
            return Some(format!(
                "key {kid:?} is an RSA key of {bits} bits, expected {MIN_RSA_BITS} to {MAX_RSA_BITS}"
            ));
        }
        self.not_for_signing
            .as_ref()
            .map(|u| format!("key {kid:?} is not for signatures ({u})"))
    }
}

/// RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used" with RS*/PS*.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus aws-lc-rs verifies with (`RSA_PKCS1_2048_8192_*`, `RSA_PSS_2048_8192_*`):
/// a larger key could never verify a token (they would fail as a bad signature), and each
/// attempt would cost a 16384-bit modular exponentiation.
pub(crate) const MAX_RSA_BITS: usize = 8192;

/// How many reasons the summary of skipped keys (log line, error) shows.
const SHOWN: usize = 4;

/// The size of an RSA modulus in bits (leading zero bytes and bits not counted).
pub(crate) fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize)
}

/// A parsed JWKS (RFC 7517 `{"keys": [...]}`): the verification keys a validator uses.
///
/// Keys that cannot be parsed (unknown key types or curves, bad base64, invalid points,
/// symmetric `oct` keys) are skipped; RSA keys outside 2048–8192 bits are refused (a token
/// naming such a key fails with [`Error::WeakKey`], naming its size). Skipped and refused
/// keys are logged as one warning per document: how many, and the first few reasons. A set
/// left with no usable key is an error saying why, key by key (the first few).
/// Several keys may share a `kid`: each that fits the token's algorithm is tried.
/// Keys whose `use` is not `sig` stay in the set so a token naming them fails with
/// [`Error::KeyNotForSignature`] rather than [`Error::UnknownKid`], but they do not count as
/// usable keys.
///
/// ```
/// let key = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256)?;
/// let jwks = mtls_jwt::jwks_json([key.public_key().to_jwk(None)]);
/// let set = mtls_jwt::KeySet::from_json(&jwks)?;
/// assert_eq!(set.key_ids(), vec![key.kid().to_string()]);
/// assert!(matches!(
///     mtls_jwt::KeySet::from_json(r#"{"keys": []}"#),
///     Err(mtls_jwt::Error::EmptyJwks { .. })
/// ));
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    document: Value,
    /// Keys of the document left out or unusable (the `skipped` of `mtls.jwt.jwks.keys`).
    skipped: usize,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.keys).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document.
    pub fn from_json(json: &str) -> Result<Self> {
        let document: Value = serde_json::from_str(json).map_err(|e| Error::InvalidJwks {
            reason: e.to_string(),
        })?;
        Self::from_value(document)
    }

    /// Parses a JWKS already read as JSON.
    pub fn from_value(document: Value) -> Result<Self> {
        Self::from_source(document, "inline JWKS")
    }

    /// [`KeySet::from_value`] for a document from `source` (URL or file), named in the log.
    pub(crate) fn from_source(document: Value, source: &str) -> Result<Self> {
        let Some(keys) = document.get("keys") else {
            return Err(Error::InvalidJwks {
                reason: "Jwks does not have [keys] field".into(),
            });
        };
        let Some(keys) = keys.as_array() else {
            return Err(Error::InvalidJwks {
                reason: "[keys] in Jwks is not an array".into(),
            });
        };
        let mut parsed = Vec::with_capacity(keys.len());
        // Why keys cannot be used: the first few reasons, and how many there are in all.
        let mut refused: Vec<String> = Vec::new();
        let mut refused_count = 0usize;
        let mut refuse = |reason: String| {
            refused_count += 1;
            if refused.len() < SHOWN {
                refused.push(reason);
            }
        };
        for (i, jwk) in keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
            match VerifyingKey::parse(jwk) {
                Ok(key) => {
                    if let Some(reason) = key.unusable() {
                        refuse(format!("#{i}: {reason}"));
                    }
                    parsed.push(key);
                }
                Err(reason) => refuse(format!("#{i} key {kid:?}: {reason}")),
            }
        }
        let summary = |head: String| {
            let mut text = head;
            for r in &refused {
                text.push_str("; ");
                text.push_str(r);
            }
            if refused_count > refused.len() {
                text.push_str(&format!("; and {} more", refused_count - refused.len()));
            }
            text
        };
        if parsed.iter().all(|k| k.unusable().is_some()) {
            return Err(Error::EmptyJwks {
                reason: summary(format!("{} keys, none usable", keys.len())),
            });
        }
        if refused_count > 0 {
            // One line per document, however many keys it holds.
            tracing::warn!(
                source,
                skipped = refused_count,
                keys = keys.len(),
                reasons = %summary(format!("{refused_count} of {} keys cannot verify tokens", keys.len())),
                "JWKS keys skipped"
            );
        }
        Ok(Self {
            keys: parsed,
            document,
            skipped: refused_count,
        })
    }

    /// No keys: what a remote source's publisher holds before the first fetch (never used
    /// to validate: the store has no keys until then).
    #[cfg(feature = "remote")]
    pub(crate) fn empty() -> Self {
        Self {
            keys: Vec::new(),
            document: serde_json::json!({ "keys": [] }),
            skipped: 0,
        }
    }

    /// Keys of the document that verify tokens, and keys left out or unusable.
    pub(crate) fn usable_and_skipped(&self) -> (usize, usize) {
        let usable = self.keys.iter().filter(|k| k.unusable().is_none()).count();
        (usable, self.skipped)
    }

    /// The `kid`s of the keys (keys without one are left out).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    /// How many keys the set holds (including keys not for signatures).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if the set holds no key (never true for a set built by [`KeySet::from_json`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The document the set was parsed from.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Verifies a signature: the key named by `kid`, or (without `kid`) every key that fits `alg`.
    pub(crate) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        match kid {
            Some(kid) => {
                // `kid` need not be unique (RFC 7517 §4.5 only says SHOULD when keys share a
                // `kty`): try every key of that `kid` that fits the algorithm, as Envoy does.
                let mut refusal = None;
                let mut tried = false;
                for key in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    match key.refuse(alg) {
                        None if key.verify(alg, message, signature) => return Ok(()),
                        None => tried = true,
                        Some(e) => refusal = refusal.or(Some(e)),
                    }
                }
                if tried {
                    return Err(Error::BadSignature);
                }
                Err(refusal.unwrap_or_else(|| Error::UnknownKid {
                    kid: kid.to_owned(),
                }))
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.refuse(alg).is_none());
                let mut any = false;
                for key in candidates.by_ref() {
                    any = true;
                    if key.verify(alg, message, signature) {
                        return Ok(());
                    }
                }
                if any {
                    Err(Error::BadSignature)
                } else {
                    Err(Error::NoKeyForAlgorithm {
                        alg: alg.as_str().to_owned(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_keys_are_skipped_and_an_empty_set_refused() {
        let err = KeySet::from_value(
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}),
        )
        .unwrap_err();
        assert!(matches!(err, Error::EmptyJwks { .. }), "{err}");
        let err = KeySet::from_value(json!({"nokeys": []})).unwrap_err();
        assert!(matches!(err, Error::InvalidJwks { .. }), "{err}");
        let err = KeySet::from_json("{").unwrap_err();
        assert!(matches!(err, Error::InvalidJwks { .. }), "{err}");
        let err =
            KeySet::from_value(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).unwrap_err();
        assert!(matches!(err, Error::EmptyJwks { .. }), "{err}");
    }
}
