//! `mtls`: the command that replaces cfssl/openssl recipes for mesh certificates.
//!
//! Command groups live in their own modules (`ca_cmd`, `cert_cmd`, `cfssl_cmd`); shared
//! helpers (durations, key files written 0600 and never overwritten without `--force`) in
//! `output`. Adding a group is one [`Command`] variant and one match arm in [`run`].

#![forbid(unsafe_code)]

mod bundle_cmd;
mod ca_cmd;
mod cert_cmd;
mod cfssl_cmd;
mod jwt_cmd;
mod output;
mod probe_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mTLS certificates for service meshes: CAs, SPIFFE SVIDs, server/client certs, cfssl import.
#[derive(Debug, Parser)]
#[command(name = "mtls", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SPIFFE bundles: make from CA PEMs and JWKS, show, convert between PEM and SPIFFE JSON.
    #[command(subcommand)]
    Bundle(bundle_cmd::BundleCommand),
    /// Create root and intermediate certificate authorities.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// Issue, sign, inspect, verify and renewal-check certificates.
    #[command(subcommand)]
    Cert(cert_cmd::CertCommand),
    /// cfssl-compatible initca/gencert from cfssl JSON inputs.
    #[command(subcommand)]
    Cfssl(cfssl_cmd::CfsslCommand),
    /// JWT signing keys, JWKS, dev tokens and verification.
    #[command(subcommand)]
    Jwt(jwt_cmd::JwtCommand),
    /// One TLS handshake with HOST:PORT, explained: what the server presented, what was
    /// negotiated, whether our verifier accepts it (exit 0 accepted, 3 refused by policy,
    /// 4 TLS failed, 5 not TLS, 6 unreachable).
    Probe(probe_cmd::ProbeArgs),
}

fn run(cli: Cli) -> output::CliResult<ExitCode> {
    match cli.command {
        Command::Bundle(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Ca(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Cert(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Cfssl(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Jwt(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Probe(cmd) => cmd.run(),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        // `mtls … | head -1`: the reader is gone, nothing more to say.
        Err(e) if output::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
