//! [`ClientConfigBuilder`]: a `rustls::ClientConfig` that presents the current identity
//! and authorizes the server by policy.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::authorizer::Authorizer;
use crate::error::Result;
use crate::policy::TlsPolicy;
use crate::san::SanMatcher;
use crate::source::{IdentitySource, TrustSource};
use crate::verify::{PeerVerifier, Policy, Side};
use tracing::debug;

/// Builds a `rustls::ClientConfig` for mTLS.
///
/// Defaults: presents the identity, TLS 1.3 only, ALPN `h2`, no session resumption,
/// aws-lc-rs. The server is
/// verified against `trust`; then:
/// - with a policy ([`authorize`](Self::authorize) and/or [`match_sans`](Self::match_sans))
///   the **policy alone** decides who the server is — the dialed name is not checked, so
///   dialing `127.0.0.1` or `localhost` works with URI-only SVIDs;
/// - without a policy, the certificate must be valid for the dialed name (usual HTTPS rule).
///
/// ```
/// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
/// # let svid = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/web")?))?;
/// use std::sync::Arc;
/// use mtls_core::{Authorize, ClientConfigBuilder, Identity, TrustBundle};
///
/// let identity = Arc::new(Identity::from_pem(svid.chain_pem(), svid.key_pem())?);
/// let trust = Arc::new(TrustBundle::spiffe().add_domain_pem("example.org".parse()?, ca.cert_pem())?);
/// let config: rustls::ClientConfig = ClientConfigBuilder::new(identity, trust)
///     .authorize(Authorize::exact("spiffe://example.org/api".parse()?))
///     .build()?;
/// // connect with tokio_rustls::TlsConnector::from(Arc::new(config)) to ServerName "127.0.0.1"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClientConfigBuilder {
    identity: Option<Arc<dyn IdentitySource>>,
    trust: Arc<dyn TrustSource>,
    policy: Policy,
    tls: TlsPolicy,
    key_log: bool,
    resumption: bool,
    alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ClientConfigBuilder {
    /// Starts a builder presenting `identity` and verifying servers against `trust`.
    pub fn new(identity: impl IdentitySource, trust: impl TrustSource) -> Self {
        Self {
            identity: Some(Arc::new(identity)),
            ..Self::without_identity(trust)
        }
    }

    /// A client that presents no certificate (e.g. talking to a permissive server, or
    /// one-way TLS with a SPIFFE-authorized server).
    ///
    /// ```
    /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
    /// let trust = std::sync::Arc::new(mtls_core::TrustBundle::from_pem(ca.cert_pem())?);
    /// let config = mtls_core::ClientConfigBuilder::without_identity(trust).build()?;
    /// assert!(!config.client_auth_cert_resolver.has_certs());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn without_identity(trust: impl TrustSource) -> Self {
        Self {
            identity: None,
            trust: Arc::new(trust),
            policy: Policy::default(),
            tls: TlsPolicy::default(),
            key_log: false,
            resumption: false,
            alpn: vec![b"h2".to_vec()],
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// Allows TLS session resumption (off by default). A resumed session is not
    /// re-verified, so it does not see a rotated trust bundle or a new server identity
    /// until the ticket expires; see [`ServerConfigBuilder::enable_resumption`](crate::ServerConfigBuilder::enable_resumption).
    pub fn enable_resumption(mut self) -> Self {
        self.resumption = true;
        self
    }

    crate::builder::tls_setters!(
        ClientConfigBuilder,
        "servers",
        " on an `UpstreamTlsContext`"
    );

    /// Builds the config; refuses an impossible [`TlsPolicy`], naming the field.
    pub fn build(self) -> Result<rustls::ClientConfig> {
        let (provider, versions) = crate::policy::apply(&self.tls, &self.provider)?;
        let verifier = ServerVerifier {
            inner: PeerVerifier::new(Side::Client, self.trust, self.policy, &provider),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(crate::builder::versions_refused)?
            .dangerous() // our verifier replaces webpki's; see ServerVerifier
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match self.identity {
            Some(identity) => {
                builder.with_client_cert_resolver(Arc::new(ClientIdentityResolver(identity)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        if self.key_log {
            config.key_log = crate::policy::key_log("client");
        }
        debug!(policy = %self.tls.summary(), "mTLS client config built");
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(config)
    }
}

impl fmt::Debug for ClientConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfigBuilder")
            .field("identity", &self.identity)
            .field("trust", &self.trust)
            .field("policy", &self.policy)
            .field("tls", &self.tls)
            .field("key_log", &self.key_log)
            .field("resumption", &self.resumption)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ClientIdentityResolver(Arc<dyn IdentitySource>);

impl ResolvesClientCert for ClientIdentityResolver {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.0.current().certified_key()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Replaces rustls' WebPkiServerVerifier: same chain validation, but the dialed name is
/// checked only when no policy is configured (see [`ClientConfigBuilder`]).
#[derive(Debug)]
struct ServerVerifier {
    inner: PeerVerifier,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify(end_entity, intermediates, Some(server_name), now)?;
        Ok(ServerCertVerified::assertion())
    }

    crate::verify::signature_checks!(inner);
}
