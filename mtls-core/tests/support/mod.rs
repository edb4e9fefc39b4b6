//! Shared test support: a test PKI (mtls-certs for normal certificates, rcgen for the
//! malformed ones mtls-certs refuses to make) and a loopback handshake harness; the
//! shared helpers (the child-process guard, the test peers) are in mtls-test-support, used
//! by the test files themselves (those stay out of the package; this module needs nothing
//! outside it).
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId};
use mtls_core::{Identity, PeerIdentity};
use rustls_pki_types::ServerName;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every network step of a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Two SPIFFE trust domains (example.org via an intermediate, other.org) and an intruder
/// CA nobody trusts.
pub struct Pki {
    pub root: CertificateAuthority,
    pub int: CertificateAuthority,
    pub other: CertificateAuthority,
    pub intruder: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        let root = CertificateAuthority::new_root(&CaParams::new("example.org Root")).unwrap();
        let int = root
            .new_intermediate(&CaParams::new("example.org Intermediate"))
            .unwrap();
        let other = CertificateAuthority::new_root(&CaParams::new("other.org Root")).unwrap();
        let intruder = CertificateAuthority::new_root(&CaParams::new("Intruder Root")).unwrap();
        Self {
            root,
            int,
            other,
            intruder,
        }
    }

    /// An X509-SVID for `id` issued by the example.org intermediate.
    pub fn svid(&self, id: &str) -> Identity {
        svid_from(&self.int, id)
    }

    /// The SPIFFE bundle set {example.org: root, other.org: other}.
    pub fn spiffe_bundle(&self) -> mtls_core::TrustBundle {
        mtls_core::TrustBundle::spiffe()
            .add_domain_pem("example.org".parse().unwrap(), self.root.cert_pem())
            .unwrap()
            .add_domain_pem("other.org".parse().unwrap(), self.other.cert_pem())
            .unwrap()
    }
}

pub fn svid_from(ca: &CertificateAuthority, id: &str) -> Identity {
    let leaf = ca
        .issue(&LeafParams::svid(SpiffeId::new(id).unwrap()))
        .unwrap();
    Identity::from_pem(leaf.chain_pem(), leaf.key_pem()).unwrap()
}

pub fn issued(ca: &CertificateAuthority, params: &LeafParams) -> Identity {
    let leaf = ca.issue(params).unwrap();
    Identity::from_pem(leaf.chain_pem(), leaf.key_pem()).unwrap()
}

/// A leaf signed by `ca` with rcgen directly, starting from sane end-entity params that
/// `edit` then breaks on purpose.
pub fn rcgen_leaf(
    ca: &CertificateAuthority,
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Identity {
    let now = OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::default();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::hours(1);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
    edit(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer_key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem(), issuer_key).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Identity::from_pem(cert.pem() + &ca.chain_pem(), key.serialize_pem()).unwrap()
}

pub fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(rcgen::string::Ia5String::try_from(s).unwrap())
}

/// A serial unique in this process (a leading 0x01 keeps the DER INTEGER positive and
/// minimal): the clock at first use, then a counter.
pub fn rand_serial() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    [&[0x01][..], &n.to_be_bytes()].concat()
}

/// A CRL from `ca` revoking `serials`.
pub fn crl_pem(ca: &CertificateAuthority, serials: &[&[u8]]) -> String {
    let now = OffsetDateTime::now_utc();
    let issuer_key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem(), issuer_key).unwrap();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::hours(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(s),
                revocation_time: now - time::Duration::minutes(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer).unwrap().pem().unwrap()
}

/// What each side saw of one handshake.
#[derive(Debug)]
pub struct Outcome {
    /// The server's view: the client's identity, or why the handshake failed.
    pub server: io::Result<PeerIdentity>,
    /// The client's view: the server's identity, or why the handshake (or the first read,
    /// where TLS 1.3 reports a rejected client certificate) failed.
    pub client: io::Result<PeerIdentity>,
}

impl Outcome {
    /// The server-side rejection reason, which must be one of ours.
    pub fn server_rejection(&self) -> &mtls_core::Error {
        let err = self
            .server
            .as_ref()
            .expect_err("the server should have rejected the client");
        mtls_core::Error::from_io(err)
            .unwrap_or_else(|| panic!("not an mtls-core rejection: {err:?}"))
    }

    /// The client-side rejection reason, which must be one of ours.
    pub fn client_rejection(&self) -> &mtls_core::Error {
        let err = self
            .client
            .as_ref()
            .expect_err("the client should have rejected the server");
        mtls_core::Error::from_io(err)
            .unwrap_or_else(|| panic!("not an mtls-core rejection: {err:?}"))
    }

    pub fn assert_ok(&self) -> (&PeerIdentity, &PeerIdentity) {
        match (&self.server, &self.client) {
            (Ok(s), Ok(c)) => (s, c),
            other => panic!("expected a successful handshake, got {other:?}"),
        }
    }
}

/// One handshake over real loopback TCP: the server accepts, reports the peer and writes
/// "ok\n"; the client connects to `server_name` and reads that line.
pub async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    server_name: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = PeerIdentity::from_connection(tls.get_ref().1).map_err(io::Error::other)?;
        tls.write_all(b"ok\n").await?;
        tls.flush().await?;
        let _ = tls.shutdown().await;
        Ok::<_, io::Error>(peer)
    });
    let client_result = connect(client, addr, server_name).await;
    let server_result = tokio::time::timeout(STEP, server_task)
        .await
        .expect("server side timed out")
        .unwrap();
    Outcome {
        server: server_result,
        client: client_result,
    }
}

/// Connects, completes the handshake and reads the server's first line.
pub async fn connect(
    client: rustls::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> io::Result<PeerIdentity> {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector.connect(name, tcp).await?;
        let peer = PeerIdentity::from_connection(tls.get_ref().1).map_err(io::Error::other)?;
        let mut line = String::new();
        BufReader::new(tls).read_line(&mut line).await?;
        if line != "ok\n" {
            return Err(io::Error::other(format!("unexpected reply {line:?}")));
        }
        Ok(peer)
    };
    tokio::time::timeout(STEP, work)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out")))
}

/// The rustls error inside an I/O error.
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Path of a built example binary (cargo builds examples for integration tests).
pub fn example_bin(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test -p mtls-core` (which builds the examples) or `cargo build -p mtls-core --examples` first",
        bin.display()
    );
    bin
}
