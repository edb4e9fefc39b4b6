//! The facts of a certificate, read once with x509-parser (feature `x509`).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::{Serial, SpiffeId, SubjectAltName};

/// What a certificate says about its subject, typed: read once for the whole family
/// (mtls-core's verifier and peer identities, mtls-certs' inspection).
///
/// Times are [`SystemTime`] (one time type across the family); [`spiffe_id`](Self::spiffe_id)
/// is set when the certificate has exactly one URI SAN and it is a SPIFFE ID as strictly as
/// [`SpiffeId::new`] reads it (whether it may name a workload is the verifier's question).
///
/// ```
/// use mtls_identity::{LeafFacts, SubjectAltName};
///
/// let key = rcgen::KeyPair::generate().unwrap();
/// let mut params = rcgen::CertificateParams::new(vec!["api.internal".to_owned()]).unwrap();
/// params.subject_alt_names.push(rcgen::SanType::URI("spiffe://example.org/api".try_into().unwrap()));
/// params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
/// let cert = params.self_signed(&key).unwrap();
///
/// let facts = LeafFacts::from_der(cert.der()).unwrap();
/// assert_eq!(facts.sans, [
///     SubjectAltName::Dns("api.internal".into()),
///     SubjectAltName::Uri("spiffe://example.org/api".into()),
/// ]);
/// assert_eq!(facts.spiffe_id.unwrap().to_string(), "spiffe://example.org/api");
/// assert!(!facts.is_ca);
/// let key_usage = facts.key_usage.unwrap();
/// assert!(key_usage.digital_signature() && !key_usage.key_cert_sign());
/// assert_eq!(key_usage.to_string(), "digitalSignature");
/// assert!(facts.not_before < facts.not_after);
///
/// let err = LeafFacts::from_der(b"\x30\x03\x02\x01\x01").unwrap_err();
/// assert!(matches!(err, mtls_identity::Error::MalformedCertificate { what: "certificate", .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeafFacts {
    /// Subject DN (RFC 4514-like text, as x509-parser prints it).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Subject alternative names in certificate order (other name forms are left out).
    pub sans: Vec<SubjectAltName>,
    /// The SPIFFE ID: the one URI SAN, when there is exactly one and it is a SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// keyUsage; `None` when the certificate has no keyUsage extension.
    pub key_usage: Option<KeyUsage>,
}

impl LeafFacts {
    /// Reads a DER certificate (all of `der`: trailing bytes are refused).
    ///
    /// Errors: [`Error::MalformedCertificate`] with `what` "certificate" (not DER, not a
    /// certificate, trailing bytes) or "certificate extension" (a SAN, basicConstraints or
    /// keyUsage extension that does not parse; the reason starts with the subject).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        Self::from_x509(&parse_certificate(der)?)
    }

    /// The facts of a certificate already parsed (for callers that read more of it).
    pub fn from_x509(cert: &X509Certificate<'_>) -> Result<Self> {
        let malformed = |e: x509_parser::error::X509Error| Error::MalformedCertificate {
            what: "certificate extension",
            reason: format!("{}: {e}", cert.subject()),
        };
        let sans: Vec<SubjectAltName> = match cert.subject_alternative_name().map_err(malformed)? {
            Some(ext) => ext
                .value
                .general_names
                .iter()
                .filter_map(SubjectAltName::from_general_name)
                .collect(),
            None => Vec::new(),
        };
        let mut uris = sans.iter().filter_map(|s| match s {
            SubjectAltName::Uri(u) => Some(u),
            _ => None,
        });
        let spiffe_id = match (uris.next(), uris.next()) {
            (Some(one), None) => SpiffeId::new(one).ok(),
            _ => None,
        };
        let (is_ca, path_len) = match cert.basic_constraints().map_err(malformed)? {
            Some(bc) => (bc.value.ca, bc.value.path_len_constraint),
            None => (false, None),
        };
        let key_usage = cert
            .key_usage()
            .map_err(malformed)?
            .map(|ku| KeyUsage(ku.value.flags));
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: Serial::from(cert.raw_serial()),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            sans,
            spiffe_id,
            is_ca,
            path_len,
            key_usage,
        })
    }
}

/// Parses a whole DER certificate with x509-parser: [`Error::MalformedCertificate`] when
/// it is not one or bytes follow it.
///
/// ```
/// let err = mtls_identity::parse_certificate(b"not DER").unwrap_err();
/// assert!(err.to_string().starts_with("malformed certificate: "), "{err}");
/// ```
pub fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>> {
    let malformed = |reason: String| Error::MalformedCertificate {
        what: "certificate",
        reason,
    };
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(malformed("trailing bytes after the certificate".into())),
        Err(e) => Err(malformed(e.to_string())),
    }
}

impl SubjectAltName {
    /// The SAN a general name is, for the forms a SAN can be (DNS, URI, e-mail, a 4- or
    /// 16-byte IP address); `None` for the others.
    ///
    /// ```
    /// use x509_parser::extensions::GeneralName;
    /// use mtls_identity::SubjectAltName;
    ///
    /// assert_eq!(
    ///     SubjectAltName::from_general_name(&GeneralName::IPAddress(&[10, 0, 0, 1])),
    ///     Some(SubjectAltName::IpAddress("10.0.0.1".parse().unwrap())),
    /// );
    /// assert_eq!(SubjectAltName::from_general_name(&GeneralName::IPAddress(&[10, 0])), None);
    /// ```
    pub fn from_general_name(name: &GeneralName<'_>) -> Option<Self> {
        match name {
            GeneralName::DNSName(s) => Some(Self::Dns((*s).to_owned())),
            GeneralName::URI(s) => Some(Self::Uri((*s).to_owned())),
            GeneralName::RFC822Name(s) => Some(Self::Email((*s).to_owned())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            }
            .map(Self::IpAddress),
            _ => None,
        }
    }
}

/// The keyUsage extension's bits (RFC 5280 §4.2.1.3).
///
/// [`Display`](fmt::Display) lists the RFC 5280 names of the bits set, comma-separated
/// (`digitalSignature,keyCertSign`), or `(none)`.
///
/// ```
/// use mtls_identity::KeyUsage;
///
/// let ku = KeyUsage::from_bits(0b110_0000); // keyCertSign | cRLSign
/// assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
/// assert_eq!(ku.names(), ["keyCertSign", "cRLSign"]);
/// assert_eq!(ku.to_string(), "keyCertSign,cRLSign");
/// assert_eq!(KeyUsage::from_bits(0).to_string(), "(none)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyUsage(u16);

impl KeyUsage {
    /// RFC 5280's names, bit 0 first.
    const NAMES: [&'static str; 9] = [
        "digitalSignature",
        "contentCommitment",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];

    /// From the bits as x509-parser numbers them (bit 0 = digitalSignature).
    pub fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    /// The bits (bit 0 = digitalSignature).
    pub fn bits(self) -> u16 {
        self.0
    }

    /// digitalSignature.
    pub fn digital_signature(self) -> bool {
        self.0 & 1 != 0
    }

    /// keyCertSign.
    pub fn key_cert_sign(self) -> bool {
        self.0 & (1 << 5) != 0
    }

    /// cRLSign.
    pub fn crl_sign(self) -> bool {
        self.0 & (1 << 6) != 0
    }

    /// The RFC 5280 names of the bits set, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

fn system_time(unix: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix.unsigned_abs());
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}
