//! Certificate signing requests: creating them, and signing them under a policy.

use mtls_identity::TrustDomain;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::ca::{CertificateAuthority, leaf_params};
use crate::error::{Error, Result};
use crate::issued::IssuedCertificate;
use crate::key::{KeyAlgorithm, KeyPair};
use crate::leaf::check_profile_sans;
use crate::pem::der_to_pem;
use crate::profile::Profile;
use crate::san::SubjectAltName;
use crate::subject::Subject;
use crate::validity::Validity;

/// What to ask for in a CSR.
///
/// ```
/// use mtls_certs::{CertificateSigningRequest, CsrParams, Subject};
///
/// let (csr, key) = CertificateSigningRequest::generate(
///     &CsrParams::new(Subject::common_name("api")).add_names(["api.internal", "10.0.0.7"]),
/// )?;
/// assert!(csr.pem().starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
/// assert_eq!(csr.sans().len(), 2);
/// # let _ = key;
/// # Ok::<(), mtls_certs::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CsrParams {
    /// Requested subject.
    pub subject: Subject,
    /// Requested SANs.
    pub sans: Vec<SubjectAltName>,
    /// Key algorithm for [`CertificateSigningRequest::generate`].
    pub key_algorithm: KeyAlgorithm,
    /// Ask for `CA:TRUE` (a policy strips or refuses this).
    pub request_ca: bool,
}

impl CsrParams {
    /// A request for this subject, no SANs, P-256.
    pub fn new(subject: Subject) -> Self {
        Self {
            subject,
            sans: Vec::new(),
            key_algorithm: KeyAlgorithm::default(),
            request_ca: false,
        }
    }

    /// Adds names, classified as cfssl does (as [`LeafParams::add_names`](crate::LeafParams::add_names)).
    pub fn add_names<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names
            .into_iter()
            .filter_map(|n| SubjectAltName::classify(n.as_ref()))
            .fold(self, Self::add_san)
    }

    /// Adds a typed SAN.
    pub fn add_san(mut self, san: SubjectAltName) -> Self {
        self.sans.push(san);
        self
    }

    /// Sets the key algorithm.
    pub fn key_algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.key_algorithm = alg;
        self
    }

    /// Asks for `CA:TRUE`.
    pub fn requesting_ca(mut self) -> Self {
        self.request_ca = true;
        self
    }
}

/// A parsed PKCS#10 CSR whose self-signature has been checked.
#[derive(Debug, Clone)]
pub struct CertificateSigningRequest {
    der: Vec<u8>,
    subject: Subject,
    sans: Vec<SubjectAltName>,
    requests_ca: bool,
    spki: Vec<u8>,
    key_algorithm: KeyAlgorithm,
}

impl CertificateSigningRequest {
    /// Generates a key and a CSR signed with it.
    pub fn generate(params: &CsrParams) -> Result<(Self, KeyPair)> {
        let key = KeyPair::generate(params.key_algorithm)?;
        let csr = Self::for_key(params, &key)?;
        Ok((csr, key))
    }

    /// A CSR for an existing key.
    pub fn for_key(params: &CsrParams, key: &KeyPair) -> Result<Self> {
        let mut cp = rcgen::CertificateParams::default();
        cp.distinguished_name = params.subject.to_rcgen();
        cp.subject_alt_names = params
            .sans
            .iter()
            .map(crate::san::to_rcgen)
            .collect::<Result<_>>()?;
        if params.request_ca {
            cp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let csr = cp.serialize_request(&key.inner)?;
        Self::from_der(csr.der())
    }

    /// Parses a PEM CSR and checks its signature.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            Error::InvalidPem {
                expected: "CERTIFICATE REQUEST",
                presented: mtls_identity::pem_error_words(&e),
            }
        })?;
        Self::from_der(&der)
    }

    /// Parses a DER CSR and checks its signature ([`Error::CsrBadSignature`] if it fails).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (rest, req) =
            X509CertificationRequest::from_der(der).map_err(|e| Error::InvalidDer {
                what: "certificate signing request",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::InvalidDer {
                what: "certificate signing request",
                reason: "trailing bytes".into(),
            });
        }
        req.verify_signature().map_err(|e| Error::CsrBadSignature {
            reason: e.to_string(),
        })?;
        let info = &req.certification_request_info;
        let subject = Subject::from_x509(&info.subject);
        let mut sans = Vec::new();
        let mut requests_ca = false;
        if let Some(exts) = req.requested_extensions() {
            for ext in exts {
                match ext {
                    ParsedExtension::SubjectAlternativeName(san) => {
                        sans.extend(
                            san.general_names
                                .iter()
                                .filter_map(SubjectAltName::from_general_name),
                        );
                    }
                    ParsedExtension::BasicConstraints(bc) => requests_ca |= bc.ca,
                    _ => {}
                }
            }
        }
        let spki = info.subject_pki.raw.to_vec();
        let key_algorithm = key_algorithm_of_spki(&spki)?;
        Ok(Self {
            der: der.to_vec(),
            subject,
            sans,
            requests_ca,
            spki,
            key_algorithm,
        })
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text (`CERTIFICATE REQUEST`).
    pub fn pem(&self) -> String {
        der_to_pem("CERTIFICATE REQUEST", &self.der)
    }

    /// Requested subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Requested SANs.
    pub fn sans(&self) -> &[SubjectAltName] {
        &self.sans
    }

    /// Whether the CSR asks for `CA:TRUE`.
    pub fn requests_ca(&self) -> bool {
        self.requests_ca
    }

    /// Algorithm of the requester's key.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    pub(crate) fn public_key(&self) -> Result<rcgen::SubjectPublicKeyInfo> {
        Ok(rcgen::SubjectPublicKeyInfo::from_der(&self.spki)?)
    }
}

const CSR_KEY_ALGS: &str = "p256, p384, ed25519 or RSA >= 2048";

fn key_algorithm_of_spki(spki: &[u8]) -> Result<KeyAlgorithm> {
    let key = rcgen::SubjectPublicKeyInfo::from_der(spki).map_err(|e| {
        Error::UnsupportedKeyAlgorithm {
            expected: CSR_KEY_ALGS,
            presented: e.to_string(),
        }
    })?;
    crate::key::algorithm_of(&key, CSR_KEY_ALGS)
}

/// What to do with a CSR that asks for `CA:TRUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CaRequest {
    /// Refuse the CSR with [`Error::CsrRefused`] (default).
    #[default]
    Refuse,
    /// Issue a leaf anyway (`CA:FALSE`), logging a warning.
    Strip,
}

/// Which SANs a CSR may carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SanPolicy {
    /// Whatever the profile allows.
    #[default]
    Any,
    /// Only SPIFFE IDs (URI SANs) in this trust domain; nothing else.
    SpiffeTrustDomain(TrustDomain),
}

/// The policy a CA applies to a CSR. The requester chooses the subject, the SANs (within
/// [`SanPolicy`]) and the key; the policy decides everything else: `CA:FALSE`, validity,
/// serial (random), key usages and EKUs (from the [`Profile`]) and the AKI.
///
/// ```
/// use mtls_certs::{CaParams, CertificateAuthority, CertificateSigningRequest, CsrParams,
///     CsrPolicy, Error, Subject, SubjectAltName};
///
/// let ca = CertificateAuthority::new_root(&CaParams::new("Root"))?;
/// let policy = CsrPolicy::svid_in("example.org".parse()?);
///
/// let (ok, _key) = CertificateSigningRequest::generate(&CsrParams::new(Subject::empty())
///     .add_san(SubjectAltName::Uri("spiffe://example.org/api".into())))?;
/// ca.sign_csr(&ok, &policy)?;
///
/// let (foreign, _key) = CertificateSigningRequest::generate(&CsrParams::new(Subject::empty())
///     .add_san(SubjectAltName::Uri("spiffe://evil.org/api".into())))?;
/// assert!(matches!(ca.sign_csr(&foreign, &policy), Err(Error::CsrRefused { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CsrPolicy {
    /// The profile deciding KU/EKU and SAN rules.
    pub profile: Profile,
    /// Validity of the issued certificate (defaults: 24 h, backdated 5 min).
    pub validity: Validity,
    /// What to do with a `CA:TRUE` request.
    pub ca_request: CaRequest,
    /// Which SANs are allowed.
    pub sans: SanPolicy,
}

impl CsrPolicy {
    /// A policy issuing `profile` certificates with default validity, refusing CA requests.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            validity: Validity::default(),
            ca_request: CaRequest::default(),
            sans: SanPolicy::Any,
        }
    }

    /// SVIDs only, for SPIFFE IDs in `trust_domain`.
    pub fn svid_in(trust_domain: TrustDomain) -> Self {
        Self::new(Profile::Svid).san_policy(SanPolicy::SpiffeTrustDomain(trust_domain))
    }

    /// Sets the SAN policy.
    pub fn san_policy(mut self, sans: SanPolicy) -> Self {
        self.sans = sans;
        self
    }

    /// Sets the validity.
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// Valid for `ttl` from now.
    pub fn valid_for(mut self, ttl: std::time::Duration) -> Self {
        self.validity.ttl = ttl;
        self.validity.not_after = None;
        self
    }

    /// Strips `CA:TRUE` requests instead of refusing them.
    pub fn stripping_ca_requests(mut self) -> Self {
        self.ca_request = CaRequest::Strip;
        self
    }

    fn check(&self, csr: &CertificateSigningRequest) -> Result<()> {
        if csr.requests_ca {
            match self.ca_request {
                CaRequest::Refuse => {
                    return Err(Error::CsrRefused {
                        expected: "a leaf request (CA:FALSE)".into(),
                        presented: "basicConstraints CA:TRUE".into(),
                    });
                }
                CaRequest::Strip => {
                    tracing::warn!(subject = %csr.subject, "CSR asked for CA:TRUE; issuing CA:FALSE");
                }
            }
        }
        if let SanPolicy::SpiffeTrustDomain(td) = &self.sans {
            for san in &csr.sans {
                let allowed = match san {
                    SubjectAltName::Uri(u) => crate::spiffe_id::parse_spiffe_id(u)
                        .map(|id| id.is_member_of(td))
                        .unwrap_or(false),
                    _ => false,
                };
                if !allowed {
                    return Err(Error::CsrRefused {
                        expected: format!("only SPIFFE IDs in trust domain {td}"),
                        presented: san.to_string(),
                    });
                }
            }
        }
        check_profile_sans(self.profile, &csr.sans)
    }
}

impl CertificateAuthority {
    /// Signs a CSR under `policy`.
    ///
    /// The CSR's signature was checked when it was parsed. Errors: [`Error::CsrRefused`]
    /// (CA request, SAN outside the policy), [`Error::InvalidSan`] (profile rules),
    /// [`Error::CaNotValid`] (expired CA).
    pub fn sign_csr(
        &self,
        csr: &CertificateSigningRequest,
        policy: &CsrPolicy,
    ) -> Result<IssuedCertificate> {
        policy.check(csr)?;
        let cp = leaf_params(
            &csr.subject,
            &csr.sans,
            policy.profile.key_usages(csr.key_algorithm),
            policy.profile.extended_key_usages(),
        )?;
        self.sign_params(cp, &csr.public_key()?, &policy.validity)
    }

    /// Signs a CSR with explicit usages (the cfssl signing-config path); the CA bit is
    /// always false and SANs are taken from the CSR as they are.
    #[cfg(feature = "cfssl")]
    pub(crate) fn sign_csr_with_usages(
        &self,
        csr: &CertificateSigningRequest,
        key_usages: Vec<rcgen::KeyUsagePurpose>,
        extended_key_usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
        validity: &Validity,
    ) -> Result<IssuedCertificate> {
        let cp = leaf_params(&csr.subject, &csr.sans, key_usages, extended_key_usages)?;
        self.sign_params(cp, &csr.public_key()?, validity)
    }
}
