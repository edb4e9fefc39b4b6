//! Reading a certificate into a typed summary.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use crate::error::{Error, Result};
use crate::san::SubjectAltName;
use mtls_identity::{LeafFacts, Serial};

/// What a certificate says, typed. `Serialize` gives the `mtls cert inspect --json` output.
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, CertificateSummary, LeafParams};
///
/// let ca = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let leaf = ca.issue(&LeafParams::svid("spiffe://example.org/api".parse()?))?;
/// let summary = CertificateSummary::from_pem(&leaf.cert_pem())?;
/// assert_eq!(summary.spiffe_id.as_deref(), Some("spiffe://example.org/api"));
/// assert!(!summary.is_ca);
/// assert_eq!(summary.extended_key_usage, ["serverAuth", "clientAuth"]);
/// assert!(summary.authority_key_id.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CertificateSummary {
    /// Subject DN (RFC 4514-like text).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number (shown as colon-separated lowercase hex, as everywhere in mtls).
    pub serial: Serial,
    /// Start of validity.
    #[cfg_attr(feature = "serde", serde(with = "time::serde::rfc3339"))]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[cfg_attr(feature = "serde", serde(with = "time::serde::rfc3339"))]
    pub not_after: OffsetDateTime,
    /// Subject alternative names, typed.
    pub sans: Vec<SubjectAltName>,
    /// The SPIFFE ID, when there is exactly one URI SAN and it is a valid SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// Key usages (RFC 5280 names, e.g. `digitalSignature`, `keyCertSign`).
    pub key_usage: Vec<String>,
    /// Extended key usages (`serverAuth`, `clientAuth`, ... or dotted OIDs).
    pub extended_key_usage: Vec<String>,
    /// Subject key identifier, hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier, hex.
    pub authority_key_id: Option<String>,
    /// Public key algorithm (e.g. `EC P-256`, `RSA 2048`, `Ed25519`).
    pub public_key: String,
    /// SHA-256 fingerprint of the DER, colon-separated uppercase hex (as openssl prints it).
    pub sha256_fingerprint: String,
}

impl CertificateSummary {
    /// Summarizes the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let certs = crate::pem::parse_certificates_pem(pem)?;
        let first = certs.first().ok_or(Error::InvalidPem {
            expected: "CERTIFICATE",
            presented: "no certificate".into(),
        })?;
        Self::from_der(first)
    }

    /// Summarizes a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let x509 = parse_x509(der)?;
        // The facts every mtls crate reads the same way (mtls-identity), then what only a
        // summary shows.
        let facts = LeafFacts::from_x509(&x509).map_err(der_error)?;
        let extended_key_usage = match x509.extended_key_usage().map_err(invalid)? {
            Some(eku) => eku_names(eku.value),
            None => Vec::new(),
        };
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for ext in x509.extensions() {
            match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ki) => {
                    subject_key_id = Some(hex(ki.0));
                }
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|k| hex(k.0));
                }
                _ => {}
            }
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let sha256_fingerprint = digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        Ok(Self {
            subject: facts.subject,
            issuer: facts.issuer,
            serial: facts.serial,
            not_before: OffsetDateTime::from(facts.not_before),
            not_after: OffsetDateTime::from(facts.not_after),
            sans: facts.sans,
            spiffe_id: facts.spiffe_id.map(|id| id.to_string()),
            is_ca: facts.is_ca,
            path_len: facts.path_len,
            key_usage: facts
                .key_usage
                .map(|ku| ku.names().into_iter().map(str::to_owned).collect())
                .unwrap_or_default(),
            extended_key_usage,
            subject_key_id,
            authority_key_id,
            public_key: public_key_description(&x509),
            sha256_fingerprint,
        })
    }
}

/// Summarizes a certificate given as PEM or DER bytes (DER starts with a SEQUENCE tag;
/// anything else is read as PEM).
///
/// ```
/// use mtls_certs::{inspect, Error};
/// assert!(matches!(inspect(b"not a certificate"), Err(Error::InvalidPem { .. })));
/// assert!(matches!(inspect(b"\x30\x03\x02\x01\x01"), Err(Error::InvalidDer { .. })));
/// ```
pub fn inspect(bytes: &[u8]) -> Result<CertificateSummary> {
    if looks_like_der(bytes) {
        CertificateSummary::from_der(bytes)
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidPem {
            expected: "CERTIFICATE",
            presented: "binary data that is neither PEM nor DER".into(),
        })?;
        CertificateSummary::from_pem(text)
    }
}

/// DER certificates start with a SEQUENCE tag; PEM text never does.
pub(crate) fn looks_like_der(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30)
}

pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>> {
    mtls_identity::parse_certificate(der).map_err(der_error)
}

/// The foundation's certificate errors as ours.
fn der_error(e: mtls_identity::Error) -> Error {
    match e {
        mtls_identity::Error::MalformedCertificate { what, reason } => {
            Error::InvalidDer { what, reason }
        }
        other => Error::from(other),
    }
}

/// Parses PEM or DER into DER certificates (PEM may hold several).
pub(crate) fn certs_from_bytes(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    if !looks_like_der(bytes) {
        let mut out = Vec::new();
        for item in CertificateDer::pem_slice_iter(bytes) {
            out.push(item.map_err(|e| Error::InvalidPem {
                expected: "CERTIFICATE",
                presented: mtls_identity::pem_error_words(&e),
            })?);
        }
        if out.is_empty() {
            return Err(Error::InvalidPem {
                expected: "CERTIFICATE",
                presented: crate::pem::describe_missing(&String::from_utf8_lossy(bytes)),
            });
        }
        Ok(out)
    } else {
        parse_x509(bytes)?;
        Ok(vec![CertificateDer::from(bytes.to_vec())])
    }
}

fn invalid(e: x509_parser::error::X509Error) -> Error {
    Error::InvalidDer {
        what: "certificate extension",
        reason: e.to_string(),
    }
}

/// Lowercase hex without separators (key identifiers, fingerprint prefixes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn eku_names(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let flags = [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ];
    out.extend(
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| (*n).to_owned()),
    );
    out.extend(eku.other.iter().map(|oid| oid.to_id_string()));
    out
}

fn public_key_description(x509: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match x509.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => "EC P-256".into(),
            384 => "EC P-384".into(),
            n => format!("EC {n}"),
        },
        Ok(_) if x509.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            "Ed25519".into()
        }
        _ => x509.public_key().algorithm.algorithm.to_id_string(),
    }
}
