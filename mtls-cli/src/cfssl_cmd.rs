//! `mtls cfssl ...`: the cfssl + cfssljson recipe, from the same JSON inputs.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mtls_certs::CertificateAuthority;
use mtls_certs::cfssl::{self, CfsslCsr, SigningConfig};

use crate::output::{CliResult, announce, check_key_free, ensure_dir, read_text};

/// cfssl-compatible commands.
#[derive(Debug, Subcommand)]
pub(crate) enum CfsslCommand {
    /// `cfssl genkey -initca CSR.json | cfssljson -bare NAME`: DIR/NAME.pem, NAME-key.pem, NAME.csr.
    Initca(InitcaArgs),
    /// `cfssl gencert -ca -ca-key -config [-profile] CSR.json | cfssljson -bare NAME`.
    Gencert(GencertArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitcaArgs {
    /// cfssl CSR JSON.
    csr: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the outputs (as `cfssljson -bare NAME`).
    #[arg(long, default_value = "ca")]
    bare: String,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GencertArgs {
    /// CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// CA private key (PEM; PKCS#8, SEC1 or PKCS#1).
    #[arg(long)]
    ca_key: PathBuf,
    /// cfssl signing config JSON.
    #[arg(long)]
    config: PathBuf,
    /// Signing profile (default: signing.default).
    #[arg(long)]
    profile: Option<String>,
    /// cfssl CSR JSON.
    csr: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the outputs (default: the CSR file's stem).
    #[arg(long)]
    bare: Option<String>,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

impl CfsslCommand {
    pub(crate) fn run(self) -> CliResult {
        match self {
            Self::Initca(a) => {
                let csr = read_csr(&a.csr)?;
                check_key_free(&a.out.join(format!("{}-key.pem", a.bare)), a.force)?;
                let (_ca, files) = cfssl::initca(&csr)?;
                ensure_dir(&a.out)?;
                files.write_bare(&a.out, &a.bare, a.force)?;
                announce_bare(&a.out, &a.bare)?;
                Ok(())
            }
            Self::Gencert(a) => {
                let ca =
                    CertificateAuthority::from_pem(&read_text(&a.ca)?, &read_text(&a.ca_key)?)?;
                let config = SigningConfig::from_json(&read_text(&a.config)?)
                    .map_err(|e| format!("{}: {e}", a.config.display()))?;
                let csr = read_csr(&a.csr)?;
                let bare = match a.bare {
                    Some(b) => b,
                    None => a
                        .csr
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .ok_or_else(|| format!("cannot derive --bare from {}", a.csr.display()))?,
                };
                check_key_free(&a.out.join(format!("{bare}-key.pem")), a.force)?;
                let files = cfssl::gencert(&ca, &csr, &config, a.profile.as_deref())?;
                ensure_dir(&a.out)?;
                files.write_bare(&a.out, &bare, a.force)?;
                announce_bare(&a.out, &bare)?;
                Ok(())
            }
        }
    }
}

fn read_csr(path: &Path) -> CliResult<CfsslCsr> {
    CfsslCsr::from_json(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn announce_bare(dir: &Path, name: &str) -> CliResult {
    for suffix in [".pem", "-key.pem", ".csr"] {
        announce(&dir.join(format!("{name}{suffix}")))?;
    }
    Ok(())
}
