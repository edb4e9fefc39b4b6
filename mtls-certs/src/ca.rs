//! Certificate authorities: roots, intermediates, loading, and signing.

use std::time::Duration;

use mtls_identity::Serial;
use rcgen::{BasicConstraints, IsCa, Issuer, KeyUsagePurpose, PublicKeyData};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::inspect::parse_x509;
use crate::issued::{Credential, IssuedCertificate};
use crate::key::{KeyAlgorithm, KeyPair};
use crate::leaf::LeafParams;
use crate::pem::{der_to_pem, parse_certificates_pem};
use crate::subject::Subject;
use crate::validity::{DEFAULT_INTERMEDIATE_TTL, DEFAULT_ROOT_TTL, Validity};

/// What to put in a CA certificate.
///
/// Defaults: P-256, 10 years for a root and 5 for an intermediate (never beyond the parent),
/// pathlen 1 for a root and 0 for an intermediate, `not_before` backdated 5 minutes.
///
/// ```
/// use std::time::Duration;
/// use mtls_certs::{CaParams, KeyAlgorithm};
///
/// let params = CaParams::new("Mesh Root")
///     .key_algorithm(KeyAlgorithm::EcdsaP384)
///     .valid_for(Duration::from_secs(365 * 86_400))
///     .path_len(2);
/// assert_eq!(params.path_len, Some(2));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CaParams {
    /// Subject DN.
    pub subject: Subject,
    /// Key algorithm of the generated key.
    pub key_algorithm: KeyAlgorithm,
    /// Validity; `None` means the default lifetime for a root or intermediate.
    pub validity: Option<Validity>,
    /// `pathLenConstraint`; `None` means 1 for a root, 0 for an intermediate.
    pub path_len: Option<u8>,
}

impl CaParams {
    /// CA parameters with this common name and the defaults.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self::for_subject(Subject::common_name(common_name))
    }

    /// CA parameters with a full subject DN.
    pub fn for_subject(subject: Subject) -> Self {
        Self {
            subject,
            key_algorithm: KeyAlgorithm::default(),
            validity: None,
            path_len: None,
        }
    }

    /// Sets the key algorithm.
    pub fn key_algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.key_algorithm = alg;
        self
    }

    /// Valid for `ttl` from now.
    pub fn valid_for(mut self, ttl: Duration) -> Self {
        self.validity = Some(Validity::for_ttl(ttl));
        self
    }

    /// Valid exactly from `not_before` to `not_after` (e.g. an expired CA, for tests).
    pub fn valid_between(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.validity = Some(Validity::between(not_before, not_after));
        self
    }

    /// Sets the whole validity.
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = Some(validity);
        self
    }

    /// Sets the path length constraint.
    pub fn path_len(mut self, path_len: u8) -> Self {
        self.path_len = Some(path_len);
        self
    }
}

/// A certificate authority: a CA certificate, its key, and the intermediates above it.
///
/// Every certificate it signs gets a random 153–159-bit serial, an authority key identifier,
/// a subject key identifier, and a `not_before` backdated by 5 minutes (configurable).
///
/// **Lifetimes are clamped, not refused:** a requested `not_after` beyond the CA's own is
/// cut to the CA's `not_after`, logged with `tracing::warn!`, and reported by
/// [`IssuedCertificate::was_clamped`]. A CA outside its own validity period refuses to issue
/// ([`Error::CaNotValid`]).
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
///
/// let root = CertificateAuthority::new_root(&CaParams::new("Example Root"))?;
/// let intermediate = root.new_intermediate(&CaParams::new("Example Intermediate"))?;
/// let server = intermediate.issue(&LeafParams::server(["api.example.internal"]))?;
/// let client = intermediate.issue(&LeafParams::client(["app-internal-api"]))?;
///
/// // Persist and reload the intermediate.
/// let again = CertificateAuthority::from_pem(&intermediate.chain_pem(), &intermediate.key_pem())?;
/// assert_eq!(again.cert_der(), intermediate.cert_der());
/// # let _ = (server, client);
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug)]
pub struct CertificateAuthority {
    issuer: Issuer<'static, rcgen::KeyPair>,
    key_algorithm: KeyAlgorithm,
    cert: CertificateDer<'static>,
    /// Issuers above this CA, nearest first, excluding a self-signed root.
    parents: Vec<CertificateDer<'static>>,
    /// The self-signed root at the top, when known.
    root: Option<CertificateDer<'static>>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    path_len: Option<u8>,
    self_signed: bool,
}

impl CertificateAuthority {
    /// Creates a self-signed root CA with a fresh key.
    pub fn new_root(params: &CaParams) -> Result<Self> {
        let key = KeyPair::generate(params.key_algorithm)?;
        let validity = params
            .validity
            .unwrap_or_else(|| Validity::for_ttl(DEFAULT_ROOT_TTL));
        let (not_before, not_after) = validity.resolve(OffsetDateTime::now_utc())?;
        let mut cp = ca_params(params, params.path_len.unwrap_or(1))?;
        cp.not_before = not_before;
        cp.not_after = not_after;
        let cert = cp.self_signed(&key.inner)?;
        tracing::debug!(subject = %params.subject, "created root CA");
        let der = cert.der().clone();
        let mut ca = Self::from_parts(der.clone(), key, Vec::new())?;
        ca.root = Some(der);
        Ok(ca)
    }

    /// Creates an intermediate CA signed by this CA, with a fresh key.
    ///
    /// Fails with [`Error::PathLenExceeded`] if this CA's pathlen is 0.
    pub fn new_intermediate(&self, params: &CaParams) -> Result<Self> {
        let max_child = match self.path_len {
            Some(0) => {
                return Err(Error::PathLenExceeded {
                    subject: self.subject.clone(),
                    presented: "0".into(),
                });
            }
            Some(n) => n - 1,
            None => u8::MAX,
        };
        let path_len = params.path_len.unwrap_or(0).min(max_child);
        let key = KeyPair::generate(params.key_algorithm)?;
        let validity = params
            .validity
            .unwrap_or_else(|| Validity::for_ttl(DEFAULT_INTERMEDIATE_TTL));
        let cp = ca_params(params, path_len)?;
        let issued = self.sign_params(cp, &key.inner, &validity)?;
        let mut parents = Vec::new();
        if !self.self_signed {
            parents.push(self.cert.clone());
            parents.extend(self.parents.iter().cloned());
        }
        let mut ca = Self::from_parts(issued.cert, key, parents)?;
        ca.root = self.root.clone();
        tracing::debug!(subject = %params.subject, issuer = %self.subject, "created intermediate CA");
        Ok(ca)
    }

    /// Loads a CA from PEM: `cert_pem` holds the CA certificate first, optionally followed by
    /// the intermediates above it (a trailing self-signed root is kept as the root);
    /// `key_pem` its private key.
    ///
    /// Refuses a key that does not match ([`Error::KeyMismatch`]) and a certificate that is
    /// not a CA allowed to sign certificates ([`Error::NotACa`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let certs = parse_certificates_pem(cert_pem)?;
        let key = KeyPair::from_pem(key_pem)?;
        let mut iter = certs.into_iter();
        let cert = iter.next().ok_or(Error::InvalidPem {
            expected: "CERTIFICATE",
            presented: "no certificate".into(),
        })?;
        let mut parents: Vec<_> = iter.collect();
        let mut root = None;
        if let Some(last) = parents.last()
            && is_self_signed(last)?
        {
            root = parents.pop();
        }
        let mut ca = Self::from_parts(cert, key, parents)?;
        if ca.self_signed {
            ca.root = Some(ca.cert.clone());
        } else if root.is_some() {
            ca.root = root;
        }
        Ok(ca)
    }

    fn from_parts(
        cert: CertificateDer<'static>,
        key: KeyPair,
        parents: Vec<CertificateDer<'static>>,
    ) -> Result<Self> {
        let x509 = parse_x509(&cert)?;
        let subject = x509.subject().to_string();
        let presented_key = x509.public_key().subject_public_key.data.as_ref();
        if presented_key != key.inner.der_bytes() {
            return Err(Error::KeyMismatch {
                expected: short_fingerprint(presented_key),
                presented: short_fingerprint(key.inner.der_bytes()),
            });
        }
        let bc = x509
            .basic_constraints()
            .map_err(|e| Error::InvalidDer {
                what: "certificate",
                reason: e.to_string(),
            })?
            .map(|ext| ext.value.clone());
        let path_len = match bc {
            Some(bc) if bc.ca => bc
                .path_len_constraint
                .map(|n| u8::try_from(n).unwrap_or(u8::MAX)),
            Some(_) => {
                return Err(Error::NotACa {
                    subject,
                    expected: "basicConstraints CA:TRUE",
                    presented: "CA:FALSE".into(),
                });
            }
            None => {
                return Err(Error::NotACa {
                    subject,
                    expected: "basicConstraints CA:TRUE",
                    presented: "no basicConstraints extension".into(),
                });
            }
        };
        if let Ok(Some(ku)) = x509.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(Error::NotACa {
                subject,
                expected: "keyUsage keyCertSign",
                presented: format!("keyUsage {}", ku.value),
            });
        }
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        let self_signed = x509.subject().as_raw() == x509.issuer().as_raw();
        let key_algorithm = key.algorithm();
        let issuer = Issuer::from_ca_cert_der(&cert, key.inner)?;
        Ok(Self {
            issuer,
            key_algorithm,
            cert,
            parents,
            root: None,
            subject,
            not_before,
            not_after,
            path_len,
            self_signed,
        })
    }

    /// Issues a leaf certificate with a freshly generated key.
    ///
    /// Errors: [`Error::CaNotValid`] if this CA is expired, [`Error::InvalidSan`] /
    /// [`Error::InvalidSpiffeId`] if the SANs break the profile's rules,
    /// [`Error::InvalidValidity`] for an empty period.
    pub fn issue(&self, params: &LeafParams) -> Result<Credential> {
        let sans = params.checked_sans()?;
        let key = KeyPair::generate(params.key_algorithm)?;
        let mut subject = params.subject.clone();
        if subject.cn().is_none()
            && let Some(crate::SubjectAltName::Dns(name)) = sans
                .iter()
                .find(|s| matches!(s, crate::SubjectAltName::Dns(_)))
        {
            subject = Subject::common_name(name.clone());
            for (attr, value) in params.subject.attributes() {
                subject.push(*attr, value.clone());
            }
        }
        let cp = leaf_params(
            &subject,
            &sans,
            params.profile.key_usages(params.key_algorithm),
            params.profile.extended_key_usages(),
        )?;
        let certificate = self.sign_params(cp, &key.inner, &params.validity)?;
        Ok(Credential { certificate, key })
    }

    /// Signs prepared rcgen parameters for `public_key`: the careful part every certificate
    /// goes through (validity check and clamp, random serial, AKI).
    pub(crate) fn sign_params(
        &self,
        mut cp: rcgen::CertificateParams,
        public_key: &impl PublicKeyData,
        validity: &Validity,
    ) -> Result<IssuedCertificate> {
        let now = OffsetDateTime::now_utc();
        if now > self.not_after || now < self.not_before {
            return Err(Error::CaNotValid {
                subject: self.subject.clone(),
                not_before: self.not_before,
                not_after: self.not_after,
                now,
            });
        }
        let (not_before, mut not_after) = validity.resolve(now)?;
        let mut clamped = false;
        if not_after > self.not_after {
            tracing::warn!(
                requested = %not_after,
                issuer_not_after = %self.not_after,
                "requested not_after is beyond the issuer's; clamped to the issuer's"
            );
            not_after = self.not_after;
            clamped = true;
        }
        if not_before >= not_after {
            return Err(Error::InvalidValidity {
                not_before,
                not_after,
            });
        }
        let serial = crate::serial::random_serial()?;
        cp.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        cp.not_before = not_before;
        cp.not_after = not_after;
        cp.use_authority_key_identifier_extension = true;
        let cert = cp.signed_by(public_key, &self.issuer)?;
        let mut intermediates = Vec::new();
        if !self.self_signed {
            intermediates.push(self.cert.clone());
            intermediates.extend(self.parents.iter().cloned());
        }
        Ok(IssuedCertificate {
            cert: cert.der().clone(),
            intermediates,
            serial: Serial::from(&serial[..]),
            not_before,
            not_after,
            clamped,
        })
    }

    /// DER of the CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// PEM of the CA certificate alone.
    pub fn cert_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert)
    }

    /// PEM of the CA certificate followed by the intermediates above it (not the root):
    /// what [`from_pem`](Self::from_pem) reads back and `openssl verify -untrusted` takes.
    pub fn chain_pem(&self) -> String {
        std::iter::once(&self.cert)
            .chain(self.parents.iter())
            .map(|c| der_to_pem("CERTIFICATE", c))
            .collect()
    }

    /// PEM of the self-signed root at the top of this CA's chain, when known: the trust bundle.
    pub fn root_pem(&self) -> Option<String> {
        self.root.as_ref().map(|r| der_to_pem("CERTIFICATE", r))
    }

    /// DER of the root, when known.
    pub fn root_der(&self) -> Option<&CertificateDer<'static>> {
        self.root.as_ref()
    }

    /// PKCS#8 PEM of the CA's private key.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA key's algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// The subject DN as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Start of the CA's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the CA's validity: no certificate it issues outlives this.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA's pathlen constraint (`None`: unconstrained).
    pub fn path_len(&self) -> Option<u8> {
        self.path_len
    }

    /// Whether this CA is a self-signed root.
    pub fn is_root(&self) -> bool {
        self.self_signed
    }
}

fn ca_params(params: &CaParams, path_len: u8) -> Result<rcgen::CertificateParams> {
    let mut cp = rcgen::CertificateParams::default();
    cp.distinguished_name = params.subject.to_rcgen();
    cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    cp.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    cp.serial_number = Some(crate::serial::rcgen_serial()?);
    Ok(cp)
}

pub(crate) fn leaf_params(
    subject: &Subject,
    sans: &[crate::SubjectAltName],
    key_usages: Vec<KeyUsagePurpose>,
    extended_key_usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> Result<rcgen::CertificateParams> {
    let mut cp = rcgen::CertificateParams::default();
    cp.distinguished_name = subject.to_rcgen();
    cp.subject_alt_names = sans
        .iter()
        .map(crate::san::to_rcgen)
        .collect::<Result<_>>()?;
    cp.is_ca = IsCa::ExplicitNoCa;
    cp.key_usages = key_usages;
    cp.extended_key_usages = extended_key_usages;
    Ok(cp)
}

fn is_self_signed(cert: &CertificateDer<'_>) -> Result<bool> {
    let x509 = parse_x509(cert)?;
    Ok(x509.subject().as_raw() == x509.issuer().as_raw())
}

fn short_fingerprint(public_key: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    format!("sha256:{}", crate::inspect::hex(&digest.as_ref()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_yet_valid_ca_refuses() {
        let now = OffsetDateTime::now_utc();
        let future = CertificateAuthority::new_root(
            &CaParams::new("Future")
                .valid_between(now + time::Duration::days(1), now + time::Duration::days(2)),
        )
        .unwrap();
        assert!(matches!(
            future.issue(&LeafParams::client(["c"])),
            Err(Error::CaNotValid { .. })
        ));
    }

    #[test]
    fn intermediate_pathlen_is_capped_below_parent() {
        let root = CertificateAuthority::new_root(&CaParams::new("Root").path_len(2)).unwrap();
        let int = root
            .new_intermediate(&CaParams::new("Int").path_len(9))
            .unwrap();
        assert_eq!(int.path_len(), Some(1));
        let int2 = int.new_intermediate(&CaParams::new("Int2")).unwrap();
        assert_eq!(int2.path_len(), Some(0));
        // leaf chain: leaf, int2, int (root excluded)
        let leaf = int2.issue(&LeafParams::peer(["p"])).unwrap();
        assert_eq!(leaf.cert_chain().len(), 3);
        assert_eq!(int2.root_der(), Some(root.cert_der()));
    }

    #[test]
    fn explicit_validity_is_kept_exactly() {
        let root = CertificateAuthority::new_root(&CaParams::new("Root")).unwrap();
        let nb =
            OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::hours(3);
        let na = nb + time::Duration::hours(1);
        let leaf = root
            .issue(&LeafParams::server(["a"]).valid_between(nb, na))
            .unwrap();
        assert_eq!(leaf.certificate().not_before(), nb);
        assert_eq!(leaf.certificate().not_after(), na);
        let zero = root
            .issue(
                &LeafParams::server(["a"])
                    .backdated_by(Duration::ZERO)
                    .valid_for(Duration::from_secs(60)),
            )
            .unwrap();
        assert_eq!(
            zero.certificate().not_after() - zero.certificate().not_before(),
            time::Duration::seconds(60)
        );
    }
}
