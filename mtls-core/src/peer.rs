//! [`PeerIdentity`]: who is on the other end of a finished handshake.

use std::fmt;
use std::time::SystemTime;

use mtls_identity::SpiffeId;
use rustls_pki_types::CertificateDer;

use crate::cert::{LeafInfo, rfc3339};
use crate::error::{Error, Result};
use crate::negotiated::Negotiated;
use crate::san::SubjectAltName;
use mtls_identity::Serial;

/// The peer of a finished handshake, for the application (request extensions, logs).
///
/// With mtls-core's verifiers every certificate seen here has passed verification; a
/// permissive server also sees peers that presented none ([`is_authenticated`] is false).
///
/// [`is_authenticated`]: PeerIdentity::is_authenticated
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// # let svid = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/web")?))?;
/// use mtls_core::PeerIdentity;
/// // in a server: PeerIdentity::from_connection(tls_stream.get_ref().1)?
/// let peer = PeerIdentity::from_chain(&svid.cert_chain())?;
/// assert!(peer.is_authenticated());
/// assert_eq!(peer.spiffe_id().map(|id| id.to_string()).as_deref(), Some("spiffe://example.org/web"));
/// assert!(PeerIdentity::unauthenticated().to_string().contains("unauthenticated"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    spiffe_id: Option<SpiffeId>,
    sans: Vec<SubjectAltName>,
    subject: Option<String>,
    serial: Option<Serial>,
    not_after: Option<SystemTime>,
    chain: Vec<CertificateDer<'static>>,
    negotiated: Option<Negotiated>,
}

impl PeerIdentity {
    /// From a finished rustls connection (`ServerConnection` and `ClientConnection` deref
    /// to `CommonState`). No peer certificate gives [`PeerIdentity::unauthenticated`].
    ///
    /// ```
    /// # fn handler(conn: &rustls::ServerConnection) -> mtls_core::Result<()> {
    /// let peer = mtls_core::PeerIdentity::from_connection(conn)?;
    /// tracing::info!(%peer, "accepted");
    /// # Ok(()) }
    /// ```
    pub fn from_connection(conn: &rustls::CommonState) -> Result<Self> {
        let mut peer = match conn.peer_certificates() {
            Some(chain) if !chain.is_empty() => Self::from_chain(chain)?,
            _ => Self::unauthenticated(),
        };
        peer.negotiated = Negotiated::from_connection(conn);
        Ok(peer)
    }

    /// From a peer certificate chain (leaf first).
    ///
    /// ```
    /// let err = mtls_core::PeerIdentity::from_chain(&[]).unwrap_err();
    /// assert!(matches!(err, mtls_core::Error::MalformedCertificate { .. }));
    /// ```
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self> {
        let Some(leaf_der) = chain.first() else {
            return Err(Error::MalformedCertificate {
                reason: "empty certificate chain".to_owned(),
            });
        };
        let leaf = LeafInfo::parse(leaf_der)?;
        let spiffe_id = leaf.spiffe_id();
        Ok(Self {
            spiffe_id,
            subject: Some(leaf.subject.clone()),
            serial: Some(leaf.serial.clone()),
            not_after: Some(leaf.not_after),
            sans: leaf.facts.sans,
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            negotiated: None,
        })
    }

    /// A peer that presented no certificate (permissive mode only).
    pub fn unauthenticated() -> Self {
        Self {
            spiffe_id: None,
            sans: Vec::new(),
            subject: None,
            serial: None,
            not_after: None,
            chain: Vec::new(),
            negotiated: None,
        }
    }

    /// Whether the peer presented a (verified) certificate.
    pub fn is_authenticated(&self) -> bool {
        !self.chain.is_empty()
    }

    /// The peer's SPIFFE ID (exactly one valid SPIFFE URI SAN), if any.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe_id.as_ref()
    }

    /// All DNS, URI, email and IP SANs of the leaf.
    pub fn sans(&self) -> &[SubjectAltName] {
        &self.sans
    }

    /// Subject distinguished name of the leaf.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Serial of the leaf (its `Display` is colon-separated hex, `0a:1b:...`).
    pub fn serial(&self) -> Option<&Serial> {
        self.serial.as_ref()
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// What the handshake negotiated (version, suite, key-exchange group, handshake kind,
    /// ALPN) — set by [`from_connection`](Self::from_connection), `None` otherwise.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The chain the peer presented (DER, leaf first).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

impl fmt::Display for PeerIdentity {
    /// One line: `spiffe://td/x serial=.. not_after=..`, the subject when there is no
    /// SPIFFE ID, or `unauthenticated`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_authenticated() {
            return f.write_str("unauthenticated (no client certificate)");
        }
        match (&self.spiffe_id, &self.subject) {
            (Some(id), _) => write!(f, "{id}")?,
            (None, Some(subject)) if !subject.is_empty() => write!(f, "subject={subject:?}")?,
            _ => write!(f, "sans=[{}]", crate::cert::sans_text(&self.sans))?,
        }
        if let Some(serial) = &self.serial {
            write!(f, " serial={serial}")?;
        }
        if let Some(t) = self.not_after {
            write!(f, " not_after={}", rfc3339(t))?;
        }
        Ok(())
    }
}
