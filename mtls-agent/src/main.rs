//! `mtls-agent`: the SPIFFE Workload API and Envoy SDS on Unix sockets, with short-lived
//! SVIDs from a local CA. See the crate docs of `mtls_agent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mtls_agent::{Agent, AgentConfig, Limits, Registration};
use tokio::signal::unix::{SignalKind, signal};

/// A local identity agent: SPIFFE Workload API + Envoy SDS, short-lived rotated SVIDs.
#[derive(Debug, Parser)]
#[command(name = "mtls-agent", version)]
struct Args {
    /// Trust domain of every SVID (e.g. bookstore.local).
    #[arg(long, env = "MTLS_AGENT_TRUST_DOMAIN")]
    trust_domain: String,
    /// Registration file (YAML/JSON): selectors (uid, gid, exe, sds_node_id) → SPIFFE ID.
    #[arg(long, env = "MTLS_AGENT_REGISTRATION")]
    registration: PathBuf,
    /// Unix socket for the SPIFFE Workload API.
    #[arg(long, env = "MTLS_AGENT_SOCKET")]
    socket: PathBuf,
    /// Unix socket for Envoy SDS (off unless given).
    #[arg(long, env = "MTLS_AGENT_SDS_SOCKET")]
    sds_socket: Option<PathBuf>,
    /// Directory keeping the CA and JWT key (created on first run; keys 0600).
    #[arg(long, env = "MTLS_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Use this CA certificate (PEM) instead of the state directory's.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// Key of --ca-cert (PEM).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// X509-SVID lifetime; rotated at half of it.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    svid_ttl: Duration,
    /// JWT-SVID lifetime.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    jwt_ttl: Duration,
    /// Open connections over both sockets (keep it well below `ulimit -n`).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Open connections of one Unix uid over both sockets.
    #[arg(long, default_value_t = Limits::default().max_connections_per_uid)]
    max_connections_per_uid: usize,
    /// Close a connection with no call in flight that sent nothing for this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// SPIFFE Filesystem Delivery: write the SVID of --deliver-id and the trust bundle into
    /// this folder (credential-bundle.private-key.pem, <td>.spiffe-trust-bundle.pem),
    /// atomically, on every rotation.
    #[arg(long, requires = "deliver_id")]
    deliver_to: Option<PathBuf>,
    /// The registered SPIFFE ID whose SVID --deliver-to writes.
    #[arg(long, requires = "deliver_to")]
    deliver_id: Option<String>,
    /// After each delivery, send this signal (SIGHUP, SIGUSR1, ...) to --renew-pid
    /// (spiffe-helper's renew_signal).
    #[arg(long, requires_all = ["renew_pid", "deliver_to"])]
    renew_signal: Option<String>,
    /// The process --renew-signal goes to.
    #[arg(long, requires = "renew_signal")]
    renew_pid: Option<i32>,
    /// Serve this trust domain's SPIFFE bundle endpoint (HTTPS) on ADDR (e.g. 127.0.0.1:8443).
    #[arg(long, value_name = "ADDR")]
    bundle_endpoint_listen: Option<std::net::SocketAddr>,
    /// Profile https_spiffe: the SPIFFE ID the endpoint presents (an SVID the agent issues).
    #[arg(
        long,
        value_name = "SPIFFE_ID",
        requires = "bundle_endpoint_listen",
        conflicts_with = "bundle_endpoint_cert"
    )]
    bundle_endpoint_id: Option<String>,
    /// Profile https_web: the endpoint's certificate chain (PEM), with --bundle-endpoint-key.
    #[arg(long, value_name = "FILE", requires_all = ["bundle_endpoint_key", "bundle_endpoint_listen"])]
    bundle_endpoint_cert: Option<PathBuf>,
    /// Key of --bundle-endpoint-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "bundle_endpoint_cert")]
    bundle_endpoint_key: Option<PathBuf>,
    /// spiffe_refresh_hint of the bundle served.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    bundle_refresh_hint: Duration,
    /// Federate with a trust domain (repeat for several):
    /// `TD,URL,https_spiffe,ENDPOINT_SPIFFE_ID,INITIAL_BUNDLE_FILE` or `TD,URL,https_web,CA_FILE`
    /// (bundle files PEM or SPIFFE JSON).
    #[arg(long, value_name = "SPEC")]
    federate: Vec<String>,
    /// Rotate the CA this often (off by default): a new CA joins the trust bundle at once
    /// (old and new roots, spiffe_sequence + 1), issues the SVIDs after
    /// --ca-activation-delay, and the old root leaves the bundle once its SVIDs have expired.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    rotate_ca_every: Option<Duration>,
    /// How long a rotated CA is only in the bundle before it issues SVIDs (default: the
    /// --bundle-refresh-hint when a bundle endpoint is served, so federated peers fetch the
    /// new root first; else 0).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ca_activation_delay: Option<Duration>,
    /// Serve Prometheus text metrics (SVIDs issued, rotations, connections, refused callers)
    /// on http://ADDR/metrics; without a value on 127.0.0.1:9464 (loopback). Needs a build
    /// with the `metrics` feature.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtls-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr)?;
    }
    let trust_domain = mtls_identity::TrustDomain::new(&args.trust_domain)
        .map_err(|e| format!("--trust-domain: {e}"))?;
    let registration = Registration::from_file(&args.registration)?;
    let mut limits = Limits::default();
    limits.max_connections = args.max_connections;
    limits.max_connections_per_uid = args.max_connections_per_uid;
    limits.idle_timeout = args.idle_timeout;
    let mut config = AgentConfig::new(trust_domain, &args.socket, registration)
        .limits(limits)
        .registration_file(&args.registration)
        .svid_ttl(args.svid_ttl)
        .jwt_ttl(args.jwt_ttl);
    if let Some(p) = &args.sds_socket {
        config = config.sds_socket(p);
    }
    if let Some(dir) = &args.state_dir {
        config = config.state_dir(dir);
    }
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        config = config.ca(mtls_certs::CertificateAuthority::from_pem(
            &read(cert)?,
            &read(key)?,
        )?);
    }
    if let (Some(dir), Some(id)) = (&args.deliver_to, &args.deliver_id) {
        let id = mtls_identity::SpiffeId::new(id).map_err(|e| format!("--deliver-id: {e}"))?;
        let mut delivery = mtls_agent::Delivery::new(dir, id);
        if let (Some(signal), Some(pid)) = (&args.renew_signal, args.renew_pid) {
            delivery = delivery.renew_signal(pid, signal)?;
        }
        config = config.deliver(delivery);
    }
    if let Some(addr) = args.bundle_endpoint_listen {
        let profile = match (
            &args.bundle_endpoint_id,
            &args.bundle_endpoint_cert,
            &args.bundle_endpoint_key,
        ) {
            (Some(id), None, _) => mtls_agent::ServeProfile::HttpsSpiffe {
                endpoint_id: mtls_identity::SpiffeId::new(id)
                    .map_err(|e| format!("--bundle-endpoint-id: {e}"))?,
            },
            (None, Some(cert), Some(key)) => mtls_agent::ServeProfile::HttpsWeb {
                chain_pem: read_file(cert)?,
                key_pem: read_file(key)?,
            },
            _ => {
                return Err(
                    "--bundle-endpoint-listen: expected --bundle-endpoint-id (https_spiffe) \
                    or --bundle-endpoint-cert and --bundle-endpoint-key (https_web)"
                        .into(),
                );
            }
        };
        config = config.serve_bundle_endpoint(addr, profile, args.bundle_refresh_hint);
    }
    if let Some(every) = args.rotate_ca_every {
        config = config.rotate_ca_every(every);
    }
    if let Some(delay) = args.ca_activation_delay {
        config = config.ca_activation_delay(delay);
    }
    for spec in &args.federate {
        config = config
            .federate_with(federation_spec(spec).map_err(|e| format!("--federate {spec:?}: {e}"))?);
    }
    let agent = Agent::start(config).await?;
    if let Some(addr) = agent.bundle_endpoint_addr() {
        eprintln!("mtls-agent: bundle endpoint on https://{addr}/");
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signal = loop {
        tokio::select! {
            _ = hup.recv() => match agent.reload_registration() {
                Ok(generation) => tracing::info!(generation, "SIGHUP: registration re-read, SVIDs rotated"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed; keeping the current registration"),
            },
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    let sockets = std::iter::once(&args.socket)
        .chain(&args.sds_socket)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Dropping the agent stops serving and removes the sockets it created.
    drop(agent);
    tracing::info!("mtls-agent stopping on {signal}: stopped serving, removed {sockets}");
    Ok(())
}

fn read_file(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// `TD,URL,https_spiffe,ENDPOINT_SPIFFE_ID,INITIAL_BUNDLE_FILE` or `TD,URL,https_web,CA_FILE`.
fn federation_spec(spec: &str) -> Result<mtls_core::BundleEndpoint, Box<dyn std::error::Error>> {
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [td, url, "https_spiffe", id, initial] => {
            let td: mtls_core::TrustDomain = td.parse()?;
            let endpoint_id: mtls_core::SpiffeId = id.parse()?;
            let text = read_file(&PathBuf::from(initial))?;
            let bundle = if text.trim_start().starts_with('{') {
                mtls_core::SpiffeBundle::parse(endpoint_id.trust_domain().clone(), &text)?
            } else {
                mtls_core::SpiffeBundle::new(endpoint_id.trust_domain().clone())
                    .add_x509_authorities_pem(&text)?
            };
            Ok(mtls_core::BundleEndpoint::https_spiffe(td, url, endpoint_id, bundle)?)
        }
        [td, url, "https_web", ca] => Ok(mtls_core::BundleEndpoint::https_web(
            td.parse()?,
            url,
            read_file(&PathBuf::from(ca))?,
        )?),
        _ => Err("expected TD,URL,https_spiffe,ENDPOINT_SPIFFE_ID,INITIAL_BUNDLE_FILE or TD,URL,https_web,CA_FILE".into()),
    }
}

/// Installs the Prometheus recorder and serves its text on `addr` (bound before returning).
#[cfg(feature = "metrics")]
fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    mtls_agent::metrics::describe();
    eprintln!("mtls-agent: metrics on http://{addr}/metrics");
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    Err(format!(
        "--metrics-listen {addr}: this mtls-agent was built without the `metrics` feature \
         (cargo install mtls-agent --features metrics)"
    )
    .into())
}
