//! The verification pipeline shared by the server's client-cert verifier and the client's
//! server-cert verifier: leaf facts -> X509-SVID rules -> roots of the right trust domain
//! -> webpki chain (+CRLs) -> policy.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage, RevocationOptionsBuilder, UnknownStatusPolicy};

use crate::authorizer::Authorizer;
use crate::cert::{LeafInfo, ca_may_not_sign, rfc3339, sans_text};
use crate::error::{Error, Result};
use crate::san::SanMatcher;
use crate::source::TrustSource;
use crate::trust::{RootsFor, TrustBundle};

/// Who the policy applies to (for log lines and EKU).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    /// We are the server verifying a client certificate.
    Server,
    /// We are the client verifying a server certificate.
    Client,
}

/// Policy beyond "chains to a trusted root": a SPIFFE authorizer and/or SAN matchers.
#[derive(Clone, Default)]
pub(crate) struct Policy {
    pub(crate) authorizer: Option<Arc<dyn Authorizer>>,
    pub(crate) sans: Vec<SanMatcher>,
}

impl Policy {
    pub(crate) fn is_empty(&self) -> bool {
        self.authorizer.is_none() && self.sans.is_empty()
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field(
                "authorizer",
                &self.authorizer.as_ref().map(|a| a.describe()),
            )
            .field(
                "sans",
                &self
                    .sans
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) struct PeerVerifier {
    pub(crate) side: Side,
    pub(crate) trust: Arc<dyn TrustSource>,
    pub(crate) policy: Policy,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
    /// Chains already verified against the current trust bundle.
    chains: VerifiedChains,
}

impl PeerVerifier {
    pub(crate) fn new(
        side: Side,
        trust: Arc<dyn TrustSource>,
        policy: Policy,
        provider: &CryptoProvider,
    ) -> Self {
        Self {
            side,
            trust,
            policy,
            algorithms: provider.signature_verification_algorithms,
            chains: VerifiedChains::default(),
        }
    }

    /// Verifies and logs a rejection at `warn`.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> std::result::Result<(), rustls::Error> {
        self.check(end_entity, intermediates, server_name, now)
            .map_err(|err| {
                let side = match self.side {
                    Side::Server => "client",
                    Side::Client => "server",
                };
                tracing::warn!(peer = side, reason = %err, "rejected peer certificate");
                rustls::Error::from(err)
            })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<()> {
        let trust = self.trust.current();
        let leaf = LeafInfo::parse(end_entity)?;
        if leaf.is_ca {
            return Err(Error::CaCertificateAsLeaf {
                subject: leaf.subject.clone(),
            });
        }
        // X509-SVID rules apply whenever SPIFFE identity matters: a SPIFFE bundle set
        // (roots are chosen by trust domain) or a SPIFFE authorizer.
        let spiffe_id = if trust.is_spiffe() || self.policy.authorizer.is_some() {
            Some(leaf.svid_id()?)
        } else {
            None
        };
        let (anchors, trusted) =
            match trust.roots_for(spiffe_id.as_ref().map(|id| id.trust_domain())) {
                RootsFor::Found(anchors, trusted) => (anchors, trusted),
                RootsFor::UnknownDomain(known) => {
                    let (presented, trust_domain) = spiffe_id
                        .as_ref()
                        .map(|id| (id.to_string(), id.trust_domain().to_string()))
                        .unwrap_or_default();
                    return Err(Error::UnknownTrustDomain {
                        presented,
                        trust_domain,
                        known,
                    });
                }
            };

        let end_entity_cert = || {
            EndEntityCert::try_from(end_entity).map_err(|e| Error::MalformedCertificate {
                reason: format!("{}: {e}", leaf.display_name()),
            })
        };
        if !self.chains.holds(&trust, end_entity, intermediates, now) {
            self.verify_chain(
                &end_entity_cert()?,
                intermediates,
                &leaf,
                &trust,
                anchors,
                trusted,
                now,
            )?;
            self.chains.insert(&trust, end_entity, intermediates, &leaf);
        }

        if let (Some(authorizer), Some(id)) = (&self.policy.authorizer, &spiffe_id)
            && !authorizer.authorize(id)
        {
            return Err(Error::Unauthorized {
                presented: id.to_string(),
                expected: authorizer.describe(),
            });
        }
        if !self.policy.sans.is_empty() && !SanMatcher::matches_any(&self.policy.sans, &leaf.sans) {
            return Err(Error::SanMismatch {
                presented: sans_text(&leaf.sans),
                expected: self
                    .policy
                    .sans
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // A client with no policy falls back to the usual check of the dialed name. With
        // a policy, the policy *is* the server's identity check, so dialing an IP or
        // `localhost` works against URI-only SVIDs.
        if let (Side::Client, true, Some(name)) = (self.side, self.policy.is_empty(), server_name) {
            end_entity_cert()?
                .verify_is_valid_for_subject_name(name)
                .map_err(|_| Error::NameMismatch {
                    presented: sans_text(&leaf.sans),
                    expected: name.to_str().into_owned(),
                })?;
        }
        Ok(())
    }

    /// webpki's path building and signature checks (with CRLs and our CA rules) from
    /// `cert` to one of `anchors`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces `check` already derived, passed on rather than derived again"
    )]
    fn verify_chain(
        &self,
        cert: &EndEntityCert<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &LeafInfo,
        trust: &TrustBundle,
        anchors: &crate::trust::Anchors,
        trusted: String,
        now: UnixTime,
    ) -> Result<()> {
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> =
            trust.crls().iter().map(|c| &**c).collect();
        let revocation = match RevocationOptionsBuilder::new(&crl_refs) {
            // Only certificates whose issuer published a CRL here are checked; the rest
            // are not "unknown" failures (rustls' default would deny them).
            Ok(b) => Some(b.with_status_policy(UnknownStatusPolicy::Allow).build()),
            Err(_) => None, // no CRLs configured
        };
        let usage = match self.side {
            Side::Server => KeyUsage::client_auth(),
            Side::Client => KeyUsage::server_auth(),
        };
        // Every CA of a candidate path must be allowed to sign certificates; a path that
        // fails this makes webpki try the others, and our reason is kept for the message.
        let refused_ca: RefCell<Option<Error>> = RefCell::new(None);
        let check_cas =
            |path: &webpki::VerifiedPath<'_>| -> std::result::Result<(), webpki::Error> {
                let anchor_cert = anchors
                    .anchors
                    .iter()
                    .position(|a| std::ptr::eq(a, path.anchor()))
                    .and_then(|i| anchors.certs.get(i));
                let cas = path
                    .intermediate_certificates()
                    .map(|c| c.der())
                    .chain(anchor_cert.cloned());
                for ca in cas {
                    match ca_may_not_sign(&ca) {
                        Ok(None) => {}
                        Ok(Some((ca, key_usage))) => {
                            *refused_ca.borrow_mut() = Some(Error::CaKeyUsage {
                                subject: leaf.display_name(),
                                ca,
                                key_usage,
                            });
                            return Err(CA_MAY_NOT_SIGN);
                        }
                        Err(e) => {
                            *refused_ca.borrow_mut() = Some(e);
                            return Err(CA_MAY_NOT_SIGN);
                        }
                    }
                }
                Ok(())
            };
        cert.verify_for_usage(
            self.algorithms.all,
            &anchors.anchors,
            intermediates,
            now,
            usage,
            revocation,
            Some(&check_cas),
        )
        .map_err(|e| match refused_ca.take() {
            Some(ours) if e == CA_MAY_NOT_SIGN => ours,
            _ => chain_error(e, leaf, trusted, now),
        })
        .map(|_path| ())
    }

    /// The signature algorithms handshake signatures are checked with.
    pub(crate) fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algorithms
    }
}

/// The handshake-signature methods of a rustls verifier trait (`ServerCertVerifier`,
/// `ClientCertVerifier`: the same three on each), checked with the algorithms of the
/// [`PeerVerifier`] at `self.$verifier`. The module using it imports `CertificateDer`,
/// `DigitallySignedStruct`, `HandshakeSignatureValid` and `SignatureScheme`.
macro_rules! signature_checks {
    ($verifier:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, self.$verifier.algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, self.$verifier.algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$verifier.algorithms().supported_schemes()
        }
    };
}
pub(crate) use signature_checks;

/// Chains this verifier has already verified against one trust bundle — the webpki path,
/// its signatures, the CA rules and the bundle's CRLs — so that a peer presenting the same
/// certificates again (every new connection of the same workload) is not verified again:
/// a chain signature check is about a quarter of a server's CPU per mTLS handshake.
///
/// What is remembered is exact: the presented DER bytes (leaf and intermediates), under the
/// same bundle (a rotated bundle, with other roots or CRLs, forgets every chain), within the
/// validity of every presented certificate. Everything else — the X509-SVID rules, the
/// trust domain's roots, the authorizer and SAN policy, and the handshake signature that
/// proves the peer holds the key — is checked on every handshake. Only verified chains are
/// kept, at most [`VerifiedChains::MAX`] (then all are forgotten), so a peer without a
/// valid chain cannot grow it.
#[derive(Default)]
pub(crate) struct VerifiedChains {
    inner: std::sync::Mutex<Chains>,
}

#[derive(Default)]
struct Chains {
    /// The bundle the chains were verified against.
    bundle: Option<Arc<TrustBundle>>,
    chains: std::collections::HashMap<u64, Verified>,
}

/// One verified chain: its bytes and when every certificate in it is valid.
struct Verified {
    chain: Vec<Vec<u8>>,
    from: u64,
    until: u64,
}

impl VerifiedChains {
    /// Chains kept per verifier.
    pub(crate) const MAX: usize = 1024;

    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        end_entity.as_ref().hash(&mut hasher);
        for der in intermediates {
            der.as_ref().hash(&mut hasher);
        }
        hasher.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chains> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether exactly this chain was verified against `bundle` and is valid at `now`.
    pub(crate) fn holds(
        &self,
        bundle: &Arc<TrustBundle>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let mut chains = self.lock();
        if !chains
            .bundle
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, bundle))
        {
            // The bundle rotated: what was verified against the old one is forgotten.
            chains.bundle = None;
            chains.chains.clear();
            return false;
        }
        let Some(verified) = chains.chains.get(&Self::key(end_entity, intermediates)) else {
            return false;
        };
        let now = now.as_secs();
        verified.from <= now
            && now <= verified.until
            && verified.chain.len() == 1 + intermediates.len()
            && std::iter::once(end_entity)
                .chain(intermediates)
                .zip(&verified.chain)
                .all(|(presented, kept)| presented.as_ref() == kept.as_slice())
    }

    /// Remembers a chain just verified against `bundle` (not when an intermediate does not
    /// parse: it is then verified again next time).
    pub(crate) fn insert(
        &self,
        bundle: &Arc<TrustBundle>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        leaf: &LeafInfo,
    ) {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let (mut from, mut until) = (secs(leaf.not_before), secs(leaf.not_after));
        for der in intermediates {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                return;
            };
            let validity = cert.validity();
            from = from.max(u64::try_from(validity.not_before.timestamp()).unwrap_or(u64::MAX));
            until = until.min(u64::try_from(validity.not_after.timestamp()).unwrap_or(0));
        }
        let mut chains = self.lock();
        if !chains
            .bundle
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, bundle))
        {
            chains.bundle = Some(bundle.clone());
            chains.chains.clear();
        }
        if chains.chains.len() >= Self::MAX {
            chains.chains.clear();
        }
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|der| der.as_ref().to_vec())
            .collect();
        chains.chains.insert(
            Self::key(end_entity, intermediates),
            Verified { chain, from, until },
        );
    }
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("side", &self.side)
            .field("trust", &self.trust)
            .field("policy", &self.policy)
            .finish()
    }
}

/// A webpki error in words, from its variant name (`BadDerTime` -> "bad DER time"): its own
/// `Display` is its `Debug`.
pub(crate) fn webpki_words(error: &webpki::Error) -> String {
    mtls_identity::debug_words(error)
}

/// What our path check hands webpki when a CA may not sign (webpki has no such error; the
/// detailed reason travels beside it). Ranked low, so a more specific webpki error on
/// another candidate path wins.
const CA_MAY_NOT_SIGN: webpki::Error = webpki::Error::EndEntityUsedAsCa;

fn chain_error(err: webpki::Error, leaf: &LeafInfo, trusted: String, now: UnixTime) -> Error {
    let subject = leaf.display_name();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
    match err {
        webpki::Error::CertExpired { .. } => Error::Expired {
            subject,
            not_after: rfc3339(leaf.not_after),
            now: rfc3339(now),
        },
        webpki::Error::CertNotValidYet { .. } => Error::NotYetValid {
            subject,
            not_before: rfc3339(leaf.not_before),
            now: rfc3339(now),
        },
        webpki::Error::UnknownIssuer => Error::UnknownIssuer {
            subject,
            issuer: leaf.issuer.clone(),
            trusted,
        },
        webpki::Error::CertRevoked => Error::Revoked {
            subject,
            serial: leaf.serial.to_string(),
        },
        webpki::Error::CaUsedAsEndEntity => Error::CaCertificateAsLeaf { subject },
        other => Error::Chain {
            subject,
            reason: format!("{other:?}"),
        },
    }
}

/// Whether our own chain (leaf first) leads to `trust` as a peer would check it: the roots
/// of the leaf's trust domain for a SPIFFE bundle set, all roots of a CA bundle; for TLS
/// server or client use (whichever the leaf allows); CRLs are not consulted. On failure:
/// (which roots were tried, why it failed).
pub(crate) fn check_own_chain(
    chain: &[CertificateDer<'_>],
    leaf: &LeafInfo,
    trust: &TrustBundle,
    now: UnixTime,
) -> std::result::Result<(), (String, String)> {
    let trust_domain = leaf.spiffe_id().map(|id| id.trust_domain().clone());
    let (anchors, trusted) = match trust.roots_for(trust_domain.as_ref()) {
        RootsFor::Found(anchors, trusted) => (anchors, trusted),
        RootsFor::UnknownDomain(known) => {
            let reason = match &trust_domain {
                Some(td) => format!("trust domain {td} has no bundle"),
                None => "the certificate has no SPIFFE ID to choose a bundle by".to_owned(),
            };
            return Err((format!("the SPIFFE bundles of [{known}]"), reason));
        }
    };
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err((trusted, "the chain is empty".to_owned()));
    };
    let cert = EndEntityCert::try_from(end_entity)
        .map_err(|e| (trusted.clone(), format!("the leaf does not parse: {e}")))?;
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let verify = |usage| {
        cert.verify_for_usage(
            algorithms,
            &anchors.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map(|_| ())
    };
    match verify(KeyUsage::server_auth()) {
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => verify(KeyUsage::client_auth()),
        other => other,
    }
    .map_err(|e| {
        let reason = match e {
            webpki::Error::UnknownIssuer => "no path from it to these roots".to_owned(),
            webpki::Error::InvalidSignatureForPublicKey => {
                "a signature in the chain does not verify".to_owned()
            }
            webpki::Error::CertExpired { .. } => "a CA certificate of the chain expired".to_owned(),
            webpki::Error::CertNotValidYet { .. } => {
                "a CA certificate of the chain is not valid yet".to_owned()
            }
            webpki::Error::RequiredEkuNotFoundContext(_) => {
                "its extended key usage allows neither serverAuth nor clientAuth".to_owned()
            }
            other => format!("webpki error {other:?}"),
        };
        (trusted, reason)
    })
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
    use rustls_pki_types::UnixTime;

    use super::{Error, PeerVerifier, Policy, Side, TrustBundle};

    fn verifier(bundle: &Arc<std::sync::Mutex<Arc<TrustBundle>>>) -> PeerVerifier {
        #[derive(Debug)]
        struct Current(Arc<std::sync::Mutex<Arc<TrustBundle>>>);
        impl crate::source::TrustSource for Current {
            fn current(&self) -> Arc<TrustBundle> {
                self.0.lock().unwrap().clone()
            }
        }
        PeerVerifier::new(
            Side::Server,
            Arc::new(Current(bundle.clone())),
            Policy::default(),
            &rustls::crypto::aws_lc_rs::default_provider(),
        )
    }

    /// A chain verified once is not verified again, but only while it is the same bytes,
    /// under the same bundle, and every certificate in it is valid.
    #[test]
    fn a_verified_chain_is_remembered_only_for_its_bytes_bundle_and_validity() {
        let root = CertificateAuthority::new_root(&CaParams::new("Root")).unwrap();
        let intermediate = root
            .new_intermediate(&CaParams::new("Intermediate"))
            .unwrap();
        let leaf = intermediate
            .issue(&LeafParams::client(["client.test"]).valid_for(Duration::from_secs(3600)))
            .unwrap();
        let chain = leaf.cert_chain();
        let (end_entity, intermediates) = (&chain[0], &chain[1..]);
        assert_eq!(intermediates.len(), 1, "leaf and intermediate presented");
        let bundle = Arc::new(TrustBundle::from_der([root.cert_der().clone()]).unwrap());
        let current = Arc::new(std::sync::Mutex::new(bundle.clone()));
        let v = verifier(&current);
        let now = UnixTime::now();

        assert!(!v.chains.holds(&bundle, end_entity, intermediates, now));
        v.verify(end_entity, intermediates, None, now).unwrap();
        assert!(
            v.chains.holds(&bundle, end_entity, intermediates, now),
            "remembered"
        );
        v.verify(end_entity, intermediates, None, now).unwrap();

        // Other bytes: a chain without its intermediate is not the remembered one, and fails.
        assert!(!v.chains.holds(&bundle, end_entity, &[], now));
        assert!(v.verify(end_entity, &[], None, now).is_err());

        // Past the leaf's validity: refused as expired, though remembered.
        let later = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 7200));
        assert!(!v.chains.holds(&bundle, end_entity, intermediates, later));
        let err = v.check(end_entity, intermediates, None, later).unwrap_err();
        assert!(
            matches!(err, Error::Expired { .. }),
            "expected expired, saw {err}"
        );

        // A rotated bundle without this root: refused, the remembered chain forgotten.
        let other = CertificateAuthority::new_root(&CaParams::new("Other Root")).unwrap();
        let rotated = Arc::new(TrustBundle::from_der([other.cert_der().clone()]).unwrap());
        *current.lock().unwrap() = rotated.clone();
        assert!(!v.chains.holds(&rotated, end_entity, intermediates, now));
        assert!(v.verify(end_entity, intermediates, None, now).is_err());
        assert!(
            !v.chains.holds(&bundle, end_entity, intermediates, now),
            "forgotten"
        );
    }
    #[test]
    fn webpki_errors_read_as_words() {
        assert_eq!(
            super::webpki_words(&webpki::Error::BadDerTime),
            "bad DER time"
        );
        assert_eq!(
            super::webpki_words(&webpki::Error::UnsupportedCrlVersion),
            "unsupported CRL version"
        );
        assert_eq!(
            super::webpki_words(&webpki::Error::CaUsedAsEndEntity),
            "CA used as end entity"
        );
    }
}
