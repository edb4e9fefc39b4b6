//! The `handshake` scenario: a new mTLS connection per call (TCP connect, full TLS 1.3
//! handshake with a client certificate, no resumption, one byte echoed, close), against
//! the mtls-core server (a child process) and an Envoy listener with the same certificates
//! and the same SAN policy. The figure of merit is handshakes per server CPU-second.
//!
//! Both servers see the same client offer: TLS 1.3, `TLS13_AES_128_GCM_SHA256`, one
//! key-exchange group — X25519 for the classical rows, X25519MLKEM768 (with its X25519
//! share, as every mtls client sends it) for the hybrid rows; both servers' defaults include
//! both, so they do the same work — ALPN `h2`, P-256 ECDSA certificates from one root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, KxGroup, SanMatcher, SanType, ServerConfigBuilder,
    StringMatcher, TlsPolicy, TlsSuite, TrustBundle,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::driver::CallFn;
use crate::error::{Error, Result};

/// The trust domain of the benchmark PKI.
pub const TRUST_DOMAIN: &str = "example.org";
/// The server's SPIFFE ID.
pub const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/handshake-server";
/// The client's SPIFFE ID.
pub const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/loadgen";
/// The SAN policy both servers apply to clients: a URI SAN with this prefix.
pub const CLIENT_URI_PREFIX: &str = "spiffe://example.org/ns/prod/";
/// A client of the same CA outside the policy (`/ns/dev/`), for the tests that prove both
/// servers enforce the same policy.
pub const OUTSIDER_ID: &str = "spiffe://example.org/ns/dev/sa/loadgen";

/// Certificate files of the handshake scenario, made at run time in a directory.
#[derive(Clone, Debug)]
pub struct HandshakeFiles {
    /// Root CA certificate (PEM).
    pub ca: PathBuf,
    /// Server chain and key (PEM).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client chain.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// The outsider's chain ([`OUTSIDER_ID`]).
    pub outsider_cert: PathBuf,
    /// The outsider's key.
    pub outsider_key: PathBuf,
}

impl HandshakeFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("hs-ca.pem"),
            server_cert: dir.join("hs-server.pem"),
            server_key: dir.join("hs-server-key.pem"),
            client_cert: dir.join("hs-client.pem"),
            client_key: dir.join("hs-client-key.pem"),
            outsider_cert: dir.join("hs-outsider.pem"),
            outsider_key: dir.join("hs-outsider-key.pem"),
        }
    }

    /// Makes a root CA and the SVIDs (P-256) and writes them to `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let pki = |e: mtls_certs::Error| Error::Pki(e.to_string());
        let files = Self::in_dir(dir);
        let ca = CertificateAuthority::new_root(&CaParams::new("mtls bench root")).map_err(pki)?;
        let issue = |id: &str| -> Result<mtls_certs::Credential> {
            ca.issue(&LeafParams::svid(
                SpiffeId::new(id).map_err(|e| Error::Pki(e.to_string()))?,
            ))
            .map_err(pki)
        };
        let server = issue(SERVER_ID)?;
        let client = issue(CLIENT_ID)?;
        let outsider = issue(OUTSIDER_ID)?;
        let write =
            |path: &Path, text: &str| mtls_certs::files::write_file(path, text).map_err(pki);
        let write_key = |path: &Path, text: &str| {
            mtls_certs::files::write_private_key(path, text, true).map_err(pki)
        };
        write(&files.ca, &ca.cert_pem())?;
        write(&files.server_cert, &server.chain_pem())?;
        write_key(&files.server_key, &server.key_pem())?;
        write(&files.client_cert, &client.chain_pem())?;
        write_key(&files.client_key, &client.key_pem())?;
        write(&files.outsider_cert, &outsider.chain_pem())?;
        write_key(&files.outsider_key, &outsider.key_pem())?;
        Ok(files)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn core_err(e: mtls_core::Error) -> Error {
    Error::Pki(e.to_string())
}

/// The SAN policy: URI prefix [`CLIENT_URI_PREFIX`] (Envoy: `match_typed_subject_alt_names`).
pub fn client_san_policy() -> Result<SanMatcher> {
    Ok(SanMatcher::new(
        SanType::Uri,
        StringMatcher::prefix(CLIENT_URI_PREFIX).map_err(core_err)?,
    ))
}

/// The mtls-core server config: plain CA bundle + the SAN policy, as the Envoy listener.
pub fn server_config(files: &HandshakeFiles) -> Result<rustls::ServerConfig> {
    server_config_with(files, mtls_core::Resumption::Off)
}

/// [`server_config`] with session resumption (`Tickets` for the resumed rows).
pub fn server_config_with(
    files: &HandshakeFiles,
    resumption: mtls_core::Resumption,
) -> Result<rustls::ServerConfig> {
    let identity = Arc::new(
        Identity::from_pem(read(&files.server_cert)?, read(&files.server_key)?)
            .map_err(core_err)?,
    );
    let trust = Arc::new(TrustBundle::from_pem(read(&files.ca)?).map_err(core_err)?);
    ServerConfigBuilder::new(identity, trust)
        .match_sans([client_san_policy()?])
        .resumption(resumption)
        .build()
        .map_err(core_err)
}

/// The client config: our SVID, the server must be [`SERVER_ID`]; one key exchange group
/// (X25519) and one cipher suite, so both servers do the same work.
pub fn client_config(files: &HandshakeFiles) -> Result<rustls::ClientConfig> {
    client_config_for(files, &files.client_cert, &files.client_key)
}

/// [`client_config`] presenting another certificate (e.g. the outsider's).
pub fn client_config_for(
    files: &HandshakeFiles,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig> {
    client_config_with(files, cert, key, KxGroup::X25519)
}

/// [`client_config_for`] offering one key-exchange group, `group` (X25519MLKEM768 for the
/// hybrid post-quantum rows: the client then sends its X25519 share too).
pub fn client_config_with(
    files: &HandshakeFiles,
    cert: &Path,
    key: &Path,
    group: KxGroup,
) -> Result<rustls::ClientConfig> {
    client_config_full(files, cert, key, group, false)
}

/// The classical client config, resuming sessions from the tickets it is given (its own
/// session cache: build one per server).
pub fn client_config_resuming(files: &HandshakeFiles) -> Result<rustls::ClientConfig> {
    client_config_full(
        files,
        &files.client_cert,
        &files.client_key,
        KxGroup::X25519,
        true,
    )
}

fn client_config_full(
    files: &HandshakeFiles,
    cert: &Path,
    key: &Path,
    group: KxGroup,
    resume: bool,
) -> Result<rustls::ClientConfig> {
    let identity = Arc::new(Identity::from_pem(read(cert)?, read(key)?).map_err(core_err)?);
    let trust = Arc::new(
        TrustBundle::spiffe()
            .add_domain_pem(
                TRUST_DOMAIN
                    .parse()
                    .map_err(|e| Error::Pki(format!("{e}")))?,
                read(&files.ca)?,
            )
            .map_err(core_err)?,
    );
    let builder = ClientConfigBuilder::new(identity, trust)
        .authorize(Authorize::exact(
            SERVER_ID.parse().map_err(|e| Error::Pki(format!("{e}")))?,
        ))
        .tls_policy(
            TlsPolicy::default()
                .groups([group])
                .cipher_suites([TlsSuite::Aes128GcmSha256]),
        );
    let builder = if resume {
        builder.enable_resumption()
    } else {
        builder
    };
    builder.build().map_err(core_err)
}

/// The Envoy listener: TLS 1.3 only, client certificate required, the same CA and SAN
/// policy, no session resumption (neither tickets nor a session cache), ALPN `h2`, and the
/// `echo` network filter. [`envoy_bootstrap_with`] `(…, true)` keeps Envoy's default
/// stateless session tickets instead (the resumed rows). (`direct_response` would be the obvious choice, but it writes and
/// closes as the connection is created, which races the TLS handshake: measured, most
/// connections ended in "handshake eof".)
pub fn envoy_bootstrap(files: &HandshakeFiles, port: u16) -> serde_json::Value {
    envoy_bootstrap_with(files, port, false)
}

/// [`envoy_bootstrap`], with Envoy's default session tickets when `resumption`.
pub fn envoy_bootstrap_with(
    files: &HandshakeFiles,
    port: u16,
    resumption: bool,
) -> serde_json::Value {
    let p = |path: &Path| path.display().to_string();
    serde_json::json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "handshake",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
                "filter_chains": [{
                    "filters": [{
                        "name": "envoy.filters.network.echo",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo",
                        },
                    }],
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "require_client_certificate": true,
                            "disable_stateless_session_resumption": !resumption,
                            "disable_stateful_session_resumption": !resumption,
                            "common_tls_context": {
                                "tls_params": {
                                    "tls_minimum_protocol_version": "TLSv1_3",
                                    "tls_maximum_protocol_version": "TLSv1_3",
                                },
                                "alpn_protocols": ["h2"],
                                "tls_certificates": [{
                                    "certificate_chain": { "filename": p(&files.server_cert) },
                                    "private_key": { "filename": p(&files.server_key) },
                                }],
                                "validation_context": {
                                    "trusted_ca": { "filename": p(&files.ca) },
                                    "match_typed_subject_alt_names": [{
                                        "san_type": "URI",
                                        "matcher": { "prefix": CLIENT_URI_PREFIX },
                                    }],
                                },
                            },
                        },
                    },
                }],
            }],
        },
    })
}

/// Serves handshakes on `listener` forever: each accepted connection is handshaken with
/// `config`, then echoes what it reads until the client closes (as Envoy's `echo` filter).
pub async fn serve(listener: tokio::net::TcpListener, config: rustls::ServerConfig) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match acceptor.accept(tcp).await {
                Ok(mut tls) => {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => eprintln!("handshake failed: {e}"),
            }
        });
    }
}

/// One call of the scenario: connect to `addr`, handshake, send one byte, read it back
/// (proof that the server accepted our certificate: with TLS 1.3 the client finishes its
/// handshake before the server has verified it), close.
pub fn call(addr: SocketAddr, config: rustls::ClientConfig) -> CallFn {
    call_counting(addr, TlsConnector::from(Arc::new(config)), Arc::default())
}

/// [`call`] with `connector`, counting handshakes done (`counts[0]`) and those that resumed
/// a session (`counts[1]`).
pub fn call_counting(
    addr: SocketAddr,
    connector: TlsConnector,
    counts: Arc<[std::sync::atomic::AtomicU64; 2]>,
) -> CallFn {
    let name = ServerName::IpAddress(addr.ip().into());
    Arc::new(move |_worker| {
        let (connector, name, counts) = (connector.clone(), name.clone(), counts.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake with {addr}: {e}"))?;
            counts[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                counts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tls.write_all(b"x")
                .await
                .map_err(|e| format!("writing to {addr}: {e}"))?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte)
                .await
                .map_err(|e| format!("reading the answer from {addr}: {e}"))?;
            if byte != *b"x" {
                return Err(format!("expected answer \"x\" from {addr}, got {byte:?}"));
            }
            Ok(())
        })
    })
}

/// A stream that counts the first two flights of a handshake as the client sees them.
struct Counting<S> {
    inner: S,
    /// Bytes written before the first byte was read.
    first_flight: u64,
    /// Bytes read before the client wrote again.
    answer: u64,
    /// 0: client's first flight; 1: server's answer; 2: done.
    phase: u8,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            if self.phase == 0 {
                self.phase = 1;
            }
            if self.phase == 1 {
                self.answer += n;
            }
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = &poll
            && *n > 0
        {
            match self.phase {
                0 => self.first_flight += *n as u64,
                1 => self.phase = 2,
                _ => {}
            }
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection to `addr` with `connector`, its first two flights counted at the
/// client's socket (ClientHello, then ServerHello … Finished), the handshake kind and the
/// negotiated group as rustls reports them.
pub async fn hello_bytes(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> Result<crate::result::HelloBytes> {
    let failed = |what: &str, e: std::io::Error| Error::Io {
        context: format!("{what} {addr} (counting handshake bytes)"),
        source: e,
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| failed("connecting to", e))?;
    let _ = tcp.set_nodelay(true);
    let counting = Counting {
        inner: tcp,
        first_flight: 0,
        answer: 0,
        phase: 0,
    };
    let mut tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), counting)
        .await
        .map_err(|e| failed("handshake with", e))?;
    tls.write_all(b"x")
        .await
        .map_err(|e| failed("writing to", e))?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte)
        .await
        .map_err(|e| failed("reading from", e))?;
    let (io, conn) = tls.get_ref();
    let negotiated = mtls_core::Negotiated::from_connection(conn);
    Ok(crate::result::HelloBytes {
        client_hello: io.first_flight,
        server_flight: io.answer,
        kind: negotiated
            .as_ref()
            .map_or("unknown", |n| n.handshake_kind_name())
            .to_owned(),
        group: negotiated.map_or_else(|| "unknown".into(), |n| n.group_name()),
        resumed_share: None,
    })
}
