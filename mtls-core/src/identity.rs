//! Our own certificate chain and private key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use mtls_identity::SpiffeId;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cert::{LeafInfo, rfc3339};
use crate::error::{Error, Result};
use mtls_identity::Serial;

/// A certificate chain (leaf first) with its private key, checked to belong together.
///
/// ```no_run
/// let identity = mtls_core::Identity::from_pem_files("svid.pem", "svid-key.pem")?;
/// println!("serving as {:?}, serial {}", identity.spiffe_id(), identity.serial());
/// # Ok::<(), mtls_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Identity {
    certified: Arc<CertifiedKey>,
    leaf: Arc<LeafInfo>,
}

impl Identity {
    /// From PEM: `chain_pem` holds the leaf then any intermediates; `key_pem` one private
    /// key (PKCS#8, SEC1 or PKCS#1).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let svid = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/web")?))?;
    /// let identity = mtls_core::Identity::from_pem(svid.chain_pem(), svid.key_pem())?;
    /// assert_eq!(identity.spiffe_id().map(|id| id.to_string()).as_deref(), Some("spiffe://example.org/web"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pem(chain_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Result<Self> {
        let chain = certs_from_pem(chain_pem.as_ref(), "certificate chain")?;
        Self::from_der(chain, key_from_pem(key_pem.as_ref())?)
    }

    /// From two PEM files.
    ///
    /// ```
    /// let err = mtls_core::Identity::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
    ///     .unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::Io { .. }));
    /// ```
    pub fn from_pem_files(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Self> {
        let chain = read(cert_path.as_ref())?;
        let key = read(key_path.as_ref())?;
        Self::from_pem(chain, key).map_err(|e| match e {
            // Name the file the bad PEM came from.
            Error::Pem { what, reason } => {
                let path = if what == "private key" {
                    key_path.as_ref()
                } else {
                    cert_path.as_ref()
                };
                Error::Pem {
                    what,
                    reason: format!("{reason} (in {})", path.display()),
                }
            }
            other => other,
        })
    }

    /// From DER, using the default aws-lc-rs provider to load the key.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// # let other = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let err = mtls_core::Identity::from_der(leaf.cert_chain(), other.private_key_der()).unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::KeyMismatch { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self> {
        Self::from_der_with_provider(chain, key, &rustls::crypto::aws_lc_rs::default_provider())
    }

    /// From DER with a chosen crypto provider (e.g. a FIPS build of aws-lc-rs).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let provider = rustls::crypto::aws_lc_rs::default_provider();
    /// let id = mtls_core::Identity::from_der_with_provider(leaf.cert_chain(), leaf.private_key_der(), &provider)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_der_with_provider(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Self> {
        let Some(leaf_der) = chain.first() else {
            return Err(Error::Pem {
                what: "certificate chain",
                reason: "no certificate found".to_owned(),
            });
        };
        let leaf = LeafInfo::parse(leaf_der)?;
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| Error::InvalidKey {
                    reason: e.to_string(),
                })?;
        let certified = CertifiedKey::new(chain, signing_key);
        // Unlike `CertifiedKey::from_der`, an undecidable comparison is an error too:
        // a server that starts with a foreign key fails every handshake later.
        certified.keys_match().map_err(|e| Error::KeyMismatch {
            subject: leaf.display_name(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            certified: Arc::new(certified),
            leaf: Arc::new(leaf),
        })
    }

    /// The chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The chain and key as rustls uses them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The SPIFFE ID in the leaf, if it carries exactly one valid one.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.leaf.spiffe_id()
    }

    /// Subject distinguished name of the leaf.
    pub fn subject(&self) -> &str {
        &self.leaf.subject
    }

    /// Serial number of the leaf; its `Display` is colon-separated hex (`0a:1b:...`), its
    /// bytes are [`Serial::as_bytes`].
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let identity = mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?;
    /// assert_eq!(identity.serial(), leaf.certificate().serial());
    /// assert_eq!(identity.serial().to_string().len(), 20 * 3 - 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serial(&self) -> &Serial {
        &self.leaf.serial
    }

    /// Issuer distinguished name of the leaf.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Example Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let identity = mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?;
    /// assert!(identity.issuer().contains("Example Root"), "{}", identity.issuer());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn issuer(&self) -> &str {
        &self.leaf.issuer
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.leaf.not_before
    }

    /// End of the leaf's validity.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["localhost"]))?;
    /// let identity = mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?;
    /// assert!(identity.not_before() < std::time::SystemTime::now());
    /// assert!(identity.not_after() > std::time::SystemTime::now());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn not_after(&self) -> SystemTime {
        self.leaf.not_after
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("leaf", &self.leaf.display_name())
            .field("serial", &self.leaf.serial)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Pem {
        what: "private key",
        reason: mtls_identity::pem_error_words(&e),
    })
}

/// Refuses our own leaf (read from `path`) outside its validity window at `now`.
pub(crate) fn check_validity(path: &Path, leaf: &LeafInfo, now: SystemTime) -> Result<()> {
    if now > leaf.not_after {
        return Err(Error::IdentityExpired {
            path: path.to_owned(),
            subject: leaf.display_name(),
            not_after: rfc3339(leaf.not_after),
        });
    }
    if now < leaf.not_before {
        return Err(Error::IdentityNotYetValid {
            path: path.to_owned(),
            subject: leaf.display_name(),
            not_before: rfc3339(leaf.not_before),
        });
    }
    Ok(())
}

pub(crate) fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            reason: mtls_identity::pem_error_words(&e),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pem_is_explained() {
        let err = Identity::from_pem("", "").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Pem {
                    what: "certificate chain",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
    }
}
