//! Key pairs, public keys as JWKs (RFC 7638 thumbprints), and minting tokens: the helpers
//! behind `mtls jwt keygen|jwks|mint`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{Map, Value, json};

use crate::alg::Algorithm;
use crate::der;
use crate::error::{Error, Result};

fn key_err(reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        reason: reason.into(),
    }
}

/// A public key in JWK form (RFC 7517), with its RFC 7638 SHA-256 thumbprint.
///
/// ```
/// use mtls_jwt::{Algorithm, PublicKey, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::EdDSA)?;
/// let public = PublicKey::from_pem(&key.public_pem())?;
/// assert_eq!(public.thumbprint(), key.kid());
/// let jwk = public.to_jwk(Some("my-key"));
/// assert_eq!(jwk["kid"], "my-key");
/// assert_eq!(jwk["alg"], "EdDSA");
/// assert_eq!(jwk["use"], "sig");
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The required members only (`kty`, `crv`, `n`/`e`/`x`/`y`), as in the thumbprint.
    members: Map<String, Value>,
    algorithm: Algorithm,
    spki: Vec<u8>,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): RSA, EC P-256/384/521 or Ed25519.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            key_err(format!(
                "expected a PEM PUBLIC KEY: {}",
                mtls_identity::pem_error_words(&e)
            ))
        })?;
        Self::from_spki_der(der.as_ref())
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self> {
        if let Some(n @ 1..) = der::trailing(spki) {
            return Err(key_err(format!(
                "{n} bytes trailing after the DER SubjectPublicKeyInfo"
            )));
        }
        let parsed = der::spki(spki).ok_or_else(|| key_err("not a DER SubjectPublicKeyInfo"))?;
        let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        let mut members = Map::new();
        let algorithm = match (parsed.algorithm, parsed.parameter) {
            (der::OID_RSA, _) => {
                let (n, e) = der::rsa_public_key(parsed.key)
                    .ok_or_else(|| key_err("bad RSAPublicKey in the SPKI"))?;
                let bits = crate::jwk::rsa_bits(n);
                if !(crate::jwk::MIN_RSA_BITS..=crate::jwk::MAX_RSA_BITS).contains(&bits) {
                    return Err(key_err(format!(
                        "RSA key of {bits} bits: expected {} to {}",
                        crate::jwk::MIN_RSA_BITS,
                        crate::jwk::MAX_RSA_BITS
                    )));
                }
                members.insert("e".into(), b64(e));
                members.insert("kty".into(), "RSA".into());
                members.insert("n".into(), b64(n));
                Algorithm::RS256
            }
            (der::OID_EC, Some(curve)) => {
                let (crv, len, alg) = match curve {
                    der::OID_P256 => ("P-256", 32, Algorithm::ES256),
                    der::OID_P384 => ("P-384", 48, Algorithm::ES384),
                    der::OID_P521 => ("P-521", 66, Algorithm::ES512),
                    _ => return Err(key_err("unsupported EC curve")),
                };
                match parsed.key {
                    [4, xy @ ..] if xy.len() == 2 * len => {
                        members.insert("crv".into(), crv.into());
                        members.insert("kty".into(), "EC".into());
                        members.insert("x".into(), b64(&xy[..len]));
                        members.insert("y".into(), b64(&xy[len..]));
                    }
                    _ => return Err(key_err("EC point is not uncompressed")),
                }
                alg
            }
            (der::OID_ED25519, _) if parsed.key.len() == 32 => {
                members.insert("crv".into(), "Ed25519".into());
                members.insert("kty".into(), "OKP".into());
                members.insert("x".into(), b64(parsed.key));
                Algorithm::EdDSA
            }
            _ => return Err(key_err("unsupported public key algorithm")),
        };
        Ok(Self {
            members,
            algorithm,
            spki: spki.to_vec(),
        })
    }

    /// The algorithm this key signs with by default: RS256 for RSA, ES256/384/512 by curve,
    /// EdDSA for Ed25519.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256(canonical JSON of the required members)).
    pub fn thumbprint(&self) -> String {
        // serde_json's Map is ordered by key (no preserve_order feature here), so this is
        // the lexicographic, whitespace-free form RFC 7638 asks for.
        let canonical = Value::Object(self.members.clone()).to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// The JWK with `use: sig`, `alg` and `kid` (the thumbprint unless given).
    pub fn to_jwk(&self, kid: Option<&str>) -> Value {
        self.to_jwk_for(kid, self.algorithm)
    }

    /// The JWK for another algorithm of the same key type (e.g. PS256 for an RSA key).
    pub fn to_jwk_for(&self, kid: Option<&str>, alg: Algorithm) -> Value {
        let mut jwk = self.members.clone();
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), alg.as_str().into());
        jwk.insert(
            "kid".into(),
            kid.map_or_else(|| self.thumbprint(), str::to_owned).into(),
        );
        Value::Object(jwk)
    }

    /// The PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }
}

/// `{"keys": [...]}` from JWKs, pretty-printed.
///
/// ```
/// let key = mtls_jwt::SigningKey::generate(mtls_jwt::Algorithm::ES256)?;
/// let doc = mtls_jwt::jwks_json([key.public_key().to_jwk(None)]);
/// assert!(doc.contains(key.kid()));
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
pub fn jwks_json(keys: impl IntoIterator<Item = Value>) -> String {
    let doc = json!({ "keys": keys.into_iter().collect::<Vec<_>>() });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key (PKCS#8) with its public half: for dev tokens and tests.
///
/// ```
/// use mtls_jwt::{Algorithm, SigningKey, TokenSpec};
/// use std::time::Duration;
///
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let token = key.mint(
///     &TokenSpec::new(Duration::from_secs(300))
///         .issuer("https://issuer.test")
///         .audience("bookstore")
///         .subject("spiffe://example.org/client"),
/// )?;
/// assert_eq!(token.split('.').count(), 3);
/// assert!(key.private_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
/// # Ok::<(), mtls_jwt::Error>(())
/// ```
pub struct SigningKey {
    pair: Pair,
    algorithm: Algorithm,
    pkcs8: Vec<u8>,
    public: PublicKey,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a key for `alg`: RSA 2048 for RS*/PS*, the matching curve for ES*, Ed25519
    /// for EdDSA. HMAC is refused (use a secret).
    pub fn generate(alg: Algorithm) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => {
                let doc = EcdsaKeyPair::generate_pkcs8(ecdsa_signing(alg)?, &rng)
                    .map_err(|_| key_err("EC key generation failed"))?;
                doc.as_ref().to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| key_err("Ed25519 key generation failed"))?
                .as_ref()
                .to_vec(),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| key_err("RSA key generation failed"))?;
                let der: Pkcs8V1Der<'_> = pair
                    .as_der()
                    .map_err(|_| key_err("RSA key encoding failed"))?;
                der.as_ref().to_vec()
            }
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                return Err(key_err(
                    "HMAC algorithms use a shared secret, not a key pair",
                ));
            }
        };
        Self::from_pkcs8(&pkcs8, Some(alg))
    }

    /// Reads a PEM private key: PKCS#8 `PRIVATE KEY` (RSA, EC, Ed25519), PKCS#1
    /// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`. The algorithm is the key's default
    /// (see [`PublicKey::algorithm`]); change it with [`SigningKey::signing_algorithm`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            key_err(format!(
                "expected a PEM private key: {}",
                mtls_identity::pem_error_words(&e)
            ))
        })?;
        match der {
            PrivateKeyDer::Pkcs8(d) => Self::from_pkcs8(d.secret_pkcs8_der(), None),
            PrivateKeyDer::Pkcs1(d) => {
                let pair = RsaKeyPair::from_der(d.secret_pkcs1_der())
                    .map_err(|e| key_err(format!("bad RSA private key: {e}")))?;
                let pkcs8: Pkcs8V1Der<'_> = pair
                    .as_der()
                    .map_err(|_| key_err("RSA key encoding failed"))?;
                Self::from_pkcs8(pkcs8.as_ref(), None)
            }
            PrivateKeyDer::Sec1(d) => {
                for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::ES512] {
                    if let Ok(pair) =
                        EcdsaKeyPair::from_private_key_der(ecdsa_signing(alg)?, d.secret_sec1_der())
                    {
                        let pkcs8 = pair
                            .to_pkcs8v1()
                            .map_err(|_| key_err("EC key encoding failed"))?;
                        return Self::from_pkcs8(pkcs8.as_ref(), Some(alg));
                    }
                }
                Err(key_err("EC private key on an unsupported curve"))
            }
            _ => Err(key_err("unsupported private key format")),
        }
    }

    fn from_pkcs8(pkcs8: &[u8], alg: Option<Algorithm>) -> Result<Self> {
        let mut found = None;
        for ec in [Algorithm::ES256, Algorithm::ES384, Algorithm::ES512] {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(ecdsa_signing(ec)?, pkcs8) {
                found = Some((Pair::Ecdsa(pair), ec));
                break;
            }
        }
        if found.is_none() {
            if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
                found = Some((Pair::Ed25519(pair), Algorithm::EdDSA));
            } else if let Ok(pair) = RsaKeyPair::from_pkcs8(pkcs8) {
                found = Some((Pair::Rsa(pair), Algorithm::RS256));
            }
        }
        let (pair, default_alg) =
            found.ok_or_else(|| key_err("not an RSA, EC (P-256/384/521) or Ed25519 key"))?;
        let spki: PublicKeyX509Der<'_> = match &pair {
            Pair::Ecdsa(p) => p.public_key().as_der(),
            Pair::Ed25519(p) => p.public_key().as_der(),
            Pair::Rsa(p) => p.public_key().as_der(),
        }
        .map_err(|_| key_err("public key encoding failed"))?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        let kid = public.thumbprint();
        let key = Self {
            pair,
            algorithm: default_alg,
            pkcs8: pkcs8.to_vec(),
            public,
            kid,
        };
        match alg {
            Some(alg) => key.signing_algorithm(alg),
            None => Ok(key),
        }
    }

    /// Signs with `alg` instead of the key's default (RS256 → PS512, ...); refused if the key
    /// type does not fit.
    pub fn signing_algorithm(mut self, alg: Algorithm) -> Result<Self> {
        use Algorithm::*;
        let fits = match &self.pair {
            Pair::Rsa(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Pair::Ed25519(_) => alg == EdDSA,
            Pair::Ecdsa(_) => alg == self.public.algorithm(),
        };
        if !fits {
            return Err(key_err(format!(
                "a {} key cannot sign {alg}",
                self.public.algorithm()
            )));
        }
        self.algorithm = alg;
        Ok(self)
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id `mtls jwt jwks` gives this key: the RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PEM PKCS#8 (`PRIVATE KEY`). Write it with mode 0600.
    pub fn private_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key as PEM (`PUBLIC KEY`).
    pub fn public_pem(&self) -> String {
        self.public.to_pem()
    }

    /// The JWK of the public half, with `alg` set to this key's signing algorithm.
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        self.public.to_jwk_for(kid, self.algorithm)
    }

    /// Mints a signed token (`typ: JWT`, `kid` from the spec or the thumbprint).
    pub fn mint(&self, spec: &TokenSpec) -> Result<String> {
        let mut header = Map::new();
        header.insert("alg".into(), self.algorithm.as_str().into());
        header.insert("typ".into(), "JWT".into());
        match &spec.kid {
            KidChoice::Thumbprint => {
                header.insert("kid".into(), self.kid.clone().into());
            }
            KidChoice::Given(kid) => {
                header.insert("kid".into(), kid.clone().into());
            }
            KidChoice::None => {}
        }
        let now = spec.now.unwrap_or_else(SystemTime::now);
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Signing {
                reason: "the clock is before 1970".into(),
            })?
            .as_secs();
        let mut claims = Map::new();
        if let Some(iss) = &spec.issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        if let Some(sub) = &spec.subject {
            claims.insert("sub".into(), sub.clone().into());
        }
        match spec.audiences.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".into(), one.clone().into());
            }
            many => {
                claims.insert("aud".into(), many.to_vec().into());
            }
        }
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + spec.ttl.as_secs()).into());
        for (k, v) in &spec.extra {
            claims.insert(k.clone(), v.clone());
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Signs `message` with this key's algorithm (raw JWS signature bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let fail = |_| Error::Signing {
            reason: format!("{} signing failed", self.algorithm),
        };
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ecdsa(p) => Ok(p.sign(&rng, message).map_err(fail)?.as_ref().to_vec()),
            Pair::Ed25519(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Rsa(p) => {
                let encoding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0u8; p.public_modulus_len()];
                p.sign(encoding, &rng, message, &mut sig).map_err(fail)?;
                Ok(sig)
            }
        }
    }
}

fn ecdsa_signing(alg: Algorithm) -> Result<&'static signature::EcdsaSigningAlgorithm> {
    Ok(match alg {
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        other => return Err(key_err(format!("{other} is not an ECDSA algorithm"))),
    })
}

#[derive(Clone, Debug, Default)]
enum KidChoice {
    #[default]
    Thumbprint,
    Given(String),
    None,
}

/// What [`SigningKey::mint`] puts in a token. `iat` and `nbf` are now, `exp` is now + ttl.
///
/// ```
/// use std::time::Duration;
/// let spec = mtls_jwt::TokenSpec::new(Duration::from_secs(60))
///     .issuer("iss")
///     .audience("a")
///     .audience("b")
///     .claim("scope", "read")
///     .kid("k1");
/// # let _ = spec;
/// ```
#[derive(Clone, Debug)]
pub struct TokenSpec {
    issuer: Option<String>,
    subject: Option<String>,
    audiences: Vec<String>,
    ttl: Duration,
    kid: KidChoice,
    extra: Map<String, Value>,
    now: Option<SystemTime>,
}

impl TokenSpec {
    /// A token valid for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            issuer: None,
            subject: None,
            audiences: Vec::new(),
            ttl,
            kid: KidChoice::Thumbprint,
            extra: Map::new(),
            now: None,
        }
    }

    /// Sets `iss`.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// Sets `sub`.
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.subject = Some(sub.into());
        self
    }

    /// Adds an audience (one is written as a string, several as an array).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// Sets the header `kid` (default: the key's RFC 7638 thumbprint).
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = KidChoice::Given(kid.into());
        self
    }

    /// Leaves `kid` out of the header (validators then try every key of the `alg`).
    pub fn no_kid(mut self) -> Self {
        self.kid = KidChoice::None;
        self
    }

    /// Adds (or overrides) a claim.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Mints as if the clock read `now` (for tests of expired/not-yet-valid tokens).
    pub fn issued_at(mut self, now: SystemTime) -> Self {
        self.now = Some(now);
        self
    }
}

/// PEM-encodes `der` with 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::EdDSA,
            Algorithm::RS256,
        ] {
            let key = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pem(&key.private_pem()).unwrap();
            assert_eq!(again.kid(), key.kid());
            assert_eq!(again.algorithm(), alg);
            let public = PublicKey::from_pem(&key.public_pem()).unwrap();
            assert_eq!(public.thumbprint(), key.kid());
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // The RSA key of RFC 7638 §3.1 and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let e = URL_SAFE_NO_PAD.decode("AQAB").unwrap();
        let n = URL_SAFE_NO_PAD.decode(n).unwrap();
        let rsa = der::encode_rsa_public_key(&n, &e);
        // SPKI around it: AlgorithmIdentifier rsaEncryption NULL, BIT STRING.
        let mut alg_id = vec![0x30, 0x0d, 0x06, 0x09];
        alg_id.extend_from_slice(der::OID_RSA);
        alg_id.extend_from_slice(&[0x05, 0x00]);
        let mut bits = vec![0u8];
        bits.extend(rsa);
        let mut body = alg_id;
        body.push(0x03);
        body.push(0x82);
        body.extend_from_slice(&(bits.len() as u16).to_be_bytes());
        body.extend(bits);
        let mut spki = vec![0x30, 0x82];
        spki.extend_from_slice(&(body.len() as u16).to_be_bytes());
        spki.extend(body);
        let public = PublicKey::from_spki_der(&spki).unwrap();
        assert_eq!(
            public.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn hmac_and_mismatched_algorithms_are_refused() {
        assert!(SigningKey::generate(Algorithm::HS256).is_err());
        let ec = SigningKey::generate(Algorithm::ES256).unwrap();
        assert!(matches!(
            ec.signing_algorithm(Algorithm::RS256),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            PublicKey::from_pem("not pem"),
            Err(Error::InvalidKey { .. })
        ));
    }
}
