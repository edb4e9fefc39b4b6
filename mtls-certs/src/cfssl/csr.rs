//! cfssl CSR JSON (`cfssl genkey` / `gencert` input).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;
use crate::san::SubjectAltName;
use crate::subject::{Subject, SubjectAttribute};

/// A cfssl CSR JSON document: `CN`, `hosts`, `key{algo,size}`, `names[]`, `ca{expiry,pathlen}`.
///
/// ```
/// use mtls_certs::cfssl::CfsslCsr;
///
/// let csr = CfsslCsr::from_json(r#"{"CN":"appclient","hosts":["app-internal-api",""],
///     "key":{"algo":"ecdsa","size":256},"names":[{"ST":"Tokyo","C":"JP"}]}"#)?;
/// assert_eq!(csr.sans().len(), 1); // "" is ignored, as cfssl does
/// assert_eq!(csr.subject().to_string(), "C=JP, ST=Tokyo, CN=appclient");
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CfsslCsr {
    /// Common name.
    #[serde(rename = "CN", default)]
    pub common_name: String,
    /// Hosts, classified into SANs (IP, e-mail, URI, else DNS; empty ignored).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Key request.
    #[serde(default)]
    pub key: Option<CfsslKey>,
    /// Name entries.
    #[serde(default)]
    pub names: Vec<CfsslName>,
    /// CA settings (for `initca`).
    #[serde(default)]
    pub ca: Option<CfsslCaConfig>,
}

/// `key` of a cfssl CSR.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CfsslKey {
    /// `ecdsa`, `rsa` or `ed25519`.
    pub algo: String,
    /// Size in bits (0 or absent: 256 for ECDSA, 2048 for RSA).
    #[serde(default)]
    pub size: usize,
}

/// One entry of `names`.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CfsslName {
    /// Country.
    #[serde(rename = "C")]
    pub country: Option<String>,
    /// State or province.
    #[serde(rename = "ST")]
    pub state: Option<String>,
    /// Locality.
    #[serde(rename = "L")]
    pub locality: Option<String>,
    /// Organization.
    #[serde(rename = "O")]
    pub organization: Option<String>,
    /// Organizational unit.
    #[serde(rename = "OU")]
    pub organizational_unit: Option<String>,
}

/// `ca` of a cfssl CSR.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CfsslCaConfig {
    /// CA lifetime (Go duration, e.g. `876000h`); default `43800h` (5 years) as cfssl.
    pub expiry: Option<String>,
    /// Path length constraint.
    pub pathlen: Option<u8>,
    /// Whether a `pathlen` of 0 is meant literally.
    #[serde(default)]
    pub pathlenzero: bool,
}

impl CfsslCsr {
    /// Parses cfssl CSR JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::CfsslJson {
            what: "CSR JSON",
            reason: e.to_string(),
        })
    }

    /// The key algorithm asked for. Unknown algorithms give
    /// [`Error::UnsupportedKeyAlgorithm`], RSA under 2048 bits [`Error::RsaKeyTooSmall`].
    pub fn key_algorithm(&self) -> Result<KeyAlgorithm> {
        let Some(key) = &self.key else {
            return Ok(KeyAlgorithm::EcdsaP256);
        };
        match key.algo.to_ascii_lowercase().as_str() {
            "ecdsa" => KeyAlgorithm::ecdsa(if key.size == 0 { 256 } else { key.size }),
            "rsa" => KeyAlgorithm::rsa(if key.size == 0 { 2048 } else { key.size }),
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            _ => Err(Error::UnsupportedKeyAlgorithm {
                expected: "cfssl key algo ecdsa, rsa or ed25519",
                presented: key.algo.clone(),
            }),
        }
    }

    /// The subject, in Go's pkix order: C, ST, L, O, OU, then CN.
    pub fn subject(&self) -> Subject {
        let mut subject = Subject::empty();
        for name in &self.names {
            let fields = [
                (SubjectAttribute::Country, &name.country),
                (SubjectAttribute::State, &name.state),
                (SubjectAttribute::Locality, &name.locality),
                (SubjectAttribute::Organization, &name.organization),
                (
                    SubjectAttribute::OrganizationalUnit,
                    &name.organizational_unit,
                ),
            ];
            for (attr, value) in fields {
                if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                    subject.push(attr, v);
                }
            }
        }
        if !self.common_name.is_empty() {
            subject.push(SubjectAttribute::CommonName, self.common_name.clone());
        }
        subject
    }

    /// `hosts` classified into SANs.
    pub fn sans(&self) -> Vec<SubjectAltName> {
        self.hosts
            .iter()
            .filter_map(|h| SubjectAltName::classify(h))
            .collect()
    }
}
