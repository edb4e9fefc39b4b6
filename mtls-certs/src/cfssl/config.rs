//! cfssl signing configuration JSON (`-config`).

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};
use serde::Deserialize;

use super::parse_duration;
use crate::error::{Error, Result};

const KNOWN_USAGES: &str = "signing, digital signature, content commitment, key encipherment, \
key agreement, data encipherment, cert sign, crl sign, encipher only, decipher only, any, \
server auth, client auth, code signing, email protection, s/mime, ipsec end system, \
ipsec tunnel, ipsec user, timestamping, ocsp signing, microsoft sgc, netscape sgc";

/// A cfssl signing configuration: `signing.default` and named `signing.profiles`.
///
/// Every usage name is checked when the config is read, so a typo fails early with
/// [`Error::UnknownUsage`] naming it.
///
/// ```
/// use mtls_certs::{cfssl::SigningConfig, Error};
///
/// let cfg = SigningConfig::from_json(r#"{"signing":{"default":{"expiry":"876000h",
///     "usages":["signing","key encipherment","client auth"]}}}"#)?;
/// assert_eq!(cfg.profile(None)?.expiry()?.as_secs(), 876_000 * 3600);
///
/// let bad = SigningConfig::from_json(r#"{"signing":{"default":{"usages":["server auht"]}}}"#);
/// assert!(matches!(bad, Err(Error::UnknownUsage { ref presented, .. }) if presented == "server auht"));
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct SigningConfig {
    /// The `signing` object.
    pub signing: Signing,
}

/// The `signing` object of a cfssl config.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct Signing {
    /// The default profile.
    #[serde(default)]
    pub default: Option<SigningProfile>,
    /// Named profiles.
    #[serde(default)]
    pub profiles: BTreeMap<String, SigningProfile>,
}

/// One signing profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct SigningProfile {
    /// Lifetime, Go duration (default `168h`, as cfssl).
    #[serde(default)]
    pub expiry: Option<String>,
    /// Usage names (key usages and extended key usages mixed, cfssl style).
    #[serde(default)]
    pub usages: Vec<String>,
}

impl SigningConfig {
    /// Parses and checks a signing config.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(json).map_err(|e| Error::CfsslJson {
            what: "signing config",
            reason: e.to_string(),
        })?;
        for profile in cfg
            .signing
            .default
            .iter()
            .chain(cfg.signing.profiles.values())
        {
            profile.usages()?;
            profile.expiry()?;
        }
        Ok(cfg)
    }

    /// The named profile, or the default one for `None`.
    pub fn profile(&self, name: Option<&str>) -> Result<&SigningProfile> {
        let found = match name {
            Some(n) => self.signing.profiles.get(n),
            None => self.signing.default.as_ref(),
        };
        found.ok_or_else(|| Error::UnknownProfile {
            presented: name.unwrap_or("(default)").to_owned(),
            expected: self
                .signing
                .default
                .iter()
                .map(|_| "(default)".to_owned())
                .chain(self.signing.profiles.keys().cloned())
                .collect(),
        })
    }
}

impl SigningProfile {
    /// The lifetime.
    pub fn expiry(&self) -> Result<Duration> {
        parse_duration(self.expiry.as_deref().unwrap_or("168h"))
    }

    /// The usages as (key usages, extended key usages).
    pub(crate) fn usages(&self) -> Result<(Vec<Ku>, Vec<Eku>)> {
        let mut ku = Vec::new();
        let mut eku = Vec::new();
        for name in &self.usages {
            match usage(name)? {
                Usage::Key(k) if !ku.contains(&k) => ku.push(k),
                Usage::Extended(e) if !eku.contains(&e) => eku.push(e),
                _ => {}
            }
        }
        Ok((ku, eku))
    }
}

enum Usage {
    Key(Ku),
    Extended(Eku),
}

fn usage(name: &str) -> Result<Usage> {
    use Usage::{Extended as E, Key as K};
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "signing" | "digital signature" => K(Ku::DigitalSignature),
        "content commitment" | "non repudiation" => K(Ku::ContentCommitment),
        "key encipherment" => K(Ku::KeyEncipherment),
        "key agreement" => K(Ku::KeyAgreement),
        "data encipherment" => K(Ku::DataEncipherment),
        "cert sign" => K(Ku::KeyCertSign),
        "crl sign" => K(Ku::CrlSign),
        "encipher only" => K(Ku::EncipherOnly),
        "decipher only" => K(Ku::DecipherOnly),
        "any" => E(Eku::Any),
        "server auth" => E(Eku::ServerAuth),
        "client auth" => E(Eku::ClientAuth),
        "code signing" => E(Eku::CodeSigning),
        "email protection" | "s/mime" => E(Eku::EmailProtection),
        "ipsec end system" => E(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => E(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => E(Eku::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "timestamping" => E(Eku::TimeStamping),
        "ocsp signing" => E(Eku::OcspSigning),
        "microsoft sgc" => E(Eku::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => E(Eku::Other(vec![2, 16, 840, 1, 113730, 4, 1])),
        _ => {
            return Err(Error::UnknownUsage {
                presented: name.to_owned(),
                expected: KNOWN_USAGES,
            });
        }
    })
}
