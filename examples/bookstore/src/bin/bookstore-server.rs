//! `bookstore-server`: one bookstore replica.
//!
//! ```text
//! # proxyless: mTLS, only the client's SPIFFE ID, tokens validated against a JWKS file;
//! # the certificate, key and CA files are watched and reloaded without a restart
//! bookstore-server --listen 0.0.0.0:50051 --ca bundle.pem --cert bookstore.pem --key bookstore-key.pem \
//!     --allow-spiffe-id spiffe://bookstore.local/ns/default/sa/client \
//!     --jwks jwks.json --issuer https://issuer.bookstore.local --audience bookstore
//! # identity and trust bundles from a SPIFFE Workload API (SPIRE, mtls-agent) instead of files
//! SPIFFE_ENDPOINT_SOCKET=unix:///run/agent.sock bookstore-server --workload-api --listen 0.0.0.0:50051
//! # behind an Envoy sidecar (which does mTLS and JWT): plaintext, loopback only
//! bookstore-server --plaintext --listen 127.0.0.1:8080
//! # any of these with Prometheus text metrics on http://127.0.0.1:9464/metrics
//! bookstore-server ... --metrics-listen
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bookstore::{BookstoreService, Error, Security, Store, server};
use clap::Parser;
use mtls_core::{
    Authorize, FileIdentitySource, FileTrustSource, IdentitySource, ServerConfigBuilder, SpiffeId,
    TrustSource,
};
use mtls_jwt::{JwksSource, KeySet, Validator};
use mtls_tonic::{authz::MethodPolicy, jwt::JwtRules};

/// One bookstore replica: mTLS + SPIFFE authorization + JWT, or plaintext behind a sidecar.
#[derive(Debug, Parser)]
#[command(name = "bookstore-server", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Trust bundle (CA certificates, PEM) that client certificates must chain to; with a
    /// SPIFFE ID in --cert, the X.509 bundle of our trust domain. Watched: a change is used
    /// from the next handshake on.
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    ca: Option<PathBuf>,
    /// Our certificate chain (leaf first, PEM). Watched with --key: a new pair is served
    /// from the next handshake on; an expired one, or one that does not chain to --ca, is
    /// refused (at start: the server does not start).
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    cert: Option<PathBuf>,
    /// Our private key (PEM).
    #[arg(long, required_unless_present_any = ["plaintext", "workload_api"])]
    key: Option<PathBuf>,
    /// How often --cert, --key and --ca are checked for changes (atomic renames, Kubernetes
    /// `..data` swaps and in-place writes alike), e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    reload_interval: Duration,
    /// Take our X509-SVID and the trust bundles from the SPIFFE Workload API at ENDPOINT
    /// (default: $SPIFFE_ENDPOINT_SOCKET) instead of --cert/--key/--ca; they rotate as the
    /// agent sends new ones.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "",
        conflicts_with_all = ["ca", "cert", "key", "plaintext"])]
    workload_api: Option<String>,
    /// SPIFFE ID allowed to call the bookstore (repeatable). Without any, every workload of
    /// our trust domain may call.
    #[arg(long = "allow-spiffe-id", value_name = "ID")]
    allow: Vec<SpiffeId>,
    /// JWKS file (JSON) to validate bearer tokens against; reloaded when it changes.
    #[arg(long, requires_all = ["issuer", "audience"])]
    jwks: Option<PathBuf>,
    /// Accepted token issuer (`iss`).
    #[arg(long, requires = "jwks")]
    issuer: Option<String>,
    /// Accepted token audience (`aud`).
    #[arg(long, requires = "jwks")]
    audience: Option<String>,
    /// No TLS, no authorization: for a loopback address behind an Envoy sidecar.
    #[arg(long, conflicts_with_all = ["ca", "cert", "key", "allow", "jwks"])]
    plaintext: bool,
    /// The name sent in `x-bookstore-replica` (default: $HOSTNAME, else the listen address).
    #[arg(long, env = "BOOKSTORE_REPLICA_NAME")]
    replica_name: Option<String>,
    /// TLS policy preset: default (hybrid post-quantum first), tls13-only, classical, nist.
    #[arg(long, default_value = "default")]
    tls_policy: mtls_core::TlsPolicy,
    /// Serve Prometheus text metrics (handshakes, certificate expiry, JWT verdicts, calls)
    /// on http://ADDR/metrics; without a value on 127.0.0.1:9464 (loopback).
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
        default_missing_value = bookstore::metrics::DEFAULT_LISTEN)]
    metrics_listen: Option<SocketAddr>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(3600) => Ok(d),
        Ok(d) => Err(format!(
            "expected an interval from 10ms to 1h, got {}",
            humantime::format_duration(d)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    bookstore::init_logging("warn");
    bookstore::block_on("bookstore-server", async {
        run(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn run(args: Args) -> Result<(), Error> {
    // Before any identity is loaded: its expiry gauge is set when it is put in place.
    if let Some(addr) = args.metrics_listen {
        bookstore::metrics::serve(addr)?;
        println!("bookstore-server metrics on http://{addr}/metrics");
    }
    let replica = args
        .replica_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| args.listen.to_string());
    let service = BookstoreService::new(Store::seeded(), &replica)?;
    // Everything that can be refused is checked before binding.
    let (security, describe) = if args.plaintext {
        (
            Security::Plaintext,
            "plaintext (loopback only, behind a sidecar)".to_owned(),
        )
    } else {
        mtls(&args).await?
    };
    let listener = server::bind(args.listen, args.plaintext).await?;
    let handle = server::spawn(listener, service, security)?;
    println!(
        "bookstore-server {replica} listening on {} — {describe}",
        handle.addr()
    );
    tokio::select! {
        result = handle.wait() => result,
        _ = bookstore::shutdown_signal() => {
            println!("bookstore-server {replica}: stopping");
            Ok(())
        }
    }
}

fn tls_error(what: &str, e: mtls_core::Error) -> Error {
    Error::Tls {
        context: what.to_owned(),
        source: e,
    }
}

/// Our identity and trust from the watched files: the certificate as it is now decides the
/// trust domain of the bundle, then the watched certificate must chain to that bundle.
fn file_sources(
    cert: &Path,
    key: &Path,
    ca: &Path,
    interval: Duration,
) -> Result<(FileIdentitySource, FileTrustSource, String), Error> {
    let cert_context = || {
        format!(
            "loading our certificate (--cert {}) and key (--key {})",
            cert.display(),
            key.display()
        )
    };
    let now = FileIdentitySource::open(cert, key).map_err(|e| tls_error(&cert_context(), e))?;
    let own_td = now
        .current()
        .spiffe_id()
        .map(|id| id.trust_domain().clone());
    let trust = match &own_td {
        Some(td) => FileTrustSource::watch_spiffe(td.clone(), ca, None::<&Path>, interval),
        None => FileTrustSource::watch(ca, None::<&Path>, interval),
    }
    .map_err(|e| tls_error("loading the trust bundle (--ca)", e))?;
    let identity = FileIdentitySource::watch_trusted(cert, key, trust.clone(), interval)
        .map_err(|e| tls_error(&cert_context(), e))?;
    warn_if_expiring_soon(&identity, cert);
    let describe = format!(
        "certificate, key and CA files reloaded on change (checked every {})",
        humantime::format_duration(interval)
    );
    Ok((identity, trust, describe))
}

fn warn_if_expiring_soon(identity: &FileIdentitySource, cert: &Path) {
    let current = identity.current();
    let not_after = current.not_after();
    if let Some(left) = bookstore::identity::expiring_soon(not_after, SystemTime::now()) {
        let left = Duration::from_secs(left.as_secs() / 60 * 60);
        tracing::warn!(
            certificate = %cert.display(),
            subject = %current.subject(),
            not_after = %humantime::format_rfc3339_seconds(not_after),
            "our certificate expires in {}; put a renewed one in place (it is picked up without a restart)",
            humantime::format_duration(left)
        );
    }
}

async fn mtls(args: &Args) -> Result<(Security, String), Error> {
    let (identity, trust, source): (Arc<dyn IdentitySource>, Arc<dyn TrustSource>, String) =
        match (&args.workload_api, &args.ca, &args.cert, &args.key) {
            (Some(endpoint), _, _, _) => {
                let source = bookstore::identity::workload_api(endpoint).await?;
                let describe = format!(
                    "identity from the SPIFFE Workload API at {}",
                    source.endpoint()
                );
                (Arc::new(source.clone()), Arc::new(source), describe)
            }
            (None, Some(ca), Some(cert), Some(key)) => {
                let (identity, trust, describe) =
                    file_sources(cert, key, ca, args.reload_interval)?;
                (Arc::new(identity), Arc::new(trust), describe)
            }
            _ => {
                return Err(Error::Config(
                    "--ca, --cert and --key (or --workload-api) are required without --plaintext"
                        .into(),
                ));
            }
        };
    // A SPIFFE bundle for our own trust domain when we have a SPIFFE ID, else a plain one.
    let own_td = identity
        .current()
        .spiffe_id()
        .map(|id| id.trust_domain().clone());
    let authorizer = if args.allow.is_empty() {
        match &own_td {
            Some(td) => Authorize::member_of(td.clone()),
            None => Authorize::any(),
        }
    } else {
        Authorize::one_of(args.allow.clone())
    };
    let allowed = if args.allow.is_empty() {
        own_td.map_or("any client with a valid certificate".to_owned(), |td| {
            format!("any workload of {td}")
        })
    } else {
        args.allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tls = ServerConfigBuilder::new(identity, trust)
        .authorize(authorizer.clone())
        .tls_policy(args.tls_policy.clone())
        .build()
        .map_err(|e| tls_error("building the TLS configuration", e))?;
    let policy = MethodPolicy::deny_by_default()
        .allow(
            &format!("{}/*", bookstore::HEALTH_SERVICE),
            Authorize::any(),
        )
        .and_then(|p| p.allow(&format!("{}/*", bookstore::BOOKSTORE_SERVICE), authorizer))
        .map_err(|e| Error::Config(format!("method policy: {e}")))?;
    let mut describe = format!("mTLS, callers: {allowed}; {source}");
    let jwt = match (&args.jwks, &args.issuer, &args.audience) {
        (Some(path), Some(issuer), Some(audience)) => {
            let json = std::fs::read_to_string(path).map_err(|e| Error::File {
                what: "reading the JWKS (--jwks)".into(),
                path: path.clone(),
                source: e,
            })?;
            let keys = KeySet::from_json(&json).map_err(|e| Error::Jwt {
                context: format!("the JWKS (--jwks {}) is not a usable JWKS", path.display()),
                source: e,
            })?;
            let validator = Validator::builder()
                .jwks(JwksSource::file(path.clone()))
                .issuer(issuer.clone())
                .audience(audience.clone())
                .build()
                .map_err(|e| Error::Jwt {
                    context: "building the JWT validator".into(),
                    source: e,
                })?;
            let rules = JwtRules::require_all()
                .skip(&format!("{}/*", bookstore::HEALTH_SERVICE))
                .map_err(|e| Error::Config(format!("JWT rules: {e}")))?;
            describe.push_str(&format!(
                "; bearer JWT required (iss {issuer}, aud {audience}, {} keys)",
                keys.len()
            ));
            Some((validator, rules))
        }
        _ => None,
    };
    Ok((
        Security::Mtls {
            tls: Arc::new(tls),
            policy,
            jwt,
        },
        describe,
    ))
}
