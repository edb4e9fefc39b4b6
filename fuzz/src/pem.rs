//! PEM (and DER) certificates and keys: every entry point that reads them.

use mtls_certs::{CertificateSummary, KeyPair, parse_certificates_pem};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

/// `data` = a mode byte, then PEM text (mode even) or one DER certificate (mode odd).
///
/// PEM: `mtls_certs::parse_certificates_pem` must agree with the reference — rustls-pki-types'
/// PEM reader giving at least one `CERTIFICATE` block, each read by x509-parser — and return
/// the same DER. The same text also goes to the other PEM readers (trust bundles, private
/// and public keys of mtls-certs, mtls-core and mtls-jwt), which must not panic.
pub fn pem(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        der_certificate(rest);
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let reference: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(rest).collect();
    let reference = reference.ok().filter(|certs| {
        !certs.is_empty()
            && certs
                .iter()
                // One whole certificate per block: DER leaves nothing after it.
                .all(|c| {
                    x509_parser::certificate::X509Certificate::from_der(c.as_ref())
                        .is_ok_and(|(rest, _)| rest.is_empty())
                })
    });
    match (parse_certificates_pem(text), reference) {
        (Ok(ours), Some(theirs)) => {
            assert_eq!(ours, theirs, "certificates read from the same PEM");
            for cert in &ours {
                der_certificate(cert.as_ref());
            }
            let _ = CertificateSummary::from_pem(text);
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("parse_certificates_pem accepted what the reference refuses"),
        (Err(e), Some(_)) => panic!("parse_certificates_pem refused a valid bundle: {e}"),
    }
    let _ = mtls_core::TrustBundle::from_pem(rest);
    if let Ok(key) = KeyPair::from_pem(text) {
        let again = KeyPair::from_pem(&key.to_pem()).expect("a key reads back");
        assert_eq!(again.public_key_der(), key.public_key_der());
    }
    let _ = mtls_jwt::SigningKey::from_pem(text);
    let _ = mtls_jwt::PublicKey::from_pem(text);
}

/// One DER certificate: the summary (`mtls cert inspect`) must not panic, and what it
/// reports about SANs must be what x509-parser reads.
fn der_certificate(der: &[u8]) {
    let Ok(summary) = CertificateSummary::from_der(der) else {
        return;
    };
    let serial = summary.serial.to_string();
    assert!(!serial.is_empty());
    assert!(
        serial
            .bytes()
            .all(|b| b == b':' || (b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
        "serial {serial:?} is colon-separated lowercase hex"
    );
    if let Some(id) = &summary.spiffe_id {
        assert!(
            summary
                .sans
                .iter()
                .any(|s| s.to_string().contains(id.as_str())),
            "the SPIFFE ID {id} is one of the SANs"
        );
    }
}
