//! `bookstore-server`: one bookstore replica.
//!
//! ```text
//! # proxyless: mTLS, only the client's SPIFFE ID, tokens validated against a JWKS file
//! bookstore-server --listen 0.0.0.0:50051 --ca bundle.pem --cert bookstore.pem --key bookstore-key.pem \
//!     --allow-spiffe-id spiffe://bookstore.local/ns/default/sa/client \
//!     --jwks jwks.json --issuer https://issuer.bookstore.local --audience bookstore
//! # behind an Envoy sidecar (which does mTLS and JWT): plaintext, loopback only
//! bookstore-server --plaintext --listen 127.0.0.1:8080
//! ```

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use bookstore::{BookstoreService, Error, Security, Store, server};
use clap::Parser;
use mtls_core::{Authorize, Identity, ServerConfigBuilder, SpiffeId, TrustBundle};
use mtls_jwt::{JwksSource, KeySet, Validator};
use mtls_tonic::{JwtRules, MethodPolicy};

/// One bookstore replica: mTLS + SPIFFE authorization + JWT, or plaintext behind a sidecar.
#[derive(Debug, Parser)]
#[command(name = "bookstore-server", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Trust bundle (CA certificates, PEM) that client certificates must chain to.
    #[arg(long, required_unless_present = "plaintext")]
    ca: Option<PathBuf>,
    /// Our certificate chain (leaf first, PEM).
    #[arg(long, required_unless_present = "plaintext")]
    cert: Option<PathBuf>,
    /// Our private key (PEM).
    #[arg(long, required_unless_present = "plaintext")]
    key: Option<PathBuf>,
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    bookstore::init_logging("warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bookstore-server: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookstore-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
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
        mtls(&args)?
    };
    let listener = server::bind(args.listen, args.plaintext).await?;
    let handle = server::spawn(listener, service, security)?;
    println!(
        "bookstore-server {replica} listening on {} — {describe}",
        handle.addr()
    );
    tokio::select! {
        result = handle.wait() => result,
        _ = shutdown_signal() => {
            println!("bookstore-server {replica}: stopping");
            Ok(())
        }
    }
}

fn mtls(args: &Args) -> Result<(Security, String), Error> {
    let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
        return Err(Error::Config(
            "--ca, --cert and --key are required without --plaintext".into(),
        ));
    };
    let tls_error = |what: &str, e: mtls_core::Error| Error::Tls {
        context: what.to_owned(),
        source: e,
    };
    let identity = Identity::from_pem_files(cert, key).map_err(|e| {
        tls_error(
            &format!(
                "loading our certificate (--cert {}) and key (--key {})",
                cert.display(),
                key.display()
            ),
            e,
        )
    })?;
    let ca_pem = std::fs::read(ca).map_err(|e| Error::File {
        what: "reading the trust bundle (--ca)".into(),
        path: ca.clone(),
        source: e,
    })?;
    // A SPIFFE bundle for our own trust domain when we have a SPIFFE ID, else a plain one.
    let own_td = identity.spiffe_id().map(|id| id.trust_domain().clone());
    let trust = match &own_td {
        Some(td) => TrustBundle::spiffe().with_domain_pem(td.clone(), &ca_pem),
        None => TrustBundle::from_pem(&ca_pem),
    }
    .map_err(|e| {
        tls_error(
            &format!("loading the trust bundle (--ca {})", ca.display()),
            e,
        )
    })?;
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
    let tls = ServerConfigBuilder::new(Arc::new(identity), Arc::new(trust))
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
    let mut describe = format!("mTLS, callers: {allowed}");
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
