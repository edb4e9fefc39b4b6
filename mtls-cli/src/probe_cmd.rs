//! `mtls probe HOST:PORT`: one TLS handshake, explained for a person — what the server
//! presented, what was negotiated, and whether mtls-core's verifier accepts it under the
//! given trust bundle, SPIFFE ID / trust domain / DNS name and TLS policy (with the reason
//! when not: expected vs presented).
//!
//! Exit codes (also in `--help`): 0 connected and accepted; 3 connected but the server's
//! certificate was refused by policy; 4 TLS failed (no common version or group, the server
//! refused our certificate, an alert); 5 not TLS (plaintext HTTP/2, another protocol, no
//! answer to the ClientHello); 6 unreachable (DNS, connection refused, timeout); 1 a local
//! error (unreadable files); 2 bad usage.

use crate::output::{out, outln};

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use mtls_certs::CertificateSummary;
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, Negotiated, SanMatcher, SanType, StringMatcher,
    TlsPolicy, TrustBundle, TrustDomain,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

use crate::output::{CliResult, parse_duration, read_text};

/// The documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    TlsFailed,
    NotTls,
    Unreachable,
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::Accepted => 0,
            Outcome::Refused => 3,
            Outcome::TlsFailed => 4,
            Outcome::NotTls => 5,
            Outcome::Unreachable => 6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::TlsFailed => "tls_failed",
            Outcome::NotTls => "not_tls",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// `mtls probe` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 connected and accepted; 3 connected but refused by \
policy (the server's certificate); 4 TLS failed; 5 not TLS; 6 unreachable; 1 local error; 2 usage."
)]
pub(crate) struct ProbeArgs {
    /// The server, HOST:PORT.
    target: String,
    /// Trust bundle file (PEM) the server's chain must verify against. (`--ca` is a CA
    /// directory in the certificate subcommands; the old spelling `--ca FILE` still works.)
    #[arg(long = "ca-file", alias = "ca", value_name = "FILE")]
    ca: PathBuf,
    /// The server must have exactly this SPIFFE ID (the bundle is then that trust domain's).
    #[arg(long, conflicts_with = "trust_domain")]
    spiffe_id: Option<mtls_core::SpiffeId>,
    /// The server must be a workload of this trust domain.
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// The server must have this DNS SAN (repeatable; Envoy-style exact match, wildcards honoured).
    #[arg(long)]
    dns_name: Vec<String>,
    /// SNI to send (default: HOST when it is a name).
    #[arg(long)]
    server_name: Option<String>,
    /// Our certificate chain (PEM), for servers that require one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Our private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS policy: a preset (default, tls13-only, classical, nist) or a YAML/JSON file
    /// (`{preset: classical, min_version: TLSv1_2, groups: [X25519, P-256]}`).
    #[arg(long, default_value = "default", value_parser = parse_policy)]
    tls_policy: TlsPolicy,
    /// Also offer TLS 1.2.
    #[arg(long)]
    tls12: bool,
    /// Bound on connecting and on each handshake step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Log this connection's TLS secrets to $SSLKEYLOGFILE (only if that is set too).
    #[arg(long)]
    keylog: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// What the probe learned.
#[derive(Debug)]
struct Report {
    target: String,
    address: Option<SocketAddr>,
    outcome: Outcome,
    reason: String,
    negotiated: Option<Negotiated>,
    chain: Vec<CertificateDer<'static>>,
}

impl ProbeArgs {
    pub(crate) fn run(self) -> CliResult<ExitCode> {
        let config = self.client_config()?;
        let report = self.probe(config);
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            out!("{}", report.text());
        }
        Ok(ExitCode::from(report.outcome.code()))
    }

    fn client_config(&self) -> CliResult<rustls::ClientConfig> {
        let pem = read_text(&self.ca)?;
        let domain = self
            .spiffe_id
            .as_ref()
            .map(|id| id.trust_domain().clone())
            .or_else(|| self.trust_domain.clone());
        let trust = Arc::new(match &domain {
            Some(td) => TrustBundle::spiffe().add_domain_pem(td.clone(), pem)?,
            None => TrustBundle::from_pem(pem)?,
        });
        let mut builder = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                ClientConfigBuilder::new(Arc::new(Identity::from_pem_files(cert, key)?), trust)
            }
            _ => ClientConfigBuilder::without_identity(trust),
        };
        if let Some(id) = &self.spiffe_id {
            builder = builder.authorize(Authorize::exact(id.clone()));
        } else if let Some(td) = &self.trust_domain {
            builder = builder.authorize(Authorize::member_of(td.clone()));
        }
        if !self.dns_name.is_empty() {
            builder = builder.match_sans(
                self.dns_name
                    .iter()
                    .map(|n| SanMatcher::new(SanType::Dns, StringMatcher::exact(n.clone()))),
            );
        }
        let mut policy = self.tls_policy.clone();
        if self.tls12 {
            policy = policy.allow_tls12();
        }
        builder = builder
            .tls_policy(policy)
            .alpn_protocols(["h2", "http/1.1"]);
        if self.keylog {
            builder = builder.key_log_from_env();
        }
        Ok(builder.build()?)
    }

    fn probe(&self, config: rustls::ClientConfig) -> Report {
        let mut report = Report {
            target: self.target.clone(),
            address: None,
            outcome: Outcome::Unreachable,
            reason: String::new(),
            negotiated: None,
            chain: Vec::new(),
        };
        let (host, _) = split_host(&self.target);
        let addrs: Vec<SocketAddr> = match self.target.to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                report.reason = format!("cannot resolve {}: {e}", self.target);
                return report;
            }
        };
        let name = self.server_name.clone().unwrap_or_else(|| host.to_owned());
        let server_name = match ServerName::try_from(name.clone()) {
            Ok(n) => n,
            Err(e) => {
                report.reason = format!("invalid server name {name:?}: {e}");
                return report;
            }
        };
        let Some((tcp, addr)) = self.connect(&addrs, &mut report) else {
            return report;
        };
        report.address = Some(addr);
        let recorder = Recorder::default();
        match handshake(tcp, config.clone(), server_name.clone(), self.timeout) {
            Ok(done) => {
                report.negotiated = Negotiated::from_connection(&done);
                report.chain = owned_chain(&done);
                match done.post_handshake {
                    Some(alert) => {
                        report.outcome = Outcome::TlsFailed;
                        report.reason = format!(
                            "the handshake completed, then the server closed the connection: {alert}{}",
                            if self.cert.is_none() {
                                " (it may require a client certificate: --cert/--key)"
                            } else {
                                " (it refused our client certificate)"
                            }
                        );
                    }
                    None => {
                        report.outcome = Outcome::Accepted;
                        report.reason =
                            "the server's certificate passed verification and policy".to_owned();
                    }
                }
            }
            Err(failure) => {
                report.negotiated = failure.negotiated;
                let (outcome, reason) = classify(&failure.error, &failure.first_bytes);
                report.outcome = outcome;
                report.reason = reason;
                if outcome == Outcome::Refused {
                    // Show what was refused: a second handshake that only records the chain.
                    let mut capture = config;
                    capture
                        .dangerous()
                        .set_certificate_verifier(Arc::new(recorder.clone()));
                    if let Some((tcp, _)) = self.connect(&[addr], &mut Report::empty()) {
                        let _ = handshake(tcp, capture, server_name, self.timeout);
                    }
                    report.chain = recorder.chain();
                }
            }
        }
        report
    }

    fn connect(
        &self,
        addrs: &[SocketAddr],
        report: &mut Report,
    ) -> Option<(TcpStream, SocketAddr)> {
        let mut errors = Vec::new();
        for addr in addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(tcp) => return Some((tcp, *addr)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        report.outcome = Outcome::Unreachable;
        report.reason = if errors.is_empty() {
            format!("{} resolved to no address", self.target)
        } else {
            format!("cannot connect to {}: {}", self.target, errors.join("; "))
        };
        None
    }
}

/// A preset name, else a YAML/JSON policy file; an impossible policy is refused here,
/// naming the field.
fn parse_policy(s: &str) -> Result<TlsPolicy, String> {
    let policy = match s.parse::<TlsPolicy>() {
        Ok(policy) => policy,
        Err(preset_err) => {
            let path = std::path::Path::new(s);
            if !path.exists() {
                return Err(format!(
                    "{preset_err}; or the path of a YAML/JSON policy file"
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_yaml_ng::from_str::<TlsPolicy>(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    policy.check().map_err(|e| e.to_string())?;
    Ok(policy)
}

fn split_host(target: &str) -> (&str, &str) {
    match target.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        None => (target, ""),
    }
}

/// A finished handshake; `post_handshake` is the alert the server sent right after it
/// (TLS 1.3 servers check our certificate after we think we are done).
struct Done {
    conn: rustls::ClientConnection,
    post_handshake: Option<String>,
}

impl std::ops::Deref for Done {
    type Target = rustls::ClientConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

struct Failure {
    error: io::Error,
    first_bytes: Vec<u8>,
    negotiated: Option<Negotiated>,
}

/// The socket, keeping the first bytes the server sent (to tell TLS from other protocols).
struct Wire {
    tcp: TcpStream,
    first: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        let room = 32usize.saturating_sub(self.first.len());
        self.first.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn handshake(
    tcp: TcpStream,
    config: rustls::ClientConfig,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<Done, Failure> {
    let fail = |error: io::Error, first: &[u8], conn: Option<&rustls::ClientConnection>| Failure {
        error,
        first_bytes: first.to_vec(),
        negotiated: conn.and_then(|c| Negotiated::from_connection(c)),
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let _ = tcp.set_nodelay(true);
    let mut wire = Wire {
        tcp,
        first: Vec::new(),
    };
    let mut conn = match rustls::ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => return Err(fail(io::Error::other(e), &[], None)),
    };
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err(fail(
                io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
                &wire.first,
                Some(&conn),
            ));
        }
        match conn.complete_io(&mut wire) {
            Ok((0, 0)) if conn.is_handshaking() && conn.wants_read() => {
                return Err(fail(
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                    &wire.first,
                    Some(&conn),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(fail(e, &wire.first, Some(&conn))),
        }
    }
    // Flush our Finished (and certificate), then give the server a moment to refuse us.
    let _ = wire
        .tcp
        .set_read_timeout(Some(timeout.min(Duration::from_millis(800))));
    let post_handshake = match conn.complete_io(&mut wire) {
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(alert)) => Some(format!("alert {alert:?}")),
            Some(other) => Some(other.to_string()),
            None if e.kind() == io::ErrorKind::WouldBlock
                || e.kind() == io::ErrorKind::TimedOut =>
            {
                None
            }
            None => None,
        },
        Ok(_) => {
            // Data or nothing: read whatever plaintext came, surfacing an alert if queued.
            let mut sink = [0u8; 1024];
            match conn.reader().read(&mut sink) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => Some(e.to_string()),
                _ => None,
            }
        }
    };
    Ok(Done {
        conn,
        post_handshake,
    })
}

fn owned_chain(conn: &rustls::ClientConnection) -> Vec<CertificateDer<'static>> {
    conn.peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// Sorts a failed handshake into refused / TLS failed / not TLS, with a reason.
fn classify(error: &io::Error, first: &[u8]) -> (Outcome, String) {
    if let Some(ours) = mtls_core::Error::from_io(error) {
        return (
            Outcome::Refused,
            format!("the server's certificate was refused: {ours}"),
        );
    }
    let tls_error = error
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>());
    let looks_tls = first.len() >= 2 && (0x14..=0x17).contains(&first[0]) && first[1] == 0x03;
    if !looks_tls {
        if !first.is_empty() {
            return (
                Outcome::NotTls,
                format!("not TLS: {}", describe_bytes(first)),
            );
        }
        let timed_out = matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        if tls_error.is_none() {
            return (
                Outcome::NotTls,
                if timed_out {
                    "not TLS: no answer to our ClientHello (the port accepts TCP but says nothing)"
                        .to_owned()
                } else {
                    format!(
                        "not TLS: the server closed the connection without answering our ClientHello ({error})"
                    )
                },
            );
        }
    }
    if let Some(rustls::Error::InvalidCertificate(e)) = tls_error {
        return (
            Outcome::Refused,
            format!("the server's certificate was refused: {e}"),
        );
    }
    (
        Outcome::TlsFailed,
        format!(
            "TLS handshake failed: {}",
            mtls_core::explain_handshake_error(error)
        ),
    )
}

fn describe_bytes(first: &[u8]) -> String {
    // An HTTP/2 server's first frame is SETTINGS: 3-byte length, type 0x04, flags, stream 0.
    if first.len() >= 9 && first[3] == 0x04 && first[5..9] == [0, 0, 0, 0] {
        return "the server speaks plaintext HTTP/2 (h2c): it answered our ClientHello with an HTTP/2 SETTINGS frame; connect without TLS, or to its TLS port".to_owned();
    }
    if first.starts_with(b"HTTP/") {
        return "the server speaks plaintext HTTP/1.x".to_owned();
    }
    if first.starts_with(b"SSH-") {
        return "the server speaks SSH".to_owned();
    }
    let text: String = first
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("the server answered with bytes that are not a TLS record: \"{text}\"")
}

impl Report {
    fn empty() -> Self {
        Self {
            target: String::new(),
            address: None,
            outcome: Outcome::Unreachable,
            reason: String::new(),
            negotiated: None,
            chain: Vec::new(),
        }
    }

    fn summaries(&self) -> Vec<Result<CertificateSummary, String>> {
        self.chain
            .iter()
            .map(|c| CertificateSummary::from_der(c).map_err(|e| e.to_string()))
            .collect()
    }

    fn text(&self) -> String {
        let mut out = format!("probe      {}", self.target);
        if let Some(addr) = self.address {
            out += &format!(" ({addr})");
        }
        out.push('\n');
        if let Some(tls) = &self.negotiated {
            out += &format!("negotiated {tls}");
            if let Some(alpn) = tls.alpn() {
                out += &format!(", ALPN {}", String::from_utf8_lossy(alpn));
            }
            out += if tls.is_post_quantum() {
                " (post-quantum)\n"
            } else {
                "\n"
            };
        }
        for (i, summary) in self.summaries().iter().enumerate() {
            match summary {
                Ok(s) => {
                    let sans: Vec<String> = s.sans.iter().map(ToString::to_string).collect();
                    out += &format!(
                        "cert[{i}]    subject {:?}, issuer {:?}, valid {} .. {}{}\n",
                        s.subject,
                        s.issuer,
                        crate::output::rfc3339(s.not_before),
                        crate::output::rfc3339(s.not_after),
                        validity_note(s),
                    );
                    if !sans.is_empty() {
                        out += &format!("           SANs {}\n", sans.join(", "));
                    }
                    if let Some(id) = &s.spiffe_id {
                        out += &format!("           SPIFFE ID {id}\n");
                    }
                }
                Err(e) => out += &format!("cert[{i}]    unreadable: {e}\n"),
            }
        }
        out += &format!("result     {}: {}\n", self.outcome.name(), self.reason);
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let chain: Vec<serde_json::Value> = self
            .summaries()
            .into_iter()
            .map(|s| match s {
                Ok(s) => serde_json::to_value(&s).unwrap_or(serde_json::Value::Null),
                Err(e) => json!({ "error": e }),
            })
            .collect();
        json!({
            "target": self.target,
            "address": self.address.map(|a| a.to_string()),
            "outcome": self.outcome.name(),
            "exit_code": self.outcome.code(),
            "reason": self.reason,
            "negotiated": self.negotiated.as_ref().map(|t| json!({
                "version": t.version_name(),
                "cipher_suite": t.cipher_suite_name(),
                "key_exchange_group": t.group_name(),
                "post_quantum": t.is_post_quantum(),
                "handshake_kind": t.handshake_kind_name(),
                "alpn": t.alpn().map(|a| String::from_utf8_lossy(a).into_owned()),
            })),
            "chain": chain,
            "spiffe_id": self.summaries().first().and_then(|s| s.as_ref().ok()).and_then(|s| s.spiffe_id.clone()),
        })
    }
}

fn validity_note(s: &CertificateSummary) -> &'static str {
    let now = time::OffsetDateTime::now_utc();
    if now > s.not_after {
        " (EXPIRED)"
    } else if now < s.not_before {
        " (NOT YET VALID)"
    } else {
        ""
    }
}

/// Records the chain the server presented and accepts it (used only for the second
/// handshake that shows what a refused server presented; nothing is sent on it).
#[derive(Clone, Debug, Default)]
struct Recorder(Arc<Mutex<Vec<CertificateDer<'static>>>>);

impl Recorder {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.0.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        // Stop here: this handshake exists only to see the chain.
        Err(rustls::Error::General("chain recorded".to_owned()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not verifying".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
