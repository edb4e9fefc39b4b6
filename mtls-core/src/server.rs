//! [`ServerConfigBuilder`]: a `rustls::ServerConfig` that requires and verifies client
//! certificates and presents the current identity.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::authorizer::Authorizer;
use crate::error::{Error, Result};
use crate::policy::TlsPolicy;
use crate::san::SanMatcher;
use crate::source::{IdentitySource, TrustSource};
use crate::verify::{PeerVerifier, Policy, Side};
use tracing::debug;

/// Builds a `rustls::ServerConfig` for mTLS.
///
/// Defaults: client certificate **required**, TLS 1.3 only, ALPN `h2`, no session
/// resumption (every connection is verified against the current trust and policy), aws-lc-rs.
/// Without a policy, any client whose chain verifies is accepted (SPIFFE bundle sets still
/// enforce the X509-SVID rules); add [`authorize`](Self::authorize) and/or
/// [`match_sans`](Self::match_sans) to say who.
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// # let svid = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/api")?))?;
/// use std::sync::Arc;
/// use mtls_core::{Authorize, Identity, IdentityHandle, ServerConfigBuilder, TrustBundle};
///
/// let identity = IdentityHandle::new(Identity::from_pem(svid.chain_pem(), svid.key_pem())?);
/// let trust = Arc::new(TrustBundle::spiffe().add_domain_pem("example.org".parse()?, ca.cert_pem())?);
/// let config: rustls::ServerConfig = ServerConfigBuilder::new(identity.clone(), trust)
///     .authorize(Authorize::member_of("example.org".parse()?).and(Authorize::path_prefix("/ns/prod")))
///     .build()?;
/// assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
/// // later: identity.rotate(new_identity) — no restart needed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ServerConfigBuilder {
    identity: Arc<dyn IdentitySource>,
    trust: Arc<dyn TrustSource>,
    policy: Policy,
    permissive: bool,
    tls: TlsPolicy,
    key_log: bool,
    resumption: Resumption,
    alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerConfigBuilder {
    /// Starts a builder presenting `identity` and verifying clients against `trust`.
    pub fn new(identity: impl IdentitySource, trust: impl TrustSource) -> Self {
        Self {
            identity: Arc::new(identity),
            trust: Arc::new(trust),
            policy: Policy::default(),
            permissive: false,
            tls: TlsPolicy::default(),
            key_log: false,
            resumption: Resumption::Off,
            alpn: vec![b"h2".to_vec()],
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// **Permissive mode** (Istio `PERMISSIVE`): clients without a certificate are let in
    /// and show up as [`PeerIdentity::is_authenticated`](crate::PeerIdentity::is_authenticated)
    /// `== false`. A client that *does* present a certificate must still pass verification.
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["api.internal"]))?;
    /// # let identity = std::sync::Arc::new(mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
    /// # let trust = std::sync::Arc::new(mtls_core::TrustBundle::from_pem(ca.cert_pem())?);
    /// let config = mtls_core::ServerConfigBuilder::new(identity, trust).allow_unauthenticated().build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_unauthenticated(mut self) -> Self {
        self.permissive = true;
        self
    }

    /// Allows TLS session resumption (off by default): the same as
    /// [`resumption`](Self::resumption)`(`[`Resumption::Stateful`]` { capacity: 256 })`.
    ///
    /// A resumed session skips certificate verification: the client is admitted on the
    /// strength of its *earlier* handshake, so a trust-bundle rotation, a new CRL or a
    /// tightened policy does not apply to it until the ticket expires. mTLS connections
    /// (gRPC in particular) are long-lived, so full handshakes cost little; turn this on
    /// only when connection churn is high and that window is acceptable.
    pub fn enable_resumption(self) -> Self {
        self.resumption(Resumption::Stateful { capacity: 256 })
    }

    /// Chooses how (and whether) clients may resume sessions; see [`Resumption`] and the
    /// caveat of [`enable_resumption`](Self::enable_resumption). The client side needs
    /// [`ClientConfigBuilder::enable_resumption`](crate::ClientConfigBuilder::enable_resumption).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["api.internal"]))?;
    /// # let identity = std::sync::Arc::new(mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
    /// # let trust = std::sync::Arc::new(mtls_core::TrustBundle::from_pem(ca.cert_pem())?);
    /// use mtls_core::{Resumption, ServerConfigBuilder};
    /// let config = ServerConfigBuilder::new(identity, trust).resumption(Resumption::Tickets).build()?;
    /// assert!(config.ticketer.enabled());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resumption(mut self, resumption: Resumption) -> Self {
        self.resumption = resumption;
        self
    }

    crate::builder::tls_setters!(ServerConfigBuilder, "clients", "");

    /// Builds the config; refuses an impossible [`TlsPolicy`], naming the field.
    pub fn build(self) -> Result<rustls::ServerConfig> {
        let (provider, versions) = crate::policy::apply(&self.tls, &self.provider)?;
        let verifier = ClientVerifier {
            inner: PeerVerifier::new(Side::Server, self.trust, self.policy, &provider),
            permissive: self.permissive,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(crate::builder::versions_refused)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(IdentityResolver(self.identity)));
        config.alpn_protocols = self.alpn;
        if self.key_log {
            config.key_log = crate::policy::key_log("server");
        }
        debug!(policy = %self.tls.summary(), "mTLS server config built");
        match self.resumption {
            Resumption::Off => {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            Resumption::Stateful { capacity } => {
                config.session_storage = rustls::server::ServerSessionMemoryCache::new(capacity);
            }
            Resumption::Tickets => {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                    Error::InvalidConfig {
                        reason: format!("session ticket keys: {e}"),
                    }
                })?;
            }
        }
        Ok(config)
    }
}

/// How a server lets clients resume earlier sessions (TLS 1.3 session tickets).
///
/// Any resumption admits a returning client without verifying its certificate again (see
/// [`ServerConfigBuilder::enable_resumption`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumption {
    /// Every connection does a full handshake (the default).
    #[default]
    Off,
    /// A server-side session cache of `capacity` entries; the tickets the client gets are
    /// keys into it, so a session resumes only on this process and is forgotten when the
    /// cache evicts it.
    Stateful {
        /// Sessions kept (least recently used evicted first).
        capacity: usize,
    },
    /// Stateless tickets: the session is encrypted into the ticket with keys generated by
    /// this process (aws-lc-rs, rotated every 6 hours); nothing is stored per client.
    Tickets,
}

impl fmt::Debug for ServerConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfigBuilder")
            .field("identity", &self.identity)
            .field("trust", &self.trust)
            .field("policy", &self.policy)
            .field("permissive", &self.permissive)
            .field("tls", &self.tls)
            .field("key_log", &self.key_log)
            .field("resumption", &self.resumption)
            .finish_non_exhaustive()
    }
}

/// Presents the identity source's current certificate on every handshake.
#[derive(Debug)]
pub(crate) struct IdentityResolver(pub(crate) Arc<dyn IdentitySource>);

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.0.current().certified_key()))
    }
}

#[derive(Debug)]
struct ClientVerifier {
    inner: PeerVerifier,
    permissive: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.permissive
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: with SPIFFE bundles the roots change with the peer's trust domain,
        // and clients (rustls, openssl, Go) send their certificate without them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.inner.verify(end_entity, intermediates, None, now)?;
        Ok(ClientCertVerified::assertion())
    }

    crate::verify::signature_checks!(inner);
}
