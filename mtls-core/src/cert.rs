//! The X509-SVID rules over the leaf facts the foundation reads ([`LeafFacts`]), and
//! times in words.

use std::time::SystemTime;

use mtls_identity::{KeyUsage, LeafFacts, SpiffeId};

use crate::error::{Error, Result};
use crate::san::SubjectAltName;

/// The facts about a leaf certificate that verification and [`crate::PeerIdentity`] need:
/// the family's one [`LeafFacts`] (field access goes through to it), with the X509-SVID
/// rules on top.
#[derive(Clone, Debug)]
pub(crate) struct LeafInfo {
    pub(crate) facts: LeafFacts,
}

impl std::ops::Deref for LeafInfo {
    type Target = LeafFacts;

    fn deref(&self) -> &LeafFacts {
        &self.facts
    }
}

/// The key usage flags our messages name (the three the SVID and CA rules read), or
/// "(no relevant flags)".
fn relevant_flags(ku: KeyUsage) -> String {
    let flags: Vec<&str> = [
        (ku.digital_signature(), "digitalSignature"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if flags.is_empty() {
        "(no relevant flags)".to_owned()
    } else {
        flags.join(",")
    }
}

fn malformed(e: mtls_identity::Error) -> Error {
    match e {
        mtls_identity::Error::MalformedCertificate { reason, .. } => {
            Error::MalformedCertificate { reason }
        }
        other => Error::MalformedCertificate {
            reason: other.to_string(),
        },
    }
}

/// RFC 5280 §6.1.4(n): a CA certificate whose keyUsage extension is present must assert
/// keyCertSign to sign certificates. Checked for every CA of a verified path (intermediates
/// and the trust anchor's certificate): webpki reads the issuer's key usage only for CRLs.
/// Returns the CA's subject and key usage when it may not sign.
pub(crate) fn ca_may_not_sign(der: &[u8]) -> Result<Option<(String, String)>> {
    let facts = LeafFacts::from_der(der).map_err(malformed)?;
    Ok(match facts.key_usage {
        Some(ku) if !ku.key_cert_sign() => Some((facts.subject, relevant_flags(ku))),
        _ => None,
    })
}

impl LeafInfo {
    pub(crate) fn parse(der: &[u8]) -> Result<Self> {
        Ok(Self {
            facts: LeafFacts::from_der(der).map_err(malformed)?,
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

    /// The SPIFFE ID, if the certificate has exactly one URI SAN and it is a valid X509-SVID
    /// ID (not the trust domain's root). Used for reporting (not verification).
    pub(crate) fn spiffe_id(&self) -> Option<SpiffeId> {
        self.facts
            .spiffe_id
            .clone()
            .filter(|id| !id.path().is_empty())
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
            .is_some_and(|ku| ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
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
            Some(ku) => relevant_flags(ku),
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
