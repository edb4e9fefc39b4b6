//! Key algorithms and key pairs.

use std::fmt;
use std::str::FromStr;

use rcgen::{PublicKeyData, RsaKeySize};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

const EXPECTED_ALGS: &str = "p256, p384, ed25519, rsa2048, rsa3072, rsa4096";

/// The key algorithms this crate generates and signs with.
///
/// ECDSA P-256 is the default: small, fast and accepted by every TLS stack.
///
/// ```
/// use mtls_certs::KeyAlgorithm;
///
/// assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
/// assert_eq!("rsa3072".parse::<KeyAlgorithm>().unwrap(), KeyAlgorithm::Rsa3072);
/// assert!("rsa1024".parse::<KeyAlgorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (default).
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 3072-bit, PKCS#1 v1.5 with SHA-256.
    Rsa3072,
    /// RSA 4096-bit, PKCS#1 v1.5 with SHA-256.
    Rsa4096,
}

impl KeyAlgorithm {
    /// RSA of the given size; sizes below 2048 bits are refused with
    /// [`Error::RsaKeyTooSmall`], other non-standard sizes with
    /// [`Error::UnsupportedKeyAlgorithm`].
    ///
    /// ```
    /// use mtls_certs::{Error, KeyAlgorithm};
    /// assert_eq!(KeyAlgorithm::rsa(4096).unwrap(), KeyAlgorithm::Rsa4096);
    /// assert!(matches!(KeyAlgorithm::rsa(1024), Err(Error::RsaKeyTooSmall { presented: 1024 })));
    /// ```
    pub fn rsa(bits: usize) -> Result<Self> {
        match bits {
            2048 => Ok(Self::Rsa2048),
            3072 => Ok(Self::Rsa3072),
            4096 => Ok(Self::Rsa4096),
            b if b < 2048 => Err(Error::RsaKeyTooSmall { presented: b }),
            b => Err(Error::UnsupportedKeyAlgorithm {
                expected: "RSA of 2048, 3072 or 4096 bits",
                presented: format!("rsa{b}"),
            }),
        }
    }

    /// ECDSA on the curve of the given size in bits (256 or 384).
    pub fn ecdsa(bits: usize) -> Result<Self> {
        match bits {
            256 => Ok(Self::EcdsaP256),
            384 => Ok(Self::EcdsaP384),
            b => Err(Error::UnsupportedKeyAlgorithm {
                expected: "ECDSA of 256 or 384 bits",
                presented: format!("ecdsa{b}"),
            }),
        }
    }

    /// Whether this is an RSA algorithm (RSA leaves also get keyEncipherment).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }

    /// The short name used on the command line (`p256`, `rsa2048`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "p256",
            Self::EcdsaP384 => "p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
            Self::Rsa4096 => "rsa4096",
        }
    }

    pub(crate) fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    /// Accepts `p256`/`ecdsa-p256`/`ecdsa256`, `p384`/..., `ed25519`, `rsa`/`rsa2048`,
    /// `rsa3072`, `rsa4096` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        match lower.as_str() {
            "p256" | "ecdsap256" | "ecdsa256" | "ecdsa" | "ec" | "prime256v1" => {
                Ok(Self::EcdsaP256)
            }
            "p384" | "ecdsap384" | "ecdsa384" | "secp384r1" => Ok(Self::EcdsaP384),
            "ed25519" => Ok(Self::Ed25519),
            "rsa" => Ok(Self::Rsa2048),
            other => match other.strip_prefix("rsa").map(str::parse::<usize>) {
                Some(Ok(bits)) => Self::rsa(bits),
                _ => Err(Error::UnsupportedKeyAlgorithm {
                    expected: EXPECTED_ALGS,
                    presented: s.to_owned(),
                }),
            },
        }
    }
}

/// A private key with its algorithm.
///
/// Keys are generated with aws-lc-rs (through rcgen) and serialized as PKCS#8
/// (`-----BEGIN PRIVATE KEY-----`). Loading also accepts SEC1 (`EC PRIVATE KEY`, as cfssl
/// writes) and PKCS#1 (`RSA PRIVATE KEY`). `Debug` never prints key material.
///
/// ```
/// use mtls_certs::{KeyAlgorithm, KeyPair};
///
/// let key = KeyPair::generate(KeyAlgorithm::EcdsaP256)?;
/// let pem = key.to_pem();
/// assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
/// let again = KeyPair::from_pem(&pem)?;
/// assert_eq!(again.algorithm(), KeyAlgorithm::EcdsaP256);
/// assert_eq!(again.public_key_der(), key.public_key_der());
/// # Ok::<(), mtls_certs::Error>(())
/// ```
pub struct KeyPair {
    pub(crate) inner: rcgen::KeyPair,
    algorithm: KeyAlgorithm,
}

impl KeyPair {
    /// Generates a fresh key of the given algorithm.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self> {
        let alg = algorithm.signature_algorithm();
        let inner = match algorithm {
            KeyAlgorithm::Rsa2048 => rcgen::KeyPair::generate_rsa_for(alg, RsaKeySize::_2048)?,
            KeyAlgorithm::Rsa3072 => rcgen::KeyPair::generate_rsa_for(alg, RsaKeySize::_3072)?,
            KeyAlgorithm::Rsa4096 => rcgen::KeyPair::generate_rsa_for(alg, RsaKeySize::_4096)?,
            _ => rcgen::KeyPair::generate_for(alg)?,
        };
        Ok(Self { inner, algorithm })
    }

    /// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1).
    ///
    /// Garbage or truncated input gives [`Error::InvalidPem`]; RSA keys under 2048 bits
    /// give [`Error::RsaKeyTooSmall`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::InvalidPem {
            expected: "PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
            presented: mtls_identity::pem_error_words(&e),
        })?;
        Self::from_der(&der)
    }

    /// Reads a DER private key.
    pub fn from_der(der: &PrivateKeyDer<'_>) -> Result<Self> {
        if let Some(bits) = rsa_private_key_bits(der)
            && bits < 2048
        {
            return Err(Error::RsaKeyTooSmall { presented: bits });
        }
        let inner = rcgen::KeyPair::try_from(der).map_err(|e| Error::InvalidKey {
            presented: e.to_string(),
        })?;
        let algorithm = algorithm_of(&inner, EXPECTED_ALGS)?;
        Ok(Self { inner, algorithm })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pem(&self) -> String {
        self.inner.serialize_pem()
    }

    /// PKCS#8 DER of the private key, ready for rustls.
    pub fn to_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.inner.serialize_der()))
    }

    /// DER `SubjectPublicKeyInfo` of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    /// PEM of the public key.
    pub fn public_key_pem(&self) -> String {
        self.inner.public_key_pem()
    }

    /// The underlying rcgen key pair, for callers who drive rcgen themselves.
    pub fn as_rcgen(&self) -> &rcgen::KeyPair {
        &self.inner
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The algorithm of a key pair's or a CSR's public key; `expected` names the accepted ones in
/// the error for any other.
pub(crate) fn algorithm_of(
    key: &impl PublicKeyData,
    expected: &'static str,
) -> Result<KeyAlgorithm> {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Ok(KeyAlgorithm::EcdsaP256)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Ok(KeyAlgorithm::EcdsaP384)
    } else if alg == &rcgen::PKCS_ED25519 {
        Ok(KeyAlgorithm::Ed25519)
    } else if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        KeyAlgorithm::rsa(rsa_modulus_bits(key.der_bytes()))
    } else {
        Err(Error::UnsupportedKeyAlgorithm {
            expected,
            presented: format!("{alg:?}"),
        })
    }
}

/// Modulus size of an RSA private key (PKCS#8 or PKCS#1), so that small keys get a precise
/// error instead of aws-lc-rs's generic rejection.
fn rsa_private_key_bits(der: &PrivateKeyDer<'_>) -> Option<usize> {
    use x509_parser::der_parser::ber::BerObject;
    use x509_parser::der_parser::parse_der;
    fn modulus_bits(rsa_private_key: &BerObject<'_>) -> Option<usize> {
        let seq = rsa_private_key.as_sequence().ok()?;
        let modulus = seq.get(1)?.as_slice().ok()?;
        let modulus = match modulus.iter().position(|b| *b != 0) {
            Some(i) => &modulus[i..],
            None => return None,
        };
        Some(modulus.len() * 8 - modulus.first()?.leading_zeros() as usize)
    }
    match der {
        PrivateKeyDer::Pkcs1(k) => modulus_bits(&parse_der(k.secret_pkcs1_der()).ok()?.1),
        PrivateKeyDer::Pkcs8(k) => {
            let (_, info) = parse_der(k.secret_pkcs8_der()).ok()?;
            let seq = info.as_sequence().ok()?;
            let alg = seq
                .get(1)?
                .as_sequence()
                .ok()?
                .first()?
                .as_oid()
                .ok()?
                .to_id_string();
            if alg != "1.2.840.113549.1.1.1" {
                return None;
            }
            let inner = seq.get(2)?.as_slice().ok()?;
            modulus_bits(&parse_der(inner).ok()?.1)
        }
        _ => None,
    }
}

/// Bits of the modulus of a DER `RSAPublicKey`.
pub(crate) fn rsa_modulus_bits(rsa_public_key_der: &[u8]) -> usize {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::RSAPublicKey;
    match RSAPublicKey::from_der(rsa_public_key_der) {
        Ok((_, key)) => key.key_size(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa3072,
            KeyAlgorithm::Rsa4096,
        ] {
            assert_eq!(alg.name().parse::<KeyAlgorithm>().unwrap(), alg);
        }
        assert!(matches!(
            "rsa1024".parse::<KeyAlgorithm>(),
            Err(Error::RsaKeyTooSmall { presented: 1024 })
        ));
        assert!(matches!(
            "dsa".parse::<KeyAlgorithm>(),
            Err(Error::UnsupportedKeyAlgorithm { .. })
        ));
    }

    #[test]
    fn rsa_roundtrip_reports_size() {
        let key = KeyPair::generate(KeyAlgorithm::Rsa2048).unwrap();
        let again = KeyPair::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.algorithm(), KeyAlgorithm::Rsa2048);
    }
}
