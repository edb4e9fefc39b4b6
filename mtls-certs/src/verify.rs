//! Chain verification with rustls-webpki.

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};

use crate::error::{Error, Result};
use crate::inspect::{certs_from_bytes, parse_x509};

/// Which extended key usage the leaf must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Usage {
    /// TLS server authentication.
    Server,
    /// TLS client authentication.
    Client,
    /// Either (server tried first).
    #[default]
    Any,
}

/// Verifies `chain` (leaf first, then intermediates in any order) against the trust anchors
/// in `bundle`, now. Delegates to rustls-webpki, the verifier rustls itself uses.
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, Error, LeafParams, Usage, verify_chain};
///
/// let root = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let other = CertificateAuthority::new_root(&CaParams::new("Other Root"))?;
/// let leaf = root.issue(&LeafParams::server(["api.internal"]))?;
/// verify_chain(&leaf.cert_chain(), &[root.cert_der().clone()], Usage::Server)?;
/// let err = verify_chain(&leaf.cert_chain(), &[other.cert_der().clone()], Usage::Server).unwrap_err();
/// assert!(matches!(err, Error::ChainVerification { .. }));
/// # Ok::<(), mtls_certs::Error>(())
/// ```
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
    usage: Usage,
) -> Result<()> {
    verify_chain_at(chain, bundle, usage, OffsetDateTime::now_utc())
}

/// [`verify_chain`] with PEM inputs: `chain_pem` holds the leaf then intermediates,
/// `bundle_pem` one or more trusted roots.
pub fn verify_chain_pem(chain_pem: &str, bundle_pem: &str, usage: Usage) -> Result<()> {
    let chain = certs_from_bytes(chain_pem.as_bytes())?;
    let bundle = certs_from_bytes(bundle_pem.as_bytes())?;
    verify_chain(&chain, &bundle, usage)
}

/// [`verify_chain`] at a given instant.
pub fn verify_chain_at(
    chain: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
    usage: Usage,
    at: OffsetDateTime,
) -> Result<()> {
    let (leaf, intermediates) = chain.split_first().ok_or(Error::InvalidPem {
        expected: "CERTIFICATE",
        presented: "an empty chain".into(),
    })?;
    let x509 = parse_x509(leaf)?;
    // The leaf as people know it: its subject, else (an SVID has none) its first URI or
    // DNS SAN.
    let subject = match x509.subject().to_string() {
        dn if !dn.is_empty() => dn,
        _ => x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| "a leaf with an empty subject and no URI or DNS name".to_owned()),
    };
    let fail = |reason: String| Error::ChainVerification {
        subject: subject.clone(),
        anchors: bundle.len(),
        reason,
    };
    let anchors = bundle
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("an unusable trust anchor ({})", webpki_reason(&e))))?;
    if anchors.is_empty() {
        return Err(fail("an empty CA bundle".into()));
    }
    let ee = EndEntityCert::try_from(leaf)
        .map_err(|e| fail(format!("an unparsable leaf ({})", webpki_reason(&e))))?;
    let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    let intermediates: Vec<CertificateDer<'_>> = intermediates.to_vec();
    let attempt = |ku: KeyUsage| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            ku,
            None,
            None,
        )
        .map(|_| ())
    };
    let result = match usage {
        Usage::Server => attempt(KeyUsage::server_auth()),
        Usage::Client => attempt(KeyUsage::client_auth()),
        Usage::Any => {
            attempt(KeyUsage::server_auth()).or_else(|_| attempt(KeyUsage::client_auth()))
        }
    };
    result.map_err(|e| fail(webpki_reason(&e)))
}

/// What webpki's verdict means, in words with RFC 3339 times (its own `Display` is its
/// `Debug`: `CertExpired { time: UnixTime(…), … }`).
fn webpki_reason(error: &webpki::Error) -> String {
    let at = |t: UnixTime| {
        i64::try_from(t.as_secs())
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{} s after the epoch", t.as_secs()))
    };
    match error {
        webpki::Error::CertExpired { time, not_after } => format!(
            "a certificate that expired at {} (checked at {})",
            at(*not_after),
            at(*time)
        ),
        webpki::Error::CertNotValidYet { time, not_before } => format!(
            "a certificate not valid before {} (checked at {})",
            at(*not_before),
            at(*time)
        ),
        webpki::Error::UnknownIssuer => {
            "a chain that leads to none of them (unknown issuer)".into()
        }
        webpki::Error::CertRevoked => "a revoked certificate".into(),
        webpki::Error::CaUsedAsEndEntity => "a CA certificate as the leaf".into(),
        webpki::Error::EndEntityUsedAsCa => "a leaf certificate used as an issuer".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "a leaf whose extended key usage does not allow this use".into()
        }
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain that does not verify".into()
        }
        webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a signature algorithm that is not supported".into()
        }
        webpki::Error::PathLenConstraintViolated => {
            "a chain longer than an issuer's path length constraint allows".into()
        }
        other => mtls_identity::debug_words(other),
    }
}
