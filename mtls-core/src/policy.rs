//! [`TlsPolicy`]: protocol versions, key-exchange groups and cipher suites, decided once for
//! the rustls configs built here and for the Envoy configs generated from the same policy.
//!
//! The default prefers the hybrid post-quantum group **X25519MLKEM768** and keeps X25519,
//! P-256 and P-384 behind it. A rustls client whose first group is a hybrid sends two key
//! shares — the hybrid one and its X25519 component, for free (the same X25519 key) — so
//! a post-quantum server (another mtls peer, Envoy 1.40) picks the hybrid and a classical
//! one (OpenSSL 3.0, Python's `ssl`) picks X25519, both without a HelloRetryRequest.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, NamedGroup, ProtocolVersion, SupportedProtocolVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A TLS protocol version. Serialized as Envoy writes it (`TLSv1_3`); `TLSv1.3` is read too.
///
/// ```
/// let v: mtls_core::TlsVersion = "TLSv1_2".parse()?;
/// assert_eq!(v.to_string(), "TLSv1.2");
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[serde(rename = "TLSv1_2", alias = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "TLSv1_3", alias = "TLSv1.3")]
    Tls13,
}

impl TlsVersion {
    /// Envoy's name (`tls_params.tls_minimum_protocol_version`): `TLSv1_2`, `TLSv1_3`.
    pub fn envoy_name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1_2",
            TlsVersion::Tls13 => "TLSv1_3",
        }
    }

    /// The rustls protocol version.
    pub fn protocol_version(self) -> ProtocolVersion {
        match self {
            TlsVersion::Tls12 => ProtocolVersion::TLSv1_2,
            TlsVersion::Tls13 => ProtocolVersion::TLSv1_3,
        }
    }

    /// The version of a rustls `ProtocolVersion`, if it is one of ours.
    pub fn from_protocol_version(version: ProtocolVersion) -> Option<Self> {
        match version {
            ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            _ => None,
        }
    }

    fn supported(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        })
    }
}

impl FromStr for TlsVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "TLSv1_2" | "TLSv1.2" => Ok(TlsVersion::Tls12),
            "TLSv1_3" | "TLSv1.3" => Ok(TlsVersion::Tls13),
            other => Err(Error::InvalidTlsPolicy {
                field: "version",
                reason: format!("{other:?} is not a TLS version; expected TLSv1_2 or TLSv1_3"),
            }),
        }
    }
}

/// A key-exchange group. Serialized with the names Envoy's `ecdh_curves` uses
/// (`X25519MLKEM768`, `X25519`, `P-256`, `P-384`); `secp256r1`/`secp384r1` are read too.
///
/// ```
/// use mtls_core::KxGroup;
/// assert_eq!("P-256".parse::<KxGroup>()?, KxGroup::Secp256r1);
/// assert!(KxGroup::X25519Mlkem768.is_post_quantum());
/// assert!("X448".parse::<KxGroup>().unwrap_err().to_string().contains("expected one of"));
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KxGroup {
    /// The hybrid X25519 + ML-KEM-768 group (draft-ietf-tls-ecdhe-mlkem), TLS 1.3 only.
    #[serde(rename = "X25519MLKEM768")]
    X25519Mlkem768,
    /// X25519 (RFC 7748).
    #[serde(rename = "X25519")]
    X25519,
    /// NIST P-256.
    #[serde(rename = "P-256", alias = "secp256r1")]
    Secp256r1,
    /// NIST P-384.
    #[serde(rename = "P-384", alias = "secp384r1")]
    Secp384r1,
}

impl KxGroup {
    /// Every group, in the default order.
    pub const ALL: [KxGroup; 4] = [
        KxGroup::X25519Mlkem768,
        KxGroup::X25519,
        KxGroup::Secp256r1,
        KxGroup::Secp384r1,
    ];

    /// The name Envoy (BoringSSL) uses in `ecdh_curves` and in its `ssl.curves.*` stats.
    pub fn envoy_name(self) -> &'static str {
        match self {
            KxGroup::X25519Mlkem768 => "X25519MLKEM768",
            KxGroup::X25519 => "X25519",
            KxGroup::Secp256r1 => "P-256",
            KxGroup::Secp384r1 => "P-384",
        }
    }

    /// The rustls (IANA) group.
    pub fn named_group(self) -> NamedGroup {
        match self {
            KxGroup::X25519Mlkem768 => NamedGroup::X25519MLKEM768,
            KxGroup::X25519 => NamedGroup::X25519,
            KxGroup::Secp256r1 => NamedGroup::secp256r1,
            KxGroup::Secp384r1 => NamedGroup::secp384r1,
        }
    }

    /// The group of a rustls `NamedGroup`, if it is one of ours.
    pub fn from_named_group(group: NamedGroup) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.named_group() == group)
    }

    /// Whether the group resists a quantum computer (the hybrids).
    pub fn is_post_quantum(self) -> bool {
        matches!(self, KxGroup::X25519Mlkem768)
    }

    /// Whether TLS 1.2 can use it (hybrids are TLS 1.3 only).
    pub fn usable_with_tls12(self) -> bool {
        !self.is_post_quantum()
    }
}

impl fmt::Display for KxGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.envoy_name())
    }
}

impl FromStr for KxGroup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.envoy_name() == s || (s.eq_ignore_ascii_case(alias(*g))))
            .ok_or_else(|| Error::InvalidTlsPolicy {
                field: "groups",
                reason: format!(
                    "unknown key-exchange group {s:?}; expected one of {}",
                    names(Self::ALL.iter().map(|g| g.envoy_name()))
                ),
            })
    }
}

fn alias(group: KxGroup) -> &'static str {
    match group {
        KxGroup::Secp256r1 => "secp256r1",
        KxGroup::Secp384r1 => "secp384r1",
        other => other.envoy_name(),
    }
}

/// A cipher suite. Serialized with its IANA name (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`); rustls' `TLS13_*` names and the OpenSSL names
/// Envoy's `cipher_suites` takes (`ECDHE-ECDSA-AES128-GCM-SHA256`) are read too.
///
/// ```
/// use mtls_core::TlsSuite;
/// let suite: TlsSuite = "ECDHE-ECDSA-AES128-GCM-SHA256".parse()?;
/// assert_eq!(suite, TlsSuite::EcdheEcdsaAes128GcmSha256);
/// assert_eq!(suite.to_string(), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TlsSuite {
    /// TLS 1.3 AES-256-GCM with SHA-384.
    #[serde(rename = "TLS_AES_256_GCM_SHA384", alias = "TLS13_AES_256_GCM_SHA384")]
    Aes256GcmSha384,
    /// TLS 1.3 AES-128-GCM with SHA-256.
    #[serde(rename = "TLS_AES_128_GCM_SHA256", alias = "TLS13_AES_128_GCM_SHA256")]
    Aes128GcmSha256,
    /// TLS 1.3 ChaCha20-Poly1305 with SHA-256.
    #[serde(
        rename = "TLS_CHACHA20_POLY1305_SHA256",
        alias = "TLS13_CHACHA20_POLY1305_SHA256"
    )]
    Chacha20Poly1305Sha256,
    /// TLS 1.2 ECDHE-ECDSA AES-256-GCM.
    #[serde(
        rename = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        alias = "ECDHE-ECDSA-AES256-GCM-SHA384"
    )]
    EcdheEcdsaAes256GcmSha384,
    /// TLS 1.2 ECDHE-ECDSA AES-128-GCM.
    #[serde(
        rename = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        alias = "ECDHE-ECDSA-AES128-GCM-SHA256"
    )]
    EcdheEcdsaAes128GcmSha256,
    /// TLS 1.2 ECDHE-ECDSA ChaCha20-Poly1305.
    #[serde(
        rename = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        alias = "ECDHE-ECDSA-CHACHA20-POLY1305"
    )]
    EcdheEcdsaChacha20Poly1305,
    /// TLS 1.2 ECDHE-RSA AES-256-GCM.
    #[serde(
        rename = "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        alias = "ECDHE-RSA-AES256-GCM-SHA384"
    )]
    EcdheRsaAes256GcmSha384,
    /// TLS 1.2 ECDHE-RSA AES-128-GCM.
    #[serde(
        rename = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        alias = "ECDHE-RSA-AES128-GCM-SHA256"
    )]
    EcdheRsaAes128GcmSha256,
    /// TLS 1.2 ECDHE-RSA ChaCha20-Poly1305.
    #[serde(
        rename = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        alias = "ECDHE-RSA-CHACHA20-POLY1305"
    )]
    EcdheRsaChacha20Poly1305,
}

impl TlsSuite {
    /// Every suite: TLS 1.3 first, then TLS 1.2, each in rustls' default order.
    pub const ALL: [TlsSuite; 9] = [
        TlsSuite::Aes256GcmSha384,
        TlsSuite::Aes128GcmSha256,
        TlsSuite::Chacha20Poly1305Sha256,
        TlsSuite::EcdheEcdsaAes256GcmSha384,
        TlsSuite::EcdheEcdsaAes128GcmSha256,
        TlsSuite::EcdheEcdsaChacha20Poly1305,
        TlsSuite::EcdheRsaAes256GcmSha384,
        TlsSuite::EcdheRsaAes128GcmSha256,
        TlsSuite::EcdheRsaChacha20Poly1305,
    ];

    /// The IANA name (also Envoy's `ssl.ciphers.*` stat name for TLS 1.3 suites).
    pub fn iana_name(self) -> &'static str {
        match self {
            TlsSuite::Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            TlsSuite::Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            TlsSuite::Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            TlsSuite::EcdheEcdsaAes256GcmSha384 => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            TlsSuite::EcdheEcdsaAes128GcmSha256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            TlsSuite::EcdheEcdsaChacha20Poly1305 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            TlsSuite::EcdheRsaAes256GcmSha384 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            TlsSuite::EcdheRsaAes128GcmSha256 => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            TlsSuite::EcdheRsaChacha20Poly1305 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        }
    }

    /// The OpenSSL/BoringSSL name Envoy's `tls_params.cipher_suites` takes (TLS 1.2 suites
    /// only: BoringSSL does not let TLS 1.3 suites be configured); `None` for TLS 1.3.
    pub fn envoy_name(self) -> Option<&'static str> {
        Some(match self {
            TlsSuite::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            TlsSuite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            TlsSuite::EcdheEcdsaChacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            TlsSuite::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            TlsSuite::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            TlsSuite::EcdheRsaChacha20Poly1305 => "ECDHE-RSA-CHACHA20-POLY1305",
            _ => return None,
        })
    }

    /// The version this suite belongs to.
    pub fn version(self) -> TlsVersion {
        match self {
            TlsSuite::Aes256GcmSha384
            | TlsSuite::Aes128GcmSha256
            | TlsSuite::Chacha20Poly1305Sha256 => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        }
    }

    /// The rustls (IANA) suite.
    pub fn cipher_suite(self) -> CipherSuite {
        match self {
            TlsSuite::Aes256GcmSha384 => CipherSuite::TLS13_AES_256_GCM_SHA384,
            TlsSuite::Aes128GcmSha256 => CipherSuite::TLS13_AES_128_GCM_SHA256,
            TlsSuite::Chacha20Poly1305Sha256 => CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            TlsSuite::EcdheEcdsaAes256GcmSha384 => {
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            }
            TlsSuite::EcdheEcdsaAes128GcmSha256 => {
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            }
            TlsSuite::EcdheEcdsaChacha20Poly1305 => {
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            TlsSuite::EcdheRsaAes256GcmSha384 => CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TlsSuite::EcdheRsaAes128GcmSha256 => CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TlsSuite::EcdheRsaChacha20Poly1305 => {
                CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            }
        }
    }

    /// The suite of a rustls `CipherSuite`, if it is one of ours.
    pub fn from_cipher_suite(suite: CipherSuite) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.cipher_suite() == suite)
    }

    fn is_chacha(self) -> bool {
        matches!(
            self,
            TlsSuite::Chacha20Poly1305Sha256
                | TlsSuite::EcdheEcdsaChacha20Poly1305
                | TlsSuite::EcdheRsaChacha20Poly1305
        )
    }
}

impl fmt::Display for TlsSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.iana_name())
    }
}

impl FromStr for TlsSuite {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let rustls_name = |suite: TlsSuite| suite.cipher_suite().as_str();
        Self::ALL
            .into_iter()
            .find(|suite| {
                suite.iana_name() == s
                    || suite.envoy_name() == Some(s)
                    || rustls_name(*suite) == Some(s)
            })
            .ok_or_else(|| Error::InvalidTlsPolicy {
                field: "cipher_suites",
                reason: format!(
                    "unknown cipher suite {s:?}; expected one of {}",
                    names(Self::ALL.iter().map(|s| s.iana_name()))
                ),
            })
    }
}

/// The named starting points of a [`TlsPolicy`].
///
/// ```
/// use mtls_core::{TlsPolicy, TlsPreset};
/// let preset: TlsPreset = "classical".parse()?;
/// assert!(TlsPolicy::preset(preset).groups.iter().all(|g| !g.is_post_quantum()));
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TlsPreset {
    /// [`TlsPolicy::default`]: hybrid post-quantum first, TLS 1.3 (1.2 only when opted in).
    Default,
    /// [`TlsPolicy::tls13_only`]: as the default, with no TLS 1.2 suite to opt into.
    Tls13Only,
    /// [`TlsPolicy::classical`]: no ML-KEM (for a peer that cannot do it).
    Classical,
    /// [`TlsPolicy::nist`]: NIST curves and AES-GCM only.
    Nist,
}

impl TlsPreset {
    /// Every preset.
    pub const ALL: [TlsPreset; 4] = [
        TlsPreset::Default,
        TlsPreset::Tls13Only,
        TlsPreset::Classical,
        TlsPreset::Nist,
    ];

    /// The preset's name as written in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TlsPreset::Default => "default",
            TlsPreset::Tls13Only => "tls13-only",
            TlsPreset::Classical => "classical",
            TlsPreset::Nist => "nist",
        }
    }
}

impl fmt::Display for TlsPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TlsPreset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::InvalidTlsPolicy {
                field: "preset",
                reason: format!(
                    "unknown preset {s:?}; expected one of {}",
                    names(Self::ALL.iter().map(|p| p.name()))
                ),
            })
    }
}

/// Which TLS versions, key-exchange groups and cipher suites a connection may use — one
/// policy for the rustls configs ([`ServerConfigBuilder::tls_policy`],
/// [`ClientConfigBuilder::tls_policy`]) and the Envoy configs generated beside them
/// ([`TlsPolicy::envoy_tls_params`]).
///
/// Lists are in preference order. A policy that cannot work is refused when a config is
/// built, naming the field ([`Error::InvalidTlsPolicy`]).
///
/// Reads from YAML/JSON: a `preset` (default `default`) with any field overridden.
///
/// ```
/// use mtls_core::{KxGroup, TlsPolicy, TlsVersion};
/// let policy = TlsPolicy::default();
/// assert_eq!(policy.groups[0], KxGroup::X25519Mlkem768);
/// assert_eq!((policy.min_version, policy.max_version), (TlsVersion::Tls13, TlsVersion::Tls13));
///
/// let from_file: TlsPolicy = serde_json::from_str(r#"{"preset": "classical", "min_version": "TLSv1_2"}"#)?;
/// assert_eq!(from_file.min_version, TlsVersion::Tls12);
/// assert!(!from_file.groups.contains(&KxGroup::X25519Mlkem768));
///
/// let broken: TlsPolicy = serde_json::from_str(r#"{"groups": ["X25519MLKEM768"], "min_version": "TLSv1_2"}"#)?;
/// let err = broken.check().unwrap_err();
/// assert!(err.to_string().contains("groups"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`ServerConfigBuilder::tls_policy`]: crate::ServerConfigBuilder::tls_policy
/// [`ClientConfigBuilder::tls_policy`]: crate::ClientConfigBuilder::tls_policy
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TlsPolicyDoc")]
#[non_exhaustive]
pub struct TlsPolicy {
    /// The lowest version offered or accepted.
    pub min_version: TlsVersion,
    /// The highest version offered or accepted.
    pub max_version: TlsVersion,
    /// Key-exchange groups, most preferred first. A client sends a key share for the first
    /// (and, when that is a hybrid, for its classical component too).
    pub groups: Vec<KxGroup>,
    /// Cipher suites, most preferred first (TLS 1.3 and TLS 1.2 suites in one list).
    pub cipher_suites: Vec<TlsSuite>,
}

impl Default for TlsPolicy {
    /// X25519MLKEM768, X25519, P-256, P-384; TLS 1.3 only (TLS 1.2 suites listed, used only
    /// if [`min_version`](TlsPolicy::min_version) is lowered); every AEAD suite.
    fn default() -> Self {
        Self {
            min_version: TlsVersion::Tls13,
            max_version: TlsVersion::Tls13,
            groups: KxGroup::ALL.to_vec(),
            cipher_suites: TlsSuite::ALL.to_vec(),
        }
    }
}

impl TlsPolicy {
    /// The policy of a preset.
    pub fn preset(preset: TlsPreset) -> Self {
        match preset {
            TlsPreset::Default => Self::default(),
            TlsPreset::Tls13Only => Self::tls13_only(),
            TlsPreset::Classical => Self::classical(),
            TlsPreset::Nist => Self::nist(),
        }
    }

    /// As the default, with TLS 1.3 suites only: lowering `min_version` to TLS 1.2 is refused.
    pub fn tls13_only() -> Self {
        Self {
            cipher_suites: TlsSuite::ALL
                .into_iter()
                .filter(|s| s.version() == TlsVersion::Tls13)
                .collect(),
            ..Self::default()
        }
    }

    /// No ML-KEM: X25519, P-256, P-384 — for a peer that cannot do post-quantum key
    /// exchange, or to measure its cost.
    pub fn classical() -> Self {
        Self {
            groups: KxGroup::ALL
                .into_iter()
                .filter(|g| !g.is_post_quantum())
                .collect(),
            ..Self::default()
        }
    }

    /// NIST curves (P-256, P-384) and AES-GCM suites only.
    pub fn nist() -> Self {
        Self {
            groups: vec![KxGroup::Secp256r1, KxGroup::Secp384r1],
            cipher_suites: TlsSuite::ALL
                .into_iter()
                .filter(|s| !s.is_chacha())
                .collect(),
            ..Self::default()
        }
    }

    /// Lowers [`min_version`](TlsPolicy::min_version) to TLS 1.2.
    pub fn allow_tls12(mut self) -> Self {
        self.min_version = TlsVersion::Tls12;
        self
    }

    /// Sets the version range.
    pub fn version_range(mut self, min: TlsVersion, max: TlsVersion) -> Self {
        self.min_version = min;
        self.max_version = max;
        self
    }

    /// Replaces the key-exchange groups (most preferred first).
    pub fn groups(mut self, groups: impl IntoIterator<Item = KxGroup>) -> Self {
        self.groups = groups.into_iter().collect();
        self
    }

    /// Replaces the cipher suites (most preferred first).
    pub fn cipher_suites(mut self, suites: impl IntoIterator<Item = TlsSuite>) -> Self {
        self.cipher_suites = suites.into_iter().collect();
        self
    }

    /// The versions in range, newest first.
    pub fn versions(&self) -> Vec<TlsVersion> {
        [TlsVersion::Tls13, TlsVersion::Tls12]
            .into_iter()
            .filter(|v| (self.min_version..=self.max_version).contains(v))
            .collect()
    }

    /// Checks that the policy can work, against aws-lc-rs' default provider.
    pub fn check(&self) -> Result<()> {
        self.crypto_provider(&rustls::crypto::aws_lc_rs::default_provider())
            .map(|_| ())
    }

    /// `base` restricted to (and ordered by) this policy's groups and suites; refused,
    /// naming the field, when the policy cannot work or `base` lacks something it names.
    pub fn crypto_provider(&self, base: &CryptoProvider) -> Result<CryptoProvider> {
        let invalid =
            |field: &'static str, reason: String| Error::InvalidTlsPolicy { field, reason };
        if self.min_version > self.max_version {
            return Err(invalid(
                "min_version",
                format!(
                    "min_version {} is above max_version {}",
                    self.min_version, self.max_version
                ),
            ));
        }
        let versions = self.versions();
        if self.groups.is_empty() {
            return Err(invalid("groups", "no key-exchange group".to_owned()));
        }
        if let Some(dup) = first_duplicate(&self.groups) {
            return Err(invalid("groups", format!("{dup} is listed twice")));
        }
        if let Some(dup) = first_duplicate(&self.cipher_suites) {
            return Err(invalid("cipher_suites", format!("{dup} is listed twice")));
        }
        if versions.contains(&TlsVersion::Tls12)
            && !self.groups.iter().any(|g| g.usable_with_tls12())
        {
            return Err(invalid(
                "groups",
                format!(
                    "TLS 1.2 is enabled (min_version {}) but every group is a TLS 1.3-only hybrid ({}); add X25519 or P-256, or set min_version TLSv1_3",
                    self.min_version,
                    names(self.groups.iter().map(|g| g.envoy_name()))
                ),
            ));
        }
        for version in &versions {
            if !self.cipher_suites.iter().any(|s| s.version() == *version) {
                return Err(invalid(
                    "cipher_suites",
                    format!(
                        "{version} is enabled but no {version} cipher suite is listed ({})",
                        if self.cipher_suites.is_empty() {
                            "the list is empty".to_owned()
                        } else {
                            names(self.cipher_suites.iter().map(|s| s.iana_name()))
                        }
                    ),
                ));
            }
        }
        let mut kx_groups = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let found = base
                .kx_groups
                .iter()
                .find(|g| g.name() == group.named_group())
                .ok_or_else(|| {
                    invalid(
                        "groups",
                        format!(
                            "the crypto provider has no {group}; it has {} (choose a policy without it, e.g. TlsPolicy::nist() for a provider with NIST curves only)",
                            base.kx_groups
                                .iter()
                                .map(|g| debug_name(g.name()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            kx_groups.push(*found);
        }
        let mut cipher_suites = Vec::new();
        for suite in self
            .cipher_suites
            .iter()
            .filter(|s| versions.contains(&s.version()))
        {
            let found = base
                .cipher_suites
                .iter()
                .find(|s| s.suite() == suite.cipher_suite())
                .ok_or_else(|| {
                    invalid(
                        "cipher_suites",
                        format!("the crypto provider has no {suite}"),
                    )
                })?;
            cipher_suites.push(*found);
        }
        Ok(CryptoProvider {
            kx_groups,
            cipher_suites,
            ..base.clone()
        })
    }

    /// The versions for rustls' `with_protocol_versions`.
    pub(crate) fn protocol_versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        self.versions()
            .into_iter()
            .map(TlsVersion::supported)
            .collect()
    }

    /// The policy as Envoy's `CommonTlsContext.tls_params` (serialize it into a
    /// `common_tls_context`), so that a sidecar runs the same policy as the proxyless peers.
    ///
    /// BoringSSL does not let TLS 1.3 cipher suites be chosen: `cipher_suites` carries the
    /// TLS 1.2 suites only, and only when TLS 1.2 is enabled.
    ///
    /// ```
    /// let params = mtls_core::TlsPolicy::default().envoy_tls_params();
    /// let json = serde_json::to_value(&params)?;
    /// assert_eq!(json["tls_minimum_protocol_version"], "TLSv1_3");
    /// assert_eq!(json["tls_maximum_protocol_version"], "TLSv1_3");
    /// assert_eq!(json["ecdh_curves"][0], "X25519MLKEM768");
    /// assert!(json.get("cipher_suites").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn envoy_tls_params(&self) -> EnvoyTlsParams {
        let cipher_suites: Vec<&'static str> = if self.versions().contains(&TlsVersion::Tls12) {
            self.cipher_suites
                .iter()
                .filter_map(|s| s.envoy_name())
                .collect()
        } else {
            Vec::new()
        };
        EnvoyTlsParams {
            tls_minimum_protocol_version: self.min_version.envoy_name(),
            tls_maximum_protocol_version: self.max_version.envoy_name(),
            ecdh_curves: self.groups.iter().map(|g| g.envoy_name()).collect(),
            cipher_suites,
        }
    }

    /// One line for logs: `TLSv1.3, groups X25519MLKEM768:X25519:..., suites ...`.
    pub fn summary(&self) -> String {
        let versions = if self.min_version == self.max_version {
            self.min_version.to_string()
        } else {
            format!("{}-{}", self.min_version, self.max_version)
        };
        format!(
            "{versions}, groups {}",
            self.groups
                .iter()
                .map(|g| g.envoy_name())
                .collect::<Vec<_>>()
                .join(":")
        )
    }
}

impl FromStr for TlsPolicy {
    type Err = Error;
    /// A preset name (`default`, `tls13-only`, `classical`, `nist`).
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<TlsPreset>().map(Self::preset)
    }
}

/// Envoy's `tls_params` (`envoy.extensions.transport_sockets.tls.v3.TlsParameters`), as
/// rendered from a [`TlsPolicy`] by [`TlsPolicy::envoy_tls_params`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EnvoyTlsParams {
    /// `TLSv1_2` or `TLSv1_3`.
    pub tls_minimum_protocol_version: &'static str,
    /// `TLSv1_2` or `TLSv1_3`.
    pub tls_maximum_protocol_version: &'static str,
    /// Groups in preference order (`X25519MLKEM768`, `X25519`, `P-256`, `P-384`).
    pub ecdh_curves: Vec<&'static str>,
    /// TLS 1.2 suites (OpenSSL names); left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<&'static str>,
}

/// The serde shape: a preset plus overrides.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsPolicyDoc {
    #[serde(default)]
    preset: Option<TlsPreset>,
    #[serde(default)]
    min_version: Option<TlsVersion>,
    #[serde(default)]
    max_version: Option<TlsVersion>,
    #[serde(default)]
    groups: Option<Vec<KxGroup>>,
    #[serde(default)]
    cipher_suites: Option<Vec<TlsSuite>>,
}

impl From<TlsPolicyDoc> for TlsPolicy {
    fn from(doc: TlsPolicyDoc) -> Self {
        let mut policy = TlsPolicy::preset(doc.preset.unwrap_or(TlsPreset::Default));
        if let Some(v) = doc.min_version {
            policy.min_version = v;
        }
        if let Some(v) = doc.max_version {
            policy.max_version = v;
        }
        if let Some(groups) = doc.groups {
            policy.groups = groups;
        }
        if let Some(suites) = doc.cipher_suites {
            policy.cipher_suites = suites;
        }
        policy
    }
}

/// Builds the provider and versions of a config, or the error naming the field.
pub(crate) fn apply(
    policy: &TlsPolicy,
    base: &CryptoProvider,
) -> Result<(Arc<CryptoProvider>, Vec<&'static SupportedProtocolVersion>)> {
    let provider = policy.crypto_provider(base)?;
    Ok((Arc::new(provider), policy.protocol_versions()))
}

/// The most useful sentence about a failed handshake, for a log: mtls-core's verification
/// error when a certificate was refused by policy; for a version or group mismatch, what
/// each side offered and what to set; otherwise rustls' or the socket's error.
///
/// ```
/// use rustls::{Error, PeerIncompatible};
/// let err = std::io::Error::other(Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired));
/// let text = mtls_core::explain_handshake_error(&err);
/// assert!(text.contains("offered only TLS 1.2 or older"), "{text}");
/// assert!(text.contains("tls_maximum_protocol_version: TLSv1_3"), "{text}");
/// ```
pub fn explain_handshake_error(error: &std::io::Error) -> String {
    if let Some(reason) = Error::from_io(error) {
        return reason.to_string();
    }
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls.and_then(explain_tls_error) {
        Some(text) => text,
        None => error.to_string(),
    }
}

fn explain_tls_error(error: &rustls::Error) -> Option<String> {
    use rustls::{AlertDescription, PeerIncompatible};
    const ENVOY_HINT: &str = "an Envoy UpstreamTlsContext stops at TLS 1.2 unless tls_params sets tls_maximum_protocol_version: TLSv1_3";
    Some(match error {
        rustls::Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired) => {
            format!(
                "protocol version mismatch: the peer offered only TLS 1.2 or older (its ClientHello has no supported_versions extension) and this side accepts TLSv1.3 only; set tls_maximum_protocol_version: TLSv1_3 on the peer ({ENVOY_HINT}), or lower this side's TlsPolicy min_version to TLSv1_2 ({error})"
            )
        }
        rustls::Error::PeerIncompatible(PeerIncompatible::Tls12NotOfferedOrEnabled) => format!(
            "protocol version mismatch: the versions the peer offered (supported_versions) and this side's TlsPolicy have none in common — typically the peer offered only TLS 1.2 and this side accepts TLSv1.3 only; set tls_maximum_protocol_version: TLSv1_3 on the peer ({ENVOY_HINT}), or lower this side's TlsPolicy min_version to TLSv1_2 ({error})"
        ),
        rustls::Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered) => format!(
            "protocol version mismatch: the peer offered only TLS 1.1 or older; this side needs TLS 1.2 at least — upgrade the peer ({error})"
        ),
        rustls::Error::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        )
        | rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13) => {
            format!(
                "protocol version mismatch: the server chose a version this side's TlsPolicy does not allow; align min_version/max_version on both sides ({error})"
            )
        }
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) => format!(
            "protocol version mismatch: the peer refused every version this side offered (TLSv1.3 unless TLS 1.2 was allowed); if the peer is TLS 1.2-only, lower this side's TlsPolicy min_version to TLSv1_2, or set tls_maximum_protocol_version: TLSv1_3 on the peer ({error})"
        ),
        rustls::Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon) => format!(
            "no key-exchange group in common: compare this side's TlsPolicy groups with the peer's ecdh_curves/groups (TlsPolicy::classical() for a peer without ML-KEM) ({error})"
        ),
        rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon) => format!(
            "no cipher suite in common: compare this side's TlsPolicy cipher_suites with the peer's ({error})"
        ),
        _ => return None,
    })
}

/// The key log of a config whose builder asked for one: rustls' `KeyLogFile` when
/// `SSLKEYLOGFILE` is set (with a warning), else none.
pub(crate) fn key_log(side: &'static str) -> Arc<dyn rustls::KeyLog> {
    match std::env::var_os("SSLKEYLOGFILE").filter(|v| !v.is_empty()) {
        Some(path) => {
            tracing::warn!(
                side,
                file = %std::path::Path::new(&path).display(),
                "TLS key logging is ON (SSLKEYLOGFILE): anyone who can read this file can decrypt these connections; never in production"
            );
            Arc::new(rustls::KeyLogFile::new())
        }
        None => {
            tracing::debug!(
                side,
                "key logging requested but SSLKEYLOGFILE is not set: no keys are logged"
            );
            Arc::new(rustls::NoKeyLog {})
        }
    }
}

fn first_duplicate<T: PartialEq + Copy>(items: &[T]) -> Option<T> {
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].contains(item))
        .map(|(_, item)| *item)
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// A rustls group's name (`X25519MLKEM768`, `secp256r1`, or its number).
pub(crate) fn debug_name(group: NamedGroup) -> String {
    match KxGroup::from_named_group(group) {
        Some(g) => g.envoy_name().to_owned(),
        None => group.as_str().map_or_else(
            || format!("group 0x{:04x}", u16::from(group)),
            str::to_owned,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_distinct() {
        for preset in TlsPreset::ALL {
            TlsPolicy::preset(preset).check().unwrap();
            assert_eq!(preset.name().parse::<TlsPreset>().unwrap(), preset);
        }
        assert!(
            TlsPolicy::classical()
                .groups
                .iter()
                .all(|g| !g.is_post_quantum())
        );
        assert!(
            TlsPolicy::nist()
                .groups
                .iter()
                .all(|g| matches!(g, KxGroup::Secp256r1 | KxGroup::Secp384r1))
        );
    }

    #[test]
    fn impossible_policies_name_the_field() {
        let cases: Vec<(TlsPolicy, &str, &str)> = vec![
            (
                TlsPolicy {
                    groups: vec![KxGroup::X25519Mlkem768],
                    ..TlsPolicy::default().allow_tls12()
                },
                "groups",
                "TLS 1.3-only hybrid",
            ),
            (
                TlsPolicy::tls13_only().allow_tls12(),
                "cipher_suites",
                "no TLSv1.2 cipher suite",
            ),
            (
                TlsPolicy {
                    cipher_suites: vec![],
                    ..TlsPolicy::default()
                },
                "cipher_suites",
                "empty",
            ),
            (
                TlsPolicy {
                    groups: vec![],
                    ..TlsPolicy::default()
                },
                "groups",
                "no key-exchange group",
            ),
            (
                TlsPolicy {
                    min_version: TlsVersion::Tls13,
                    max_version: TlsVersion::Tls12,
                    ..TlsPolicy::default()
                },
                "min_version",
                "above max_version",
            ),
            (
                TlsPolicy {
                    groups: vec![KxGroup::X25519, KxGroup::X25519],
                    ..TlsPolicy::default()
                },
                "groups",
                "listed twice",
            ),
        ];
        for (policy, field, text) in cases {
            let err = policy.check().unwrap_err();
            match &err {
                Error::InvalidTlsPolicy { field: f, .. } => assert_eq!(*f, field, "{err}"),
                other => panic!("{other:?}"),
            }
            assert!(err.to_string().contains(text), "{err}");
        }
        // A group the provider lacks.
        let mut base = rustls::crypto::aws_lc_rs::default_provider();
        base.kx_groups
            .retain(|g| g.name() != NamedGroup::X25519MLKEM768);
        let err = TlsPolicy::default().crypto_provider(&base).unwrap_err();
        assert!(
            err.to_string()
                .contains("groups: the crypto provider has no X25519MLKEM768"),
            "{err}"
        );
    }

    #[test]
    fn provider_follows_the_policy_order() {
        let provider = TlsPolicy::default()
            .crypto_provider(&rustls::crypto::aws_lc_rs::default_provider())
            .unwrap();
        let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
        // TLS 1.2 suites are dropped while TLS 1.2 is off.
        assert!(
            provider
                .cipher_suites
                .iter()
                .all(|s| s.version() == &rustls::version::TLS13)
        );
    }

    #[test]
    fn names_round_trip() {
        for g in KxGroup::ALL {
            assert_eq!(g.envoy_name().parse::<KxGroup>().unwrap(), g);
        }
        for s in TlsSuite::ALL {
            assert_eq!(s.iana_name().parse::<TlsSuite>().unwrap(), s);
            assert_eq!(TlsSuite::from_cipher_suite(s.cipher_suite()), Some(s));
        }
    }
}
