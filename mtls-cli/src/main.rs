//! `mtls`: the command that replaces cfssl/openssl recipes for mesh certificates.
//!
//! Command groups live in their own modules (`ca_cmd`, `cert_cmd`, `cfssl_cmd`); shared
//! helpers (durations, key files written 0600 and never overwritten without `--force`) in
//! `output`. Adding a group is one [`Command`] variant and one match arm in [`run`].

#![forbid(unsafe_code)]

mod ca_cmd;
mod cert_cmd;
mod cfssl_cmd;
mod jwt_cmd;
mod output;

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
}

fn run(cli: Cli) -> output::CliResult {
    match cli.command {
        Command::Ca(cmd) => cmd.run(),
        Command::Cert(cmd) => cmd.run(),
        Command::Cfssl(cmd) => cmd.run(),
        Command::Jwt(cmd) => cmd.run(),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
