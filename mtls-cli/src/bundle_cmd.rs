//! `mtls bundle make|show|convert`: SPIFFE bundles (the JWK Set bundle endpoints serve) made
//! from CA PEMs and JWKS documents, shown, and converted to and from PEM (all from
//! `mtls_core::SpiffeBundle`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use mtls_core::{SpiffeBundle, TrustDomain};

use crate::output::{CliResult, outln, parse_duration, read_text, write_public};

/// SPIFFE bundles: make, show, convert between PEM and SPIFFE JSON.
#[derive(Debug, Subcommand)]
pub(crate) enum BundleCommand {
    /// Make a SPIFFE bundle (JSON) from CA certificate PEM files and/or JWKS documents.
    Make(MakeArgs),
    /// Show a bundle (PEM or SPIFFE JSON, detected): authorities, sequence, refresh hint.
    Show(ShowArgs),
    /// Convert a bundle between PEM and SPIFFE JSON.
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MakeArgs {
    /// The trust domain the bundle is for (`example.org`).
    #[arg(long)]
    trust_domain: TrustDomain,
    /// CA certificate PEM files: the X.509 authorities (repeat for several).
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// JWKS documents (`mtls jwt jwks` output): the JWT authorities; each key needs a kid.
    #[arg(long = "jwks", value_name = "FILE")]
    jwks: Vec<PathBuf>,
    /// `spiffe_sequence`.
    #[arg(long)]
    sequence: Option<u64>,
    /// `spiffe_refresh_hint`: `30s`, `5m`.
    #[arg(long, value_parser = parse_duration)]
    refresh_hint: Option<Duration>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The bundle file.
    file: PathBuf,
    /// The trust domain the bundle is for.
    #[arg(long)]
    trust_domain: TrustDomain,
}

/// The format `convert` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// PEM `CERTIFICATE` blocks (X.509 authorities only).
    Pem,
    /// The SPIFFE bundle JSON document.
    Spiffe,
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The bundle file (PEM or SPIFFE JSON, detected).
    file: PathBuf,
    /// The trust domain the bundle is for.
    #[arg(long)]
    trust_domain: TrustDomain,
    /// The output format.
    #[arg(long, value_enum)]
    to: Format,
    /// `spiffe_sequence` of a SPIFFE JSON output (default: the input's).
    #[arg(long)]
    sequence: Option<u64>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out_file: Option<PathBuf>,
}

impl BundleCommand {
    pub(crate) fn run(self) -> CliResult {
        match self {
            Self::Make(args) => make(args),
            Self::Show(args) => show(&args),
            Self::Convert(args) => convert(args),
        }
    }
}

fn make(args: MakeArgs) -> CliResult {
    if args.ca_files.is_empty() && args.jwks.is_empty() {
        return Err("expected at least one --ca-file or --jwks, saw neither".into());
    }
    let mut bundle = SpiffeBundle::new(args.trust_domain);
    for path in &args.ca_files {
        bundle = bundle
            .add_x509_authorities_pem(read_text(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for path in &args.jwks {
        bundle = bundle
            .add_jwks_json(&read_text(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(seq) = args.sequence {
        bundle = bundle.spiffe_sequence(seq);
    }
    if let Some(hint) = args.refresh_hint {
        bundle = bundle.spiffe_refresh_hint(hint);
    }
    emit(&bundle.to_json(), args.out_file.as_deref())
}

/// Reads a bundle file as SPIFFE JSON (first non-blank byte `{`) or PEM.
fn load(path: &Path, trust_domain: &TrustDomain) -> CliResult<SpiffeBundle> {
    let text = read_text(path)?;
    let bundle = if text.trim_start().starts_with('{') {
        SpiffeBundle::parse(trust_domain.clone(), &text)
    } else {
        SpiffeBundle::new(trust_domain.clone()).add_x509_authorities_pem(&text)
    };
    bundle.map_err(|e| format!("{}: {e}", path.display()).into())
}

fn show(args: &ShowArgs) -> CliResult {
    let bundle = load(&args.file, &args.trust_domain)?;
    outln!("{bundle}");
    for der in bundle.x509_authorities() {
        let summary = mtls_certs::inspect(der.as_ref())?;
        outln!(
            "x509-svid  {}  (not after {}, {})",
            summary.subject,
            crate::output::rfc3339(summary.not_after),
            summary.public_key
        );
    }
    for authority in bundle.jwt_authorities() {
        let kty = authority.jwk()["kty"].as_str().unwrap_or("").to_owned();
        outln!("jwt-svid   kid {}  ({kty})", authority.kid());
    }
    if bundle.skipped() > 0 {
        outln!(
            "skipped    {} keys of an unknown use or kty",
            bundle.skipped()
        );
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> CliResult {
    let mut bundle = load(&args.file, &args.trust_domain)?;
    let text = match args.to {
        Format::Pem => {
            if bundle.x509_authorities().is_empty() {
                return Err(format!(
                    "{}: expected X.509 authorities to write as PEM, saw none",
                    args.file.display()
                )
                .into());
            }
            if !bundle.jwt_authorities().is_empty() {
                eprintln!(
                    "warning: PEM holds X.509 authorities only; {} JWT authorities left out",
                    bundle.jwt_authorities().len()
                );
            }
            bundle.to_pem()
        }
        Format::Spiffe => {
            if let Some(seq) = args.sequence {
                bundle = bundle.spiffe_sequence(seq);
            }
            bundle.to_json()
        }
    };
    emit(&text, args.out_file.as_deref())
}

fn emit(text: &str, out_file: Option<&Path>) -> CliResult {
    match out_file {
        Some(path) => write_public(path, text),
        None => {
            crate::output::out!("{text}");
            if !text.ends_with('\n') {
                outln!();
            }
            Ok(())
        }
    }
}
