//! SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md §4): one trust domain's X.509 and JWT
//! authorities in one JWK Set, with `spiffe_sequence` and `spiffe_refresh_hint`, and a set
//! of them keyed by trust domain ([`BundleSet`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use data_encoding::{BASE64 as STANDARD, BASE64URL_NOPAD as URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::cert::LeafInfo;
use crate::error::{Error, Result};
use crate::identity::certs_from_pem;
use crate::san::SubjectAltName;
use crate::trust::TrustBundle;
use mtls_identity::{SpiffeId, TrustDomain};

/// The refresh interval a federation client uses when a bundle has no `spiffe_refresh_hint`
/// (SPIFFE_Federation.md §4.2 suggests five minutes).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// The `use` of an X.509 authority in a SPIFFE bundle.
const USE_X509: &str = "x509-svid";
/// The `use` of a JWT authority in a SPIFFE bundle.
const USE_JWT: &str = "jwt-svid";
/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One JWT authority of a bundle: a public key (a JWK) and its key ID.
///
/// ```
/// let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
///     "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
///     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
/// let authority = mtls_core::JwtAuthority::new("key-1", jwk)?;
/// assert_eq!(authority.kid(), "key-1");
/// assert_eq!(authority.jwk()["use"], "jwt-svid");
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    kid: String,
    /// The public members, without `use` and `kid` (added when emitted).
    members: Map<String, Value>,
}

impl JwtAuthority {
    /// A JWT authority from a public JWK (`kty` `RSA`, `EC` or `OKP`; its `use`, `kid`, `alg`
    /// members are replaced or kept as they fit a bundle). A private key is refused.
    ///
    /// ```
    /// let err = mtls_core::JwtAuthority::new("k", serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).unwrap_err();
    /// assert!(err.to_string().contains("private"), "{err}");
    /// ```
    pub fn new(kid: impl Into<String>, jwk: Value) -> Result<Self> {
        let kid = kid.into();
        let reason = |reason: String| Error::InvalidJwtAuthority {
            kid: kid.clone(),
            reason,
        };
        match Self::parse_members(&kid, jwk) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(reason(
                "expected kty RSA, EC or OKP, saw another key type".to_owned(),
            )),
            Err(r) => Err(reason(r)),
        }
    }

    /// `Ok(None)` for a key type we do not know (skipped by the parser).
    fn parse_members(kid: &str, jwk: Value) -> std::result::Result<Option<Self>, String> {
        let Value::Object(mut members) = jwk else {
            return Err("expected a JSON object, saw another JSON value".to_owned());
        };
        if kid.is_empty() {
            return Err("expected a non-empty kid, saw an empty one".to_owned());
        }
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| members.contains_key(**m)) {
            return Err(format!(
                "expected a public key, saw the private key member [{m}]"
            ));
        }
        match members.get("kty").and_then(Value::as_str) {
            Some("RSA" | "EC" | "OKP") => {}
            _ => return Ok(None),
        }
        members.remove("use");
        members.remove("kid");
        members.remove("x5c");
        Ok(Some(Self {
            kid: kid.to_owned(),
            members,
        }))
    }

    /// The key ID tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK as a bundle carries it: the public members, `use: jwt-svid`, `kid`.
    pub fn jwk(&self) -> Value {
        self.jwk_with_use(USE_JWT)
    }

    fn jwk_with_use(&self, key_use: &str) -> Value {
        let mut jwk = self.members.clone();
        jwk.insert("use".into(), key_use.into());
        jwk.insert("kid".into(), self.kid.clone().into());
        Value::Object(jwk)
    }
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("kid", &self.kid)
            .field("kty", &self.members.get("kty"))
            .finish()
    }
}

/// The SPIFFE bundle of one trust domain: its X.509 authorities (CA certificates that sign
/// X509-SVIDs), its JWT authorities (keys that sign JWT-SVIDs), and the `spiffe_sequence`
/// and `spiffe_refresh_hint` of the document.
///
/// Parsing follows the specification's "ignore what you do not understand" rule: a key
/// whose `use` is neither `x509-svid` nor `jwt-svid`, or whose `kty` is not `RSA`, `EC` or
/// `OKP`, is skipped and counted ([`SpiffeBundle::skipped`]), never fatal. A key we do
/// understand but that is wrong — an `x5c` that is not exactly one CA certificate in
/// standard base64, a CA naming another trust domain in a `spiffe://` URI SAN, a `jwt-svid`
/// key without a `kid` or with a `kid` seen before, a private key member — makes the
/// document an error ([`Error::InvalidBundle`]) naming what was expected and what was seen.
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// use std::time::Duration;
/// use mtls_core::SpiffeBundle;
///
/// let bundle = SpiffeBundle::new("example.org".parse()?)
///     .add_x509_authorities_pem(ca.cert_pem())?
///     .spiffe_sequence(7)
///     .spiffe_refresh_hint(Duration::from_secs(60));
/// let json = bundle.to_json();
///
/// let parsed = SpiffeBundle::parse("example.org".parse()?, &json)?;
/// assert_eq!(parsed, bundle);
/// assert_eq!(parsed.sequence(), Some(7));
/// assert_eq!(parsed.to_pem(), ca.cert_pem());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
    skipped: usize,
}

impl SpiffeBundle {
    /// An empty bundle of `trust_domain`.
    ///
    /// ```
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?);
    /// assert!(bundle.x509_authorities().is_empty());
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: None,
            refresh_hint: None,
            skipped: 0,
        }
    }

    /// Parses the SPIFFE bundle (JSON) of `trust_domain`; see [`SpiffeBundle`] for what
    /// is skipped and what is refused.
    ///
    /// ```
    /// let doc = r#"{"keys": [{"use": "wit-svid", "kty": "EC"}, {"use": "jwt-svid", "kty": "PQC"}],
    ///               "spiffe_sequence": 3}"#;
    /// let bundle = mtls_core::SpiffeBundle::parse("example.org".parse()?, doc)?;
    /// assert_eq!((bundle.skipped(), bundle.sequence()), (2, Some(3)));
    ///
    /// let err = mtls_core::SpiffeBundle::parse("example.org".parse()?, r#"{"keys": ["#).unwrap_err();
    /// assert!(err.to_string().contains("expected a JSON document"), "{err}");
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn parse(trust_domain: TrustDomain, json: &str) -> Result<Self> {
        Self::parse_checked(trust_domain, json, true)
    }

    /// [`SpiffeBundle::parse`]; without `check_domain`, a CA naming another trust domain is
    /// accepted (the document is read as a plain CA bundle).
    pub(crate) fn parse_checked(
        trust_domain: TrustDomain,
        json: &str,
        check_domain: bool,
    ) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidBundle {
            trust_domain: trust_domain.to_string(),
            reason,
        };
        let doc: Value = serde_json::from_str(json).map_err(|e| {
            invalid(format!(
                "expected a JSON document (a JWK Set), saw invalid JSON: {e}"
            ))
        })?;
        let Value::Object(doc) = doc else {
            return Err(invalid(
                "expected a JSON object (a JWK Set), saw another JSON value".to_owned(),
            ));
        };
        let keys = match doc.get("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(invalid("expected [keys] to be an array".to_owned())),
            None => {
                return Err(invalid(
                    "expected a JWK Set with a [keys] member, saw none".to_owned(),
                ));
            }
        };
        let number = |name: &str| -> Result<Option<u64>> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    invalid(format!(
                        "expected [{name}] to be a non-negative integer, saw {v}"
                    ))
                }),
            }
        };
        let mut bundle = Self::new(trust_domain.clone());
        bundle.sequence = number("spiffe_sequence")?;
        bundle.refresh_hint = number("spiffe_refresh_hint")?.map(Duration::from_secs);
        for (i, key) in keys.iter().enumerate() {
            bundle
                .parse_key(key, check_domain)
                .map_err(|reason| invalid(format!("key #{i}: {reason}")))?;
        }
        Ok(bundle)
    }

    fn parse_key(&mut self, key: &Value, check_domain: bool) -> std::result::Result<(), String> {
        let Value::Object(obj) = key else {
            return Err("expected a JSON object, saw another JSON value".to_owned());
        };
        let text = |name: &str| obj.get(name).and_then(Value::as_str);
        let known_kty = matches!(text("kty"), Some("RSA" | "EC" | "OKP"));
        match text("use") {
            Some(USE_X509) if known_kty => {
                let x5c = match obj.get("x5c") {
                    Some(Value::Array(x5c)) => x5c,
                    _ => {
                        return Err(
                            "use x509-svid: expected an [x5c] array with one certificate, saw none"
                                .to_owned(),
                        );
                    }
                };
                let [Value::String(b64)] = x5c.as_slice() else {
                    return Err(format!(
                        "use x509-svid: expected [x5c] to hold exactly one certificate, saw {} entries",
                        x5c.len()
                    ));
                };
                let der = STANDARD.decode(b64.as_bytes()).map_err(|e| {
                    format!("use x509-svid: expected [x5c] in standard base64, saw {e}")
                })?;
                let der = CertificateDer::from(der);
                check_authority(check_domain.then_some(&self.trust_domain), &der)
                    .map_err(|r| format!("use x509-svid: {r}"))?;
                self.x509_authorities.push(der);
            }
            Some(USE_JWT) if known_kty => {
                let kid = match obj.get("kid") {
                    Some(Value::String(kid)) if !kid.is_empty() => kid,
                    _ => {
                        return Err("use jwt-svid: expected a non-empty [kid], saw none".to_owned());
                    }
                };
                if self.jwt_authorities.iter().any(|a| &a.kid == kid) {
                    return Err(format!(
                        "use jwt-svid: expected a unique kid, saw {kid:?} a second time"
                    ));
                }
                match JwtAuthority::parse_members(kid, key.clone())
                    .map_err(|r| format!("use jwt-svid, kid {kid:?}: {r}"))?
                {
                    Some(a) => self.jwt_authorities.push(a),
                    None => self.skipped += 1,
                }
            }
            _ => {
                tracing::debug!(trust_domain = %self.trust_domain, key_use = text("use").unwrap_or(""),
                    kty = text("kty").unwrap_or(""), "SPIFFE bundle key skipped: use or kty not understood");
                self.skipped += 1;
            }
        }
        Ok(())
    }

    /// Adds X.509 authorities from PEM (`CERTIFICATE` blocks, each a CA certificate).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?);
    /// let err = bundle.add_x509_authorities_pem(leaf.cert_pem()).unwrap_err();
    /// assert!(err.to_string().contains("expected a CA certificate"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_x509_authorities_pem(self, pem: impl AsRef<[u8]>) -> Result<Self> {
        let certs = certs_from_pem(pem.as_ref(), "SPIFFE bundle")?;
        self.add_x509_authorities(certs)
    }

    /// Adds X.509 authorities from DER certificates (each a CA certificate, and one naming a
    /// SPIFFE trust domain in a URI SAN must name this one).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?)
    ///     .add_x509_authorities([ca.cert_der().clone()])?;
    /// assert_eq!(bundle.x509_authorities().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_x509_authorities(
        mut self,
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self> {
        for cert in certs {
            check_authority(Some(&self.trust_domain), &cert).map_err(|reason| {
                Error::InvalidBundle {
                    trust_domain: self.trust_domain.to_string(),
                    reason,
                }
            })?;
            if !self.x509_authorities.contains(&cert) {
                self.x509_authorities.push(cert);
            }
        }
        Ok(self)
    }

    /// Adds a JWT authority; a `kid` already in the bundle is refused.
    ///
    /// ```
    /// let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?)
    ///     .add_jwt_authority(mtls_core::JwtAuthority::new("k1", jwk.clone())?)?;
    /// let err = bundle.add_jwt_authority(mtls_core::JwtAuthority::new("k1", jwk)?).unwrap_err();
    /// assert!(err.to_string().contains("\"k1\" a second time"), "{err}");
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn add_jwt_authority(mut self, authority: JwtAuthority) -> Result<Self> {
        if self.jwt_authorities.iter().any(|a| a.kid == authority.kid) {
            return Err(Error::InvalidBundle {
                trust_domain: self.trust_domain.to_string(),
                reason: format!(
                    "expected a unique kid, saw {:?} a second time",
                    authority.kid
                ),
            });
        }
        self.jwt_authorities.push(authority);
        Ok(self)
    }

    /// Adds every key of a JWKS document (`{"keys": [...]}`, e.g. `mtls jwt jwks` output) as
    /// a JWT authority; each key needs a `kid`. Keys of an unknown `kty` are skipped.
    ///
    /// ```
    /// let jwks = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig",
    ///                          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?).add_jwks_json(jwks)?;
    /// assert_eq!(bundle.jwt_authorities()[0].kid(), "k1");
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    pub fn add_jwks_json(mut self, jwks: &str) -> Result<Self> {
        let trust_domain = self.trust_domain.to_string();
        let invalid = |reason: String| Error::InvalidBundle {
            trust_domain: trust_domain.clone(),
            reason,
        };
        let doc: Value = serde_json::from_str(jwks)
            .map_err(|e| invalid(format!("expected a JWKS document, saw invalid JSON: {e}")))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(invalid(
                "expected a JWKS with a [keys] array, saw none".to_owned(),
            ));
        };
        for (i, key) in keys.iter().enumerate() {
            let Some(kid) = key.get("kid").and_then(Value::as_str) else {
                return Err(invalid(format!(
                    "JWKS key #{i}: expected a [kid], saw none"
                )));
            };
            match JwtAuthority::parse_members(kid, key.clone())
                .map_err(|r| invalid(format!("JWKS key #{i} {kid:?}: {r}")))?
            {
                Some(authority) => self = self.add_jwt_authority(authority)?,
                None => self.skipped += 1,
            }
        }
        Ok(self)
    }

    /// Sets `spiffe_sequence`.
    pub fn spiffe_sequence(mut self, sequence: u64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// Sets `spiffe_refresh_hint` (whole seconds are kept).
    pub fn spiffe_refresh_hint(mut self, hint: Duration) -> Self {
        self.refresh_hint = Some(Duration::from_secs(hint.as_secs()));
        self
    }

    /// The trust domain this bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities (DER CA certificates).
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// The JWT authorities.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// `spiffe_sequence`, if the document has one.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint`, if the document has one.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// How many keys parsing skipped (unknown `use` or `kty`).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The SPIFFE bundle document (pretty JSON): `x509-svid` keys with the CA's public key
    /// members and `x5c`, then `jwt-svid` keys, then sequence and refresh hint when set.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?).add_x509_authorities_pem(ca.cert_pem())?;
    /// let doc: serde_json::Value = serde_json::from_str(&bundle.to_json())?;
    /// assert_eq!(doc["keys"][0]["use"], "x509-svid");
    /// assert_eq!(doc["keys"][0]["kty"], "EC");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_json(&self) -> String {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for der in &self.x509_authorities {
            // Every authority's key was described when it was added (check_authority).
            let mut jwk = spki_members(der).unwrap_or_default();
            jwk.insert("use".into(), USE_X509.into());
            jwk.insert("x5c".into(), json!([STANDARD.encode(der.as_ref())]));
            keys.push(Value::Object(jwk));
        }
        keys.extend(self.jwt_authorities.iter().map(JwtAuthority::jwk));
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        if let Some(seq) = self.sequence {
            doc.insert("spiffe_sequence".into(), seq.into());
        }
        if let Some(hint) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), hint.as_secs().into());
        }
        let doc = Value::Object(doc);
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    }

    /// The X.509 authorities as PEM `CERTIFICATE` blocks (a plain CA bundle file, the
    /// `<trust-domain>.spiffe-trust-bundle.pem` of filesystem delivery).
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|der| pem_block("CERTIFICATE", der))
            .collect()
    }

    /// The JWT authorities as a JWKS document for `mtls_jwt::KeySet::from_json` or
    /// `mtls_jwt::JwksSource::inline` (keys with `use: sig`, which a JWT validator expects):
    /// how JWT-SVIDs of this trust domain are validated.
    ///
    /// ```
    /// let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?)
    ///     .add_jwt_authority(mtls_core::JwtAuthority::new("k1", jwk)?)?;
    /// let jwks: serde_json::Value = serde_json::from_str(&bundle.jwt_jwks_json())?;
    /// assert_eq!(jwks["keys"][0]["use"], "sig");
    /// assert_eq!(jwks["keys"][0]["kid"], "k1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn jwt_jwks_json(&self) -> String {
        let keys: Vec<Value> = self
            .jwt_authorities
            .iter()
            .map(|a| a.jwk_with_use("sig"))
            .collect();
        let doc = json!({ "keys": keys });
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    }

    /// Whether `newer` may replace this bundle: `Ok(true)` if it should (other contents and
    /// a sequence not lower), `Ok(false)` if it holds the same authorities — or other
    /// authorities under the *same* `spiffe_sequence` (the sequence must increase on every
    /// change: ours is kept, with a warning naming both) — and [`Error::StaleBundle`] if its
    /// `spiffe_sequence` is lower than ours.
    fn replaced_by(&self, newer: &Self) -> Result<bool> {
        if let (Some(current), Some(presented)) = (self.sequence, newer.sequence) {
            if presented < current {
                return Err(Error::StaleBundle {
                    trust_domain: self.trust_domain.to_string(),
                    presented,
                    current,
                });
            }
            if presented == current
                && (self.x509_authorities != newer.x509_authorities
                    || self.jwt_authorities != newer.jwt_authorities)
            {
                tracing::warn!(
                    trust_domain = %self.trust_domain,
                    sequence = current,
                    current = %self.authorities_named(),
                    presented = %newer.authorities_named(),
                    "SPIFFE bundle with other authorities under the same spiffe_sequence; \
                     expected a higher sequence for a change: keeping the current bundle"
                );
                return Ok(false);
            }
        }
        Ok(self.x509_authorities != newer.x509_authorities
            || self.jwt_authorities != newer.jwt_authorities
            || self.sequence != newer.sequence
            || self.refresh_hint != newer.refresh_hint)
    }

    /// The authorities by name for logs: X.509 subjects and serials, JWT key ids.
    fn authorities_named(&self) -> String {
        let x509 = self.x509_authorities.iter().map(|der| {
            mtls_identity::LeafFacts::from_der(der.as_ref()).map_or_else(
                |_| "<unparsable certificate>".to_owned(),
                |f| format!("x509 {:?} serial {}", f.subject, f.serial),
            )
        });
        let jwt = self
            .jwt_authorities
            .iter()
            .map(|a| format!("jwt kid {:?}", a.kid()));
        x509.chain(jwt).collect::<Vec<_>>().join(", ")
    }

    /// A one-line summary for logs and `mtls bundle show`.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} X.509 authorities, {} JWT authorities",
            self.trust_domain,
            self.x509_authorities.len(),
            self.jwt_authorities.len()
        );
        if let Some(seq) = self.sequence {
            s.push_str(&format!(", sequence {seq}"));
        }
        if let Some(hint) = self.refresh_hint {
            s.push_str(&format!(", refresh hint {}s", hint.as_secs()));
        }
        s
    }
}

impl fmt::Debug for SpiffeBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl fmt::Display for SpiffeBundle {
    /// The summary: trust domain, authority counts, sequence and refresh hint.
    ///
    /// ```
    /// let bundle = mtls_core::SpiffeBundle::new("example.org".parse()?).spiffe_sequence(2);
    /// assert_eq!(bundle.to_string(), "example.org: 0 X.509 authorities, 0 JWT authorities, sequence 2");
    /// # Ok::<(), mtls_core::Error>(())
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// SPIFFE bundles keyed by trust domain, never merged: each domain's authorities vouch for
/// that domain only ([`BundleSet::to_trust_bundle`] makes the per-domain [`TrustBundle`]).
///
/// ```
/// # let a = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
/// use mtls_core::{BundleSet, Error, SpiffeBundle};
/// let mut set = BundleSet::new();
/// let v2 = SpiffeBundle::new("a.org".parse()?).add_x509_authorities_pem(a.cert_pem())?.spiffe_sequence(2);
/// assert!(set.insert(v2)?);
/// // A lower sequence never replaces a higher one.
/// let v1 = SpiffeBundle::new("a.org".parse()?).spiffe_sequence(1);
/// assert!(matches!(set.insert(v1), Err(Error::StaleBundle { presented: 1, current: 2, .. })));
/// assert_eq!(set.get(&"a.org".parse()?).and_then(|b| b.sequence()), Some(2));
/// let trust = set.to_trust_bundle()?;
/// assert_eq!(trust.roots(Some(&"a.org".parse()?)).len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleSet {
    bundles: BTreeMap<TrustDomain, SpiffeBundle>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `bundle` in place of its trust domain's: `Ok(true)` if it was installed (new
    /// domain, or other contents), `Ok(false)` if the same bundle was there or if its
    /// authorities differ under the same `spiffe_sequence` (SPIFFE: the sequence must
    /// increase on every change; the current bundle is kept and a warning names both), and
    /// [`Error::StaleBundle`] (nothing changes) if its `spiffe_sequence` is lower than the
    /// current one's.
    pub fn insert(&mut self, bundle: SpiffeBundle) -> Result<bool> {
        if let Some(current) = self.bundles.get(&bundle.trust_domain)
            && !current.replaced_by(&bundle)?
        {
            return Ok(false);
        }
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
        Ok(true)
    }

    /// Removes a trust domain's bundle.
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<SpiffeBundle> {
        self.bundles.remove(trust_domain)
    }

    /// The bundle of `trust_domain`.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&SpiffeBundle> {
        self.bundles.get(trust_domain)
    }

    /// The bundles, by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &SpiffeBundle> {
        self.bundles.values()
    }

    /// How many trust domains the set holds.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the set holds no trust domain.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// The SPIFFE-shaped [`TrustBundle`] for verifiers: each trust domain with X.509
    /// authorities, verified against its own roots only (domains with JWT authorities only
    /// are left out).
    pub fn to_trust_bundle(&self) -> Result<TrustBundle> {
        self.bundles
            .values()
            .filter(|b| !b.x509_authorities.is_empty())
            .try_fold(TrustBundle::spiffe(), |t, b| {
                t.add_domain_der(b.trust_domain.clone(), b.x509_authorities.iter().cloned())
            })
    }
}

impl FromIterator<SpiffeBundle> for BundleSet {
    /// Collects bundles; for a trust domain given twice, the [`BundleSet::insert`] rules
    /// decide (a stale one is dropped).
    fn from_iter<I: IntoIterator<Item = SpiffeBundle>>(iter: I) -> Self {
        let mut set = Self::new();
        for bundle in iter {
            // A stale duplicate is the documented no-op.
            let _ = set.insert(bundle);
        }
        set
    }
}

/// Whether `text` looks like a JSON document rather than PEM (the first non-blank byte).
pub(crate) fn looks_like_json(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// An X.509 authority must be a CA certificate, and one naming a SPIFFE trust domain in a
/// URI SAN (as SPIRE's CAs do: `spiffe://td`) must name `trust_domain`.
fn check_authority(
    trust_domain: Option<&TrustDomain>,
    der: &CertificateDer<'_>,
) -> std::result::Result<(), String> {
    let info = LeafInfo::parse(der).map_err(|e| {
        format!("expected a DER X.509 certificate, saw one that does not parse ({e})")
    })?;
    if !info.is_ca {
        return Err(format!(
            "expected a CA certificate (basicConstraints cA=true), saw the end-entity certificate {}",
            info.display_name()
        ));
    }
    if spki_members(der).is_none() {
        return Err(format!(
            "expected an RSA, EC P-256/P-384/P-521 or Ed25519 CA key, saw another key in {}",
            info.display_name()
        ));
    }
    webpki::anchor_from_trusted_cert(der).map_err(|e| {
        format!(
            "expected a usable trust anchor, saw {}",
            crate::verify::webpki_words(&e)
        )
    })?;
    let Some(trust_domain) = trust_domain else {
        return Ok(());
    };
    for san in &info.sans {
        let SubjectAltName::Uri(uri) = san else {
            continue;
        };
        let seen = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned)
            .or_else(|| {
                uri.parse::<SpiffeId>()
                    .ok()
                    .map(|id| id.trust_domain().to_string())
            });
        if let Some(seen) = seen
            && seen != trust_domain.as_str()
        {
            return Err(format!(
                "expected a CA of trust domain {trust_domain}, saw {} naming {uri}",
                info.display_name()
            ));
        }
    }
    Ok(())
}

/// The public JWK members of a certificate's key (RFC 7518 §6): RSA `n`/`e`, EC
/// `crv`/`x`/`y`, OKP Ed25519 `crv`/`x`.
fn spki_members(der: &CertificateDer<'_>) -> Option<Map<String, Value>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let spki = cert.public_key();
    let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    let strip = |b: &'_ [u8]| -> Vec<u8> {
        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[start..].to_vec()
    };
    let mut m = Map::new();
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => {
            m.insert("kty".into(), "RSA".into());
            m.insert("n".into(), b64(&strip(rsa.modulus)));
            m.insert("e".into(), b64(&strip(rsa.exponent)));
        }
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())?;
            let (crv, len) = match curve.as_str() {
                "1.2.840.10045.3.1.7" => ("P-256", 32),
                "1.3.132.0.34" => ("P-384", 48),
                "1.3.132.0.35" => ("P-521", 66),
                _ => return None,
            };
            let data = point.data();
            let xy = data.strip_prefix(&[4u8])?;
            if xy.len() != 2 * len {
                return None;
            }
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), b64(&xy[..len]));
            m.insert("y".into(), b64(&xy[len..]));
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            m.insert("kty".into(), "OKP".into());
            m.insert("crv".into(), "Ed25519".into());
            m.insert("x".into(), b64(&spki.subject_public_key.data));
        }
        _ => return None,
    }
    Some(m)
}

/// A PEM block with 64-character lines (RFC 7468).
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    #[test]
    fn keys_must_be_objects_and_numbers_integers() {
        let err = SpiffeBundle::parse(td(), r#"{"keys": [1]}"#).unwrap_err();
        assert!(err.to_string().contains("key #0"), "{err}");
        let err = SpiffeBundle::parse(td(), r#"{"keys": [], "spiffe_sequence": -1}"#).unwrap_err();
        assert!(err.to_string().contains("saw -1"), "{err}");
        let err = SpiffeBundle::parse(td(), r#"[]"#).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn equal_bundles_are_not_reinstalled() {
        let mut set = BundleSet::new();
        assert!(
            set.insert(SpiffeBundle::new(td()).spiffe_sequence(1))
                .unwrap()
        );
        assert!(
            !set.insert(SpiffeBundle::new(td()).spiffe_sequence(1))
                .unwrap()
        );
        assert!(
            set.insert(SpiffeBundle::new(td()).spiffe_sequence(2))
                .unwrap()
        );
    }
}
