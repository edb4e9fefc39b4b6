//! Leaf profiles: which key usages and extended key usages a leaf gets.

use std::fmt;
use std::str::FromStr;

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};

use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;

/// What a leaf certificate is for.
///
/// | profile  | SANs                                   | EKU                    |
/// |----------|----------------------------------------|------------------------|
/// | `server` | DNS/IP (at least one)                  | serverAuth             |
/// | `client` | any (optional)                         | clientAuth             |
/// | `peer`   | DNS/IP (at least one)                  | serverAuth, clientAuth |
/// | `svid`   | exactly one SPIFFE URI + optional DNS  | serverAuth, clientAuth |
///
/// Every leaf gets a critical keyUsage of digitalSignature (plus keyEncipherment for RSA
/// keys), `CA:FALSE`, and never keyCertSign or cRLSign.
///
/// ```
/// use mtls_certs::Profile;
/// assert_eq!("svid".parse::<Profile>().unwrap(), Profile::Svid);
/// assert_eq!(Profile::Peer.to_string(), "peer");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Profile {
    /// TLS server certificate.
    Server,
    /// TLS client certificate.
    Client,
    /// Both server and client (a mesh peer).
    Peer,
    /// SPIFFE X509-SVID.
    Svid,
}

impl Profile {
    /// The key usages a leaf of this profile gets for a key of `alg`.
    pub(crate) fn key_usages(self, alg: KeyAlgorithm) -> Vec<KeyUsagePurpose> {
        let mut ku = vec![KeyUsagePurpose::DigitalSignature];
        if alg.is_rsa() {
            ku.push(KeyUsagePurpose::KeyEncipherment);
        }
        ku
    }

    /// The extended key usages of this profile.
    pub(crate) fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Self::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Self::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Self::Peer | Self::Svid => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }

    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Peer => "peer",
            Self::Svid => "svid",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "server" => Ok(Self::Server),
            "client" => Ok(Self::Client),
            "peer" => Ok(Self::Peer),
            "svid" => Ok(Self::Svid),
            _ => Err(Error::UnknownProfile {
                presented: s.to_owned(),
                expected: vec![
                    "server".into(),
                    "client".into(),
                    "peer".into(),
                    "svid".into(),
                ],
            }),
        }
    }
}
