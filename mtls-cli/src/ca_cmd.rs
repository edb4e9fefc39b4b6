//! `mtls ca ...`: create and extend certificate authorities.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use mtls_certs::{CaParams, CertificateAuthority, KeyAlgorithm};

use crate::output::{
    CliResult, check_key_free, ensure_dir, file_in, parse_duration, read_text, write_key,
    write_public,
};

/// Certificate authority commands.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a self-signed root CA: DIR/ca.pem, DIR/ca-key.pem (pathlen 1, 10 years).
    Init(InitArgs),
    /// Create an intermediate CA signed by the CA in --ca: DIR2/ca.pem (intermediate, then
    /// any intermediates above it), DIR2/ca-key.pem, DIR2/root.pem (pathlen 0, 5 years).
    Intermediate(IntermediateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Common name of the CA.
    #[arg(long, default_value = "mtls root CA")]
    cn: String,
    /// Key algorithm: p256, p384, ed25519, rsa2048, rsa3072, rsa4096.
    #[arg(long, default_value = "p256")]
    key_alg: KeyAlgorithm,
    /// Lifetime (e.g. 87600h, 3650d).
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    ttl: Duration,
    /// Path length constraint.
    #[arg(long, default_value_t = 1)]
    path_len: u8,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IntermediateArgs {
    /// Directory of the signing CA (ca.pem, ca-key.pem).
    #[arg(long)]
    ca: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Common name of the intermediate.
    #[arg(long, default_value = "mtls intermediate CA")]
    cn: String,
    /// Key algorithm.
    #[arg(long, default_value = "p256")]
    key_alg: KeyAlgorithm,
    /// Lifetime (never beyond the signing CA's).
    #[arg(long, default_value = "43800h", value_parser = parse_duration)]
    ttl: Duration,
    /// Path length constraint (at most the signing CA's minus one).
    #[arg(long, default_value_t = 0)]
    path_len: u8,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

impl CaCommand {
    pub(crate) fn run(self) -> CliResult {
        match self {
            Self::Init(a) => {
                let key_path = file_in(&a.out, "ca-key.pem");
                let params = CaParams::new(a.cn)
                    .key_algorithm(a.key_alg)
                    .valid_for(a.ttl)
                    .path_len(a.path_len);
                // Inputs checked (the CA made, in memory) before the overwrite check.
                let ca = CertificateAuthority::new_root(&params)?;
                check_key_free(&key_path, a.force)?;
                ensure_dir(&a.out)?;
                write_key(&key_path, &ca.key_pem(), a.force)?;
                write_public(&file_in(&a.out, "ca.pem"), &ca.cert_pem())?;
                Ok(())
            }
            Self::Intermediate(a) => {
                let parent = load_ca_dir(&a.ca)?;
                let key_path = file_in(&a.out, "ca-key.pem");
                let params = CaParams::new(a.cn)
                    .key_algorithm(a.key_alg)
                    .valid_for(a.ttl)
                    .path_len(a.path_len);
                let ca = parent.new_intermediate(&params)?;
                check_key_free(&key_path, a.force)?;
                ensure_dir(&a.out)?;
                write_key(&key_path, &ca.key_pem(), a.force)?;
                write_public(&file_in(&a.out, "ca.pem"), &ca.chain_pem())?;
                if let Some(root) = ca.root_pem() {
                    write_public(&file_in(&a.out, "root.pem"), &root)?;
                }
                Ok(())
            }
        }
    }
}

/// Loads the CA in `dir`: `ca.pem` (CA cert, then intermediates above it), `ca-key.pem`, and
/// `root.pem` when present (so issued chains know their root).
pub(crate) fn load_ca_dir(dir: &Path) -> CliResult<CertificateAuthority> {
    let mut cert_pem = read_text(&dir.join("ca.pem"))?;
    let root = dir.join("root.pem");
    if root.exists() {
        cert_pem.push_str(&read_text(&root)?);
    }
    let key_pem = read_text(&dir.join("ca-key.pem"))?;
    CertificateAuthority::from_pem(&cert_pem, &key_pem)
        .map_err(|e| format!("CA in {}: {e}", dir.display()).into())
}
