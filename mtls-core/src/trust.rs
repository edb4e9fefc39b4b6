//! Trust material: a plain CA bundle or a SPIFFE bundle set keyed by trust domain, plus
//! optional CRLs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use mtls_identity::TrustDomain;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor};
use webpki::{CertRevocationList, OwnedCertRevocationList};

use crate::error::{Error, Result};
use crate::identity::{certs_from_pem, read};

/// An immutable snapshot of what we trust.
///
/// Two shapes:
/// - **CA bundle** ([`TrustBundle::from_pem`]): any peer whose chain leads to one of the
///   roots. Policy then comes from SAN matchers and/or a SPIFFE authorizer.
/// - **SPIFFE bundle set** ([`TrustBundle::spiffe`] + [`TrustBundle::add_domain_pem`]):
///   the peer must be an X509-SVID and is verified against the roots of **its own** trust
///   domain only. A CA trusted for `a.org` cannot vouch for `spiffe://b.org/...`.
///
/// ```
/// # let ca_a = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
/// # let ca_b = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("B"))?;
/// use mtls_core::TrustBundle;
/// let plain = TrustBundle::from_pem(ca_a.cert_pem())?;
/// assert!(!plain.is_spiffe());
///
/// let set = TrustBundle::spiffe()
///     .add_domain_pem("a.org".parse()?, ca_a.cert_pem())?
///     .add_domain_pem("b.org".parse()?, ca_b.cert_pem())?;
/// assert_eq!(set.trust_domains().map(|td| td.to_string()).collect::<Vec<_>>(), ["a.org", "b.org"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TrustBundle {
    roots: Roots,
    crls: Vec<Arc<CertRevocationList<'static>>>,
}

#[derive(Clone)]
enum Roots {
    Ca(Anchors),
    Spiffe(BTreeMap<TrustDomain, Anchors>),
}

/// Root certificates and the trust anchors derived from them.
#[derive(Clone, Default)]
pub(crate) struct Anchors {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
}

impl Anchors {
    fn extend(&mut self, certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<()> {
        for cert in certs {
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| Error::InvalidTrustAnchor {
                    reason: crate::verify::webpki_words(&e),
                })?
                .to_owned();
            self.anchors.push(anchor);
            self.certs.push(cert);
        }
        Ok(())
    }
}

/// Which roots a peer is checked against.
pub(crate) enum RootsFor<'a> {
    Found(&'a Anchors, String),
    UnknownDomain(String),
}

impl TrustBundle {
    /// A plain CA bundle from PEM (one or more `CERTIFICATE` blocks).
    ///
    /// ```
    /// let err = mtls_core::TrustBundle::from_pem("not pem").unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::Pem { what: "CA bundle", .. }));
    /// ```
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        Self::from_der(certs_from_pem(pem.as_ref(), "CA bundle")?)
    }

    /// A plain CA bundle from a PEM file.
    ///
    /// ```
    /// assert!(mtls_core::TrustBundle::from_pem_file("/nonexistent/ca.pem").is_err());
    /// ```
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_pem(read(path.as_ref())?)
    }

    /// A plain CA bundle from DER certificates.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// let bundle = mtls_core::TrustBundle::from_der([ca.cert_der().clone()])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_der(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self> {
        let mut anchors = Anchors::default();
        anchors.extend(certs)?;
        if anchors.anchors.is_empty() {
            return Err(Error::InvalidTrustAnchor {
                reason: "the CA bundle is empty".to_owned(),
            });
        }
        Ok(Self {
            roots: Roots::Ca(anchors),
            crls: Vec::new(),
        })
    }

    /// An empty SPIFFE bundle set; add trust domains with [`TrustBundle::add_domain_pem`]
    /// or [`TrustBundle::add_domain_der`].
    ///
    /// ```
    /// assert!(mtls_core::TrustBundle::spiffe().is_spiffe());
    /// ```
    pub fn spiffe() -> Self {
        Self {
            roots: Roots::Spiffe(BTreeMap::new()),
            crls: Vec::new(),
        }
    }

    /// Adds (or extends) the X.509 bundle of `trust_domain` from PEM. Fails on a plain CA
    /// bundle: the two shapes do not mix.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// let err = mtls_core::TrustBundle::from_pem(ca.cert_pem())?
    ///     .add_domain_pem("a.org".parse()?, ca.cert_pem())
    ///     .unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::InvalidConfig { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_domain_pem(self, trust_domain: TrustDomain, pem: impl AsRef<[u8]>) -> Result<Self> {
        let certs = certs_from_pem(pem.as_ref(), "SPIFFE bundle")?;
        self.add_domain_der(trust_domain, certs)
    }

    /// Adds (or extends) the X.509 bundle of `trust_domain` from DER certificates (what
    /// the SPIFFE Workload API delivers).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// let set = mtls_core::TrustBundle::spiffe().add_domain_der("a.org".parse()?, [ca.cert_der().clone()])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_domain_der(
        mut self,
        trust_domain: TrustDomain,
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self> {
        let Roots::Spiffe(map) = &mut self.roots else {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "cannot add trust domain {trust_domain} to a plain CA bundle; start from TrustBundle::spiffe()"
                ),
            });
        };
        map.entry(trust_domain).or_default().extend(certs)?;
        Ok(self)
    }

    /// Adds CRLs from PEM (`X509 CRL` blocks). Peers whose certificate (or intermediate) is
    /// listed by a CRL of its issuer are rejected; certificates whose issuer has no CRL
    /// here are not affected.
    ///
    /// ```
    /// let bundle = mtls_core::TrustBundle::spiffe().add_crls_pem("");
    /// assert!(matches!(bundle, Err(mtls_core::Error::InvalidCrl { .. })));
    /// ```
    pub fn add_crls_pem(self, pem: impl AsRef<[u8]>) -> Result<Self> {
        let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_ref())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidCrl {
                reason: mtls_identity::pem_error_words(&e),
            })?;
        if crls.is_empty() {
            return Err(Error::InvalidCrl {
                reason: "no X509 CRL block found".to_owned(),
            });
        }
        crls.iter().try_fold(self, |b, crl| b.add_crl_der(crl))
    }

    /// Adds one DER CRL.
    ///
    /// ```
    /// let err = mtls_core::TrustBundle::spiffe().add_crl_der(&[0x30, 0x00]).unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::InvalidCrl { .. }));
    /// ```
    pub fn add_crl_der(mut self, der: &[u8]) -> Result<Self> {
        let crl = OwnedCertRevocationList::from_der(der).map_err(|e| Error::InvalidCrl {
            reason: crate::verify::webpki_words(&e),
        })?;
        self.crls.push(Arc::new(crl.into()));
        Ok(self)
    }

    /// Whether this is a SPIFFE bundle set (peers must be X509-SVIDs).
    pub fn is_spiffe(&self) -> bool {
        matches!(self.roots, Roots::Spiffe(_))
    }

    /// The trust domains of a SPIFFE bundle set (empty for a CA bundle).
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        let map = match &self.roots {
            Roots::Spiffe(map) => Some(map),
            Roots::Ca(_) => None,
        };
        map.into_iter().flat_map(|m| m.keys())
    }

    /// The root certificates: all of a CA bundle, or those of one trust domain.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("A"))?;
    /// let set = mtls_core::TrustBundle::spiffe().add_domain_pem("a.org".parse()?, ca.cert_pem())?;
    /// assert_eq!(set.roots(Some(&"a.org".parse()?)).len(), 1);
    /// assert!(set.roots(Some(&"b.org".parse()?)).is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn roots(&self, trust_domain: Option<&TrustDomain>) -> &[CertificateDer<'static>] {
        match (&self.roots, trust_domain) {
            (Roots::Ca(a), _) => &a.certs,
            (Roots::Spiffe(map), Some(td)) => map.get(td).map_or(&[], |a| &a.certs),
            (Roots::Spiffe(_), None) => &[],
        }
    }

    pub(crate) fn roots_for(&self, trust_domain: Option<&TrustDomain>) -> RootsFor<'_> {
        match &self.roots {
            Roots::Ca(a) => RootsFor::Found(a, "the CA bundle".to_owned()),
            Roots::Spiffe(map) => match trust_domain.and_then(|td| map.get(td).map(|a| (td, a))) {
                Some((td, a)) => RootsFor::Found(a, format!("the bundle of trust domain {td}")),
                None => RootsFor::UnknownDomain(
                    map.keys()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            },
        }
    }

    pub(crate) fn crls(&self) -> &[Arc<CertRevocationList<'static>>] {
        &self.crls
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TrustBundle");
        match &self.roots {
            Roots::Ca(a) => d.field("ca_roots", &a.certs.len()),
            Roots::Spiffe(map) => d.field(
                "spiffe_domains",
                &map.iter()
                    .map(|(td, a)| (td.to_string(), a.certs.len()))
                    .collect::<Vec<_>>(),
            ),
        };
        d.field("crls", &self.crls.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ca_bundle_is_refused() {
        let err = TrustBundle::from_der([]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn garbage_anchor_is_refused() {
        let err = TrustBundle::from_der([CertificateDer::from(vec![1, 2, 3])]).unwrap_err();
        assert!(matches!(err, Error::InvalidTrustAnchor { .. }), "{err}");
    }
}
