//! What we read out of a leaf certificate with x509-parser, and the X509-SVID rules.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use mtls_identity::SpiffeId;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::san::SubjectAltName;
use mtls_identity::Serial;

/// The facts about a leaf certificate that verification and [`crate::PeerIdentity`] need.
#[derive(Clone, Debug)]
pub(crate) struct LeafInfo {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) serial: Serial,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) sans: Vec<SubjectAltName>,
    pub(crate) is_ca: bool,
    /// `None` when the certificate has no keyUsage extension.
    pub(crate) key_usage: Option<KeyUsageFlags>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyUsageFlags {
    digital_signature: bool,
    key_cert_sign: bool,
    crl_sign: bool,
}

impl std::fmt::Display for KeyUsageFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags: Vec<&str> = [
            (self.digital_signature, "digitalSignature"),
            (self.key_cert_sign, "keyCertSign"),
            (self.crl_sign, "cRLSign"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if flags.is_empty() {
            f.write_str("(no relevant flags)")
        } else {
            f.write_str(&flags.join(","))
        }
    }
}

/// RFC 5280 §6.1.4(n): a CA certificate whose keyUsage extension is present must assert
/// keyCertSign to sign certificates. Checked for every CA of a verified path (intermediates
/// and the trust anchor's certificate): webpki reads the issuer's key usage only for CRLs.
/// Returns the CA's subject and key usage when it may not sign.
pub(crate) fn ca_may_not_sign(der: &[u8]) -> Result<Option<(String, String)>> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::MalformedCertificate {
        reason: e.to_string(),
    })?;
    let ku = cert.key_usage().map_err(|e| Error::MalformedCertificate {
        reason: format!("{}: {e}", cert.subject()),
    })?;
    Ok(match ku {
        Some(ku) if !ku.value.key_cert_sign() => {
            let flags = KeyUsageFlags {
                digital_signature: ku.value.digital_signature(),
                key_cert_sign: false,
                crl_sign: ku.value.crl_sign(),
            };
            Some((cert.subject().to_string(), flags.to_string()))
        }
        _ => None,
    })
}

impl LeafInfo {
    pub(crate) fn parse(der: &[u8]) -> Result<Self> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| Error::MalformedCertificate {
                reason: e.to_string(),
            })?;
        let malformed = |e: x509_parser::error::X509Error| Error::MalformedCertificate {
            reason: format!("{}: {e}", cert.subject()),
        };
        let mut sans = Vec::new();
        if let Some(ext) = cert.subject_alternative_name().map_err(malformed)? {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(v) => sans.push(SubjectAltName::Dns((*v).to_owned())),
                    GeneralName::URI(v) => sans.push(SubjectAltName::Uri((*v).to_owned())),
                    GeneralName::RFC822Name(v) => sans.push(SubjectAltName::Email((*v).to_owned())),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            sans.push(SubjectAltName::IpAddress(ip));
                        }
                    }
                    _ => {}
                }
            }
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(malformed)?
            .is_some_and(|bc| bc.value.ca);
        let key_usage = cert
            .key_usage()
            .map_err(malformed)?
            .map(|ku| KeyUsageFlags {
                digital_signature: ku.value.digital_signature(),
                key_cert_sign: ku.value.key_cert_sign(),
                crl_sign: ku.value.crl_sign(),
            });
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: Serial::from(cert.raw_serial()),
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
            sans,
            is_ca,
            key_usage,
        })
    }

    /// The URI SANs, in order.
    pub(crate) fn uris(&self) -> Vec<String> {
        self.sans
            .iter()
            .filter_map(|s| match s {
                SubjectAltName::Uri(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    /// The SPIFFE ID, if the certificate has exactly one URI SAN and it is a valid ID.
    /// Used for reporting (not verification).
    pub(crate) fn spiffe_id(&self) -> Option<SpiffeId> {
        match self.uris().as_slice() {
            [one] => parse_svid_id(one).ok(),
            _ => None,
        }
    }

    /// Applies the X509-SVID leaf rules and returns the SPIFFE ID.
    pub(crate) fn svid_id(&self) -> Result<SpiffeId> {
        if self.is_ca {
            return Err(Error::CaCertificateAsLeaf {
                subject: self.subject.clone(),
            });
        }
        let uris = self.uris();
        let [uri] = uris.as_slice() else {
            return Err(Error::SvidUriSanCount {
                count: uris.len(),
                presented: uris,
            });
        };
        let id = parse_svid_id(uri)?;
        let ku_ok = self
            .key_usage
            .is_some_and(|ku| ku.digital_signature && !ku.key_cert_sign && !ku.crl_sign);
        if !ku_ok {
            return Err(Error::SvidKeyUsage {
                presented: id.to_string(),
                key_usage: self.key_usage_text(),
            });
        }
        Ok(id)
    }

    fn key_usage_text(&self) -> String {
        match self.key_usage {
            Some(ku) => ku.to_string(),
            None => "(none)".to_owned(),
        }
    }

    /// Who the peer is, for messages: the SPIFFE ID when there is one, else the subject.
    pub(crate) fn display_name(&self) -> String {
        match self.spiffe_id() {
            Some(id) => id.to_string(),
            None if self.subject.is_empty() => sans_text(&self.sans),
            None => self.subject.clone(),
        }
    }
}

/// A SPIFFE ID as an X509-SVID must carry it: canonical, and not the trust domain root.
pub(crate) fn parse_svid_id(uri: &str) -> Result<SpiffeId> {
    let invalid = |reason: String| Error::SvidInvalidId {
        presented: uri.to_owned(),
        reason,
    };
    // The one strict parser (go-spiffe's rules), as for IDs in configuration.
    let id = SpiffeId::new(uri).map_err(|e| match e {
        mtls_identity::Error::InvalidSpiffeId { reason, .. } => invalid(reason),
        other => invalid(other.to_string()),
    })?;
    if id.path().is_empty() {
        return Err(invalid(
            "an X509-SVID must not carry the trust domain's root ID (empty path)".to_owned(),
        ));
    }
    Ok(id)
}

pub(crate) fn sans_text(sans: &[SubjectAltName]) -> String {
    sans.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// RFC 3339 for messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix {secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svid_ids_must_be_canonical_and_non_root() {
        assert!(parse_svid_id("spiffe://example.org/a").is_ok());
        let e = parse_svid_id("spiffe://Example.org/a").unwrap_err();
        assert!(e.to_string().contains("lower case"), "{e}");
        let e = parse_svid_id("spiffe://example.org").unwrap_err();
        assert!(e.to_string().contains("root ID"), "{e}");
        let e = parse_svid_id("spiffe://example.org/a/../b").unwrap_err();
        assert!(matches!(e, Error::SvidInvalidId { .. }), "{e}");
        let e = parse_svid_id("https://example.org/a").unwrap_err();
        assert!(matches!(e, Error::SvidInvalidId { .. }), "{e}");
    }

    #[test]
    fn time_formats() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
