//! What issuance hands back: certificates, chains and keys.

use mtls_identity::Serial;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::key::KeyPair;
use crate::pem::der_to_pem;

/// A certificate signed by a [`CertificateAuthority`](crate::CertificateAuthority), with the
/// intermediates needed to chain it to the root (the root itself is not included).
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
///
/// let root = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let int = root.new_intermediate(&CaParams::new("Intermediate"))?;
/// let leaf = int.issue(&LeafParams::server(["api.internal"]))?;
/// // leaf then intermediate: what a TLS server sends
/// assert_eq!(leaf.cert_chain().len(), 2);
/// assert_eq!(leaf.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
/// assert!(!leaf.certificate().was_clamped());
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) intermediates: Vec<CertificateDer<'static>>,
    pub(crate) serial: Serial,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) clamped: bool,
}

impl IssuedCertificate {
    /// DER of the certificate.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// PEM of the certificate alone.
    pub fn pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert)
    }

    /// The certificate followed by its intermediates (DER), as rustls wants a chain.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.cert.clone())
            .chain(self.intermediates.iter().cloned())
            .collect()
    }

    /// PEM of the certificate followed by its intermediates.
    pub fn chain_pem(&self) -> String {
        self.cert_chain()
            .iter()
            .map(|c| der_to_pem("CERTIFICATE", c))
            .collect()
    }

    /// The intermediates (DER) between this certificate and the root, nearest first.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// The serial number (`Display`: colon-separated hex; bytes: [`Serial::as_bytes`]).
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether the requested `not_after` lay beyond the issuer's and was clamped to it.
    pub fn was_clamped(&self) -> bool {
        self.clamped
    }
}

/// An issued certificate together with its freshly generated private key: what
/// [`CertificateAuthority::issue`](crate::CertificateAuthority::issue) hands back. (Named so
/// it never meets `rustls::sign::CertifiedKey`, rustls' signing key with its chain.)
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
///
/// let ca = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let svid = ca.issue(&LeafParams::svid("spiffe://example.org/ns/default/sa/api".parse()?))?;
/// let (chain, key) = (svid.cert_chain(), svid.private_key_der()); // for rustls
/// assert_eq!(chain.len(), 1);
/// assert!(svid.key_pem().contains("PRIVATE KEY"));
/// # let _ = key;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Credential {
    pub(crate) certificate: IssuedCertificate,
    pub(crate) key: KeyPair,
}

impl Credential {
    /// The certificate and its chain.
    pub fn certificate(&self) -> &IssuedCertificate {
        &self.certificate
    }

    /// The private key.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// PEM of the leaf alone.
    pub fn cert_pem(&self) -> String {
        self.certificate.pem()
    }

    /// DER of the leaf alone.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.certificate.der()
    }

    /// PEM of the leaf followed by its intermediates.
    pub fn chain_pem(&self) -> String {
        self.certificate.chain_pem()
    }

    /// DER chain: leaf then intermediates.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.certificate.cert_chain()
    }

    /// PKCS#8 PEM of the private key.
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// PKCS#8 DER of the private key, for rustls.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        self.key.to_der()
    }

    /// Splits into certificate and key.
    pub fn into_parts(self) -> (IssuedCertificate, KeyPair) {
        (self.certificate, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shareable_across_tasks() {
        assert_send_sync::<IssuedCertificate>();
        assert_send_sync::<Credential>();
        assert_send_sync::<crate::CertificateAuthority>();
        assert_send_sync::<crate::Error>();
    }
}
