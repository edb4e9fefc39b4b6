//! A scripted HTTP/1.1 (optionally HTTPS) server on loopback, in-process, for remote-JWKS
//! fault tests: each request gets the next scripted [`Reply`], then the default one. Records
//! each request's `User-Agent`. Every connection task stops when the server is dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What the server answers one request with.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `200 OK`, `Content-Length`, this JSON body.
    Json(String),
    /// This status with a short body.
    Status(u16),
    /// `302 Found` to this `Location`.
    Redirect(String),
    /// Reads the request and never answers (the connection stays open).
    Hang,
    /// `200 OK`, `Transfer-Encoding: chunked`, 64 KiB chunks for ever.
    Endless,
}

/// A test PKI: a CA (its DER, to trust) and a server certificate for 127.0.0.1 it signed.
pub struct TestPki {
    pub ca_der: Vec<u8>,
    pub config: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mtls-jwt test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        TestPki {
            ca_der: ca_cert.der().to_vec(),
            config: Arc::new(config),
        }
    }
}

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    hits: usize,
    user_agents: Vec<String>,
}

/// The server; stopped (listener and every connection) when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl FaultServer {
    /// Plain HTTP on `ip` (e.g. "127.0.0.1"): `script` first, then `default` for ever.
    pub async fn start(ip: &str, script: Vec<Reply>, default: Reply) -> FaultServer {
        Self::start_with(ip, None, script, default).await
    }

    /// HTTPS with `pki`'s server certificate.
    pub async fn start_tls(pki: &TestPki, script: Vec<Reply>, default: Reply) -> FaultServer {
        Self::start_with("127.0.0.1", Some(pki.config.clone()), script, default).await
    }

    async fn start_with(
        ip: &str,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        script: Vec<Reply>,
        default: Reply,
    ) -> FaultServer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            default,
            hits: 0,
            user_agents: Vec::new(),
        }));
        let shared = state.clone();
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            // Dropped with this task when the server is: every connection ends with it.
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let state = shared.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        },
                        None => Box::new(tcp),
                    };
                    serve(io, state).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        FaultServer {
            addr,
            tls: is_tls,
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Requests answered (or being answered) so far.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }

    pub fn user_agents(&self) -> Vec<String> {
        self.state.lock().unwrap().user_agents.clone()
    }

    /// Replaces what every request after the script gets.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut io: Box<dyn Io>, state: Arc<Mutex<State>>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&seen).into_owned();
    let user_agent = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("user-agent")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().unwrap();
        s.hits += 1;
        s.user_agents.push(user_agent);
        s.script.pop_front().unwrap_or_else(|| s.default.clone())
    };
    let simple = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match reply {
        Reply::Json(body) => {
            let text = simple("200 OK", "Content-Type: application/json\r\n", &body);
            let _ = io.write_all(text.as_bytes()).await;
        }
        Reply::Status(code) => {
            let text = simple(&format!("{code} Scripted"), "", "scripted failure");
            let _ = io.write_all(text.as_bytes()).await;
        }
        Reply::Redirect(location) => {
            let text = simple("302 Found", &format!("Location: {location}\r\n"), "");
            let _ = io.write_all(text.as_bytes()).await;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Reply::Endless => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if io.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b' ', 64 * 1024));
            chunk.extend_from_slice(b"\r\n");
            while io.write_all(&chunk).await.is_ok() {}
            return;
        }
    }
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}
