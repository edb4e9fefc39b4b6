//! PEM helpers with errors that say what was expected.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Parses every `CERTIFICATE` block of a PEM text; at least one is required.
///
/// Garbage or truncated input yields [`Error::InvalidPem`].
///
/// ```
/// use mtls_certs::{parse_certificates_pem, Error};
///
/// let err = parse_certificates_pem("-----BEGIN CERTIFICATE-----\nMIIB").unwrap_err();
/// assert!(matches!(err, Error::InvalidPem { .. }));
/// ```
pub fn parse_certificates_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certs.push(item.map_err(|e| Error::InvalidPem {
            expected: "CERTIFICATE",
            presented: mtls_identity::pem_error_words(&e),
        })?);
    }
    if certs.is_empty() {
        return Err(Error::InvalidPem {
            expected: "CERTIFICATE",
            presented: describe_missing(pem),
        });
    }
    for cert in &certs {
        crate::inspect::parse_x509(cert)?;
    }
    Ok(certs)
}

pub(crate) fn describe_missing(pem: &str) -> String {
    let trimmed = pem.trim();
    if trimmed.is_empty() {
        "empty input".into()
    } else if let Some(label) = trimmed.lines().find_map(|l| {
        l.strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
    }) {
        format!("a {label} block and no complete CERTIFICATE block")
    } else {
        "no PEM block".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_pem_is_described_in_words_not_bytes() {
        let full = der_to_pem("CERTIFICATE", &[0x30, 0x03, 0x02, 0x01, 0x01]);
        let truncated = &full[..full.len() - 20];
        let message = parse_certificates_pem(truncated).unwrap_err().to_string();
        assert!(
            message.contains("no end line (\"-----END CERTIFICATE-----\"): truncated input"),
            "{message}"
        );
        assert!(!message.contains('['), "{message}");
    }

    #[test]
    fn pem_lines_are_64_chars_and_roundtrip() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = der_to_pem("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn garbage_and_truncated() {
        assert!(matches!(
            parse_certificates_pem("hello"),
            Err(Error::InvalidPem { .. })
        ));
        assert!(matches!(
            parse_certificates_pem(""),
            Err(Error::InvalidPem { .. })
        ));
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n";
        assert!(matches!(
            parse_certificates_pem(truncated),
            Err(Error::InvalidPem { .. })
        ));
    }
}
