//! `bookstore-client`: the client scenario (list, create a shelf, create/get/list/delete a
//! book, delete the shelf), printing which replica answered each call.
//!
//! ```text
//! # proxyless: balanced mTLS over every address DNS gives for the name, bearer token
//! bookstore-client --target bookstore.default.svc.cluster.local:8443 \
//!     --ca bundle.pem --cert client.pem --key client-key.pem --token-file token.jwt
//! # through a local Envoy sidecar (which does mTLS and balancing)
//! bookstore-client --plaintext 127.0.0.1:10000 --token-file token.jwt
//! ```

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use bookstore::{Error, Scenario, scenario::boxed};
use clap::Parser;
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, IdentitySource, SpiffeId, TrustBundle, TrustSource,
};
use mtls_tonic::{
    balance::{BalancedChannel, LoadPolicy},
    client::MtlsConnector,
};

/// Runs the bookstore scenario, proxyless (balanced mTLS) or through a local Envoy sidecar.
#[derive(Debug, Parser)]
#[command(name = "bookstore-client", version)]
struct Args {
    /// TLS policy preset: default (hybrid post-quantum first), tls13-only, classical, nist.
    #[arg(long, default_value = "default")]
    tls_policy: mtls_core::TlsPolicy,
    /// The service, `host:port`; every address the host resolves to is a replica.
    #[arg(
        long,
        default_value = "bookstore.local:50051",
        conflicts_with = "plaintext"
    )]
    target: String,
    /// DNS server to resolve the target with (default: the system's).
    #[arg(long, value_name = "ADDR")]
    nameserver: Option<SocketAddr>,
    /// Trust bundle (CA certificates, PEM).
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    ca: Option<PathBuf>,
    /// Our certificate chain (leaf first, PEM).
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    cert: Option<PathBuf>,
    /// Our private key (PEM).
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    key: Option<PathBuf>,
    /// Our identity and trust bundle from the SPIFFE Workload API (an mtls-agent or SPIRE)
    /// instead of --ca/--cert/--key: at ENDPOINT (`unix:///path`), or
    /// $SPIFFE_ENDPOINT_SOCKET without one. New SVIDs and bundles are used by the next
    /// handshake.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "",
        conflicts_with_all = ["ca", "cert", "key", "plaintext"])]
    workload_api: Option<String>,
    /// The server's SPIFFE ID: any other server is refused.
    #[arg(long, default_value = bookstore::SERVER_ID, value_parser = parse_server_id)]
    server_id: SpiffeId,
    /// Verify the server by this DNS name instead of a SPIFFE ID: its certificate must
    /// carry it as a DNS SAN, chained to --ca (a plain CA bundle); also sent as SNI.
    #[arg(long, value_name = "DNS", conflicts_with_all = ["server_id", "workload_api"])]
    server_name: Option<String>,
    /// Bearer token.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Plaintext HTTP/2 to a local Envoy sidecar at this address (no TLS here).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["ca", "cert", "key", "nameserver"])]
    plaintext: Option<SocketAddr>,
    /// Calls to make (rounded up to whole rounds of 9; a round ends early when the replicas
    /// turn out to keep separate stores).
    #[arg(long, default_value_t = 18)]
    calls: usize,
    /// Print only the per-replica summary.
    #[arg(long, short)]
    quiet: bool,
}

/// Our own certificate first: an expired or not-yet-valid one is refused here, saying so,
/// rather than after the server's refusal (a TLS alert that names no certificate); one that
/// expires within 24 hours gets a warning.
fn check_own_certificate(identity: &Identity, cert: &std::path::Path) -> Result<(), Error> {
    let now = std::time::SystemTime::now();
    let at = |t| humantime::format_rfc3339_seconds(t).to_string();
    if identity.not_after() < now {
        return Err(Error::Config(format!(
            "our certificate {} (--cert {}) expired at {}; expected one valid now — servers refuse it: renew it",
            identity.subject(),
            cert.display(),
            at(identity.not_after())
        )));
    }
    if identity.not_before() > now {
        return Err(Error::Config(format!(
            "our certificate {} (--cert {}) is not valid before {}; expected one valid now (is the clock right?)",
            identity.subject(),
            cert.display(),
            at(identity.not_before())
        )));
    }
    if bookstore::identity::expiring_soon(identity.not_after(), now).is_some() {
        eprintln!(
            "bookstore-client: warning: our certificate (--cert {}) expires at {}",
            cert.display(),
            at(identity.not_after())
        );
    }
    Ok(())
}

/// A SPIFFE ID; a DNS name is pointed to --server-name.
fn parse_server_id(text: &str) -> Result<SpiffeId, String> {
    if !text.contains("://") {
        return Err(format!(
            "expected a SPIFFE ID (spiffe://trust-domain/path), found {text:?}; to check the server by DNS name, pass --server-name {text}"
        ));
    }
    text.parse::<SpiffeId>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    bookstore::init_logging("error");
    bookstore::block_on("bookstore-client", async {
        Ok(if run(args).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

async fn run(args: Args) -> Result<bool, Error> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Error::File {
                    what: "reading the token (--token-file)".into(),
                    path: path.clone(),
                    source: e,
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let (channel, how) = match args.plaintext {
        Some(addr) => (
            boxed(connect_sidecar(addr).await?),
            format!("plaintext to the sidecar on {addr}"),
        ),
        None => {
            let channel = proxyless(&args).await?;
            settle(&channel).await;
            (
                boxed(channel),
                format!("proxyless mTLS to {} (balanced)", args.target),
            )
        }
    };
    println!(
        "bookstore-client: {how}, {}",
        if token.is_some() {
            "with a bearer token"
        } else {
            "without a token"
        }
    );
    let report = Scenario::new(channel, token).run(args.calls).await;
    if !args.quiet {
        for call in &report.calls {
            println!("  {call}");
        }
    }
    println!(
        "{} / {} calls ok; calls per replica:",
        report.succeeded(),
        report.total()
    );
    println!("{}", report.distribution());
    if report.cross_replica_misses > 0 {
        println!(
            "({} rounds ended early: the replicas keep separate in-memory stores)",
            report.cross_replica_misses
        );
    }
    Ok(report.total() > 0 && report.succeeded() == report.total())
}

async fn proxyless(args: &Args) -> Result<BalancedChannel, Error> {
    let tls = |context: String| move |e| Error::Tls { context, source: e };
    let host = args
        .target
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&args.target);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (identity, trust): (Arc<dyn IdentitySource>, Arc<dyn TrustSource>) =
        match (&args.workload_api, &args.ca, &args.cert, &args.key) {
            (Some(endpoint), _, _, _) => {
                let source = bookstore::identity::workload_api(endpoint).await?;
                (Arc::new(source.clone()), Arc::new(source))
            }
            (None, Some(ca), Some(cert), Some(key)) => {
                let identity = Identity::from_pem_files(cert, key).map_err(tls(format!(
                    "loading --cert {} / --key {}",
                    cert.display(),
                    key.display()
                )))?;
                check_own_certificate(&identity, cert)?;
                let ca_pem = std::fs::read(ca).map_err(|e| Error::File {
                    what: "reading the trust bundle (--ca)".into(),
                    path: ca.clone(),
                    source: e,
                })?;
                let trust = match &args.server_name {
                    // A DNS-named server: a plain CA bundle, the name checked by the verifier.
                    Some(_) => TrustBundle::from_pem(&ca_pem),
                    None => TrustBundle::spiffe()
                        .add_domain_pem(args.server_id.trust_domain().clone(), &ca_pem),
                }
                .map_err(tls(format!("loading --ca {}", ca.display())))?;
                (Arc::new(Arc::new(identity)), Arc::new(Arc::new(trust)))
            }
            _ => {
                return Err(Error::Config(
                    "--ca, --cert and --key (or --workload-api) are required without --plaintext"
                        .into(),
                ));
            }
        };
    let mut config = ClientConfigBuilder::new(identity, trust).tls_policy(args.tls_policy.clone());
    // With no authorizer, the verifier checks the server's DNS SAN against the server name.
    if args.server_name.is_none() {
        config = config.authorize(Authorize::exact(args.server_id.clone()));
    }
    let config = config
        .build()
        .map_err(tls("building the TLS configuration".into()))?;
    let server_name = args.server_name.as_deref().unwrap_or(host);
    let connector = MtlsConnector::new(config)
        .server_name(server_name)
        .map_err(|e| Error::Config(format!("server name {server_name:?}: {e}")))?;
    let mut builder = BalancedChannel::builder(args.target.clone(), connector)
        .load_policy(LoadPolicy::RoundRobin)
        .ready_timeout(Duration::from_secs(5));
    if let Some(ns) = args.nameserver {
        builder = builder.nameserver(ns);
    }
    let channel = builder
        .build()
        .map_err(|e| Error::Config(format!("channel to {}: {e}", args.target)))?;
    Ok(channel)
}

/// Connects to the sidecar, retrying for up to 30 s: a native sidecar may still be
/// starting when the client container starts.
async fn connect_sidecar(addr: SocketAddr) -> Result<tonic::transport::Channel, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match bookstore::mesh::envoy_channel(addr).await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Gives the channel a moment (up to 3 s) to connect to every replica, so round robin
/// starts even.
async fn settle(channel: &BalancedChannel) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let endpoints = channel.endpoints();
        if !endpoints.is_empty() && endpoints.iter().all(|e| e.state.is_ready()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
