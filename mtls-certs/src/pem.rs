//! PEM helpers with errors that say what was expected.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
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
            presented: e.to_string(),
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
    fn base64_matches_reference() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
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
