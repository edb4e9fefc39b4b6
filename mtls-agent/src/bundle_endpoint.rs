//! The agent's SPIFFE bundle endpoint (SPIFFE_Federation.md): our trust domain's bundle
//! (every root in it as `x509-svid` — two during a CA rotation —, the JWT-SVID key as
//! `jwt-svid`, the current `spiffe_sequence`), made for each request so that a rotation is
//! seen at the peer's next poll, served over HTTPS to federated trust domains, with the `https_spiffe` profile (an SVID the agent issues itself for the
//! endpoint's SPIFFE ID) or `https_web` (a certificate the operator gives).
//!
//! A peer is bounded: the request head is read up to [`BUNDLE_ENDPOINT_MAX_REQUEST_HEAD`] bytes within
//! [`BUNDLE_ENDPOINT_REQUEST_TIMEOUT`], one request per connection, and at most [`BUNDLE_ENDPOINT_MAX_CONNECTIONS`] at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mtls_certs::{CertificateAuthority, LeafParams};
use mtls_identity::SpiffeId;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::issuer::Issuer;

/// The largest request head the endpoint reads.
pub const BUNDLE_ENDPOINT_MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a peer has to send its request head.
pub const BUNDLE_ENDPOINT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub const BUNDLE_ENDPOINT_MAX_CONNECTIONS: usize = 64;

/// How the bundle endpoint authenticates itself to federated trust domains.
#[derive(Clone)]
#[non_exhaustive]
pub enum ServeProfile {
    /// `https_spiffe`: an X509-SVID for `endpoint_id` (of our trust domain), issued by the
    /// agent's CA and renewed at half its lifetime.
    HttpsSpiffe {
        /// The SPIFFE ID federated domains are configured to expect.
        endpoint_id: SpiffeId,
    },
    /// `https_web`: a certificate chain and key (PEM) from a WebPKI CA.
    HttpsWeb {
        /// Certificate chain, leaf first (PEM).
        chain_pem: String,
        /// Private key (PEM).
        key_pem: String,
    },
}

impl std::fmt::Debug for ServeProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HttpsSpiffe { endpoint_id } => f
                .debug_struct("HttpsSpiffe")
                .field("endpoint_id", &endpoint_id.to_string())
                .finish(),
            Self::HttpsWeb { .. } => f.debug_struct("HttpsWeb").finish_non_exhaustive(),
        }
    }
}

/// Where and how the agent serves its bundle endpoint ([`AgentConfig::serve_bundle_endpoint`](crate::AgentConfig::serve_bundle_endpoint)).
#[derive(Clone, Debug)]
pub(crate) struct ServeConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) profile: ServeProfile,
    pub(crate) refresh_hint: Duration,
}

/// Our trust domain's bundle document as it is now (all roots in the bundle, its
/// sequence).
fn document(issuer: &Issuer, refresh_hint: Duration) -> Result<String> {
    let snapshot = issuer.current();
    let td = mtls_core::TrustDomain::new(&snapshot.trust_domain).map_err(|e| Error::Config {
        reason: format!("bundle endpoint: {e}"),
    })?;
    let bad = |e: mtls_core::Error| Error::Config {
        reason: format!("bundle endpoint: {e}"),
    };
    let key = issuer.jwt_key();
    let bundle = mtls_core::SpiffeBundle::new(td)
        .add_x509_authorities(snapshot.bundle_roots.iter().cloned())
        .map_err(bad)?
        .add_jwt_authority(mtls_core::JwtAuthority::new(key.kid(), key.jwk(None)).map_err(bad)?)
        .map_err(bad)?
        .spiffe_sequence(snapshot.bundle_sequence)
        .spiffe_refresh_hint(refresh_hint);
    Ok(bundle.to_json())
}

/// The TLS config served, with when it was made and by which CA (`https_spiffe`).
type CurrentTls = (
    Instant,
    Arc<CertificateAuthority>,
    Arc<rustls::ServerConfig>,
);

struct Tls {
    issuer: Arc<Issuer>,
    profile: ServeProfile,
    current: Mutex<Option<CurrentTls>>,
}

impl Tls {
    fn config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let renew_after = self.issuer.svid_ttl() / 2;
        // The oldest CA in the bundle issues the endpoint's SVID: a peer that has not
        // fetched a newly prepared root still verifies it; when that CA retires, the next
        // one takes over.
        let ca = Arc::clone(&self.issuer.current().oldest_ca);
        if let Some((made, by, config)) = current.as_ref()
            && (matches!(self.profile, ServeProfile::HttpsWeb { .. })
                || (made.elapsed() < renew_after && Arc::ptr_eq(by, &ca)))
        {
            return Ok(Arc::clone(config));
        }
        let (chain_pem, key_pem) = match &self.profile {
            ServeProfile::HttpsSpiffe { endpoint_id } => {
                let issued = ca.issue(
                    &LeafParams::svid(endpoint_id.clone())
                        .valid_for(self.issuer.svid_ttl())
                        .backdated_by(Duration::from_secs(10)),
                )?;
                (issued.chain_pem(), issued.key_pem())
            }
            ServeProfile::HttpsWeb { chain_pem, key_pem } => (chain_pem.clone(), key_pem.clone()),
        };
        let bad = |what: &str, e: String| Error::Config {
            reason: format!("bundle endpoint {what}: {e}"),
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad("certificate", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad("key", e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate", e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        *current = Some((Instant::now(), ca, Arc::clone(&config)));
        Ok(config)
    }
}

/// Binds the endpoint (so a bad address fails [`Agent::start`](crate::Agent::start)) and
/// returns its address and the serving task.
pub(crate) async fn start(
    issuer: Arc<Issuer>,
    config: ServeConfig,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let io = |source| Error::Io {
        what: "bundle endpoint",
        path: config.addr.to_string().into(),
        source,
    };
    let listener = TcpListener::bind(config.addr).await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let tls = Arc::new(Tls {
        issuer: Arc::clone(&issuer),
        profile: config.profile.clone(),
        current: Mutex::new(None),
    });
    tls.config()?;
    // Checked once here so that a bad bundle fails the start; then made per request, so
    // that every request sees the bundle as it is now (CA rotation).
    document(&issuer, config.refresh_hint)?;
    let refresh_hint = config.refresh_hint;
    let slots = Arc::new(tokio::sync::Semaphore::new(BUNDLE_ENDPOINT_MAX_CONNECTIONS));
    tracing::info!(addr = %addr, profile = ?config.profile, "bundle endpoint serving");
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "bundle endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let config = match tls.config() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "bundle endpoint has no certificate");
                    continue;
                }
            };
            let body = match document(&issuer, refresh_hint) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, "bundle endpoint has no bundle");
                    continue;
                }
            };
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(reason) = serve_one(tcp, config, &body).await {
                    tracing::debug!(peer = %peer, reason, "bundle endpoint request refused");
                }
            });
        }
    });
    Ok((addr, task))
}

async fn serve_one(
    tcp: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    body: &str,
) -> std::result::Result<(), String> {
    let work = async {
        let mut tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > BUNDLE_ENDPOINT_MAX_REQUEST_HEAD {
                let _ = tls
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return Err(format!(
                    "request head over {BUNDLE_ENDPOINT_MAX_REQUEST_HEAD} bytes"
                ));
            }
            match tls.read(&mut buf).await {
                Ok(0) => return Err("closed before a request".to_owned()),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let response = if head.starts_with(b"GET ") {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 405 Method Not Allowed\r\nallow: GET\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_owned()
        };
        tls.write_all(response.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let _ = tls.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(BUNDLE_ENDPOINT_REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| {
            format!(
                "no request within {}s",
                BUNDLE_ENDPOINT_REQUEST_TIMEOUT.as_secs()
            )
        })?
}
