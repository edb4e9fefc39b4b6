//! cfssl compatibility: read cfssl CSR and signing-config JSON, and write what
//! `cfssljson -bare NAME` writes (`NAME.pem`, `NAME-key.pem`, `NAME.csr`).
//!
//! The cfssl recipe
//! `cfssl genkey -initca ca-csr.json | cfssljson -bare ca` and
//! `cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=server-config.json server.json | cfssljson -bare server`
//! becomes:
//!
//! ```
//! use mtls_certs::cfssl::{self, CfsslCsr, SigningConfig};
//!
//! let ca_csr = CfsslCsr::from_json(r#"{"CN":"app-ca","key":{"algo":"ecdsa","size":256},
//!     "names":[{"O":"app-ca","C":"JP"}],"ca":{"expiry":"876000h"}}"#)?;
//! let (ca, ca_files) = cfssl::initca(&ca_csr)?;
//!
//! let config = SigningConfig::from_json(r#"{"signing":{"default":{"expiry":"876000h",
//!     "usages":["signing","key encipherment","client auth"]}}}"#)?;
//! let client = CfsslCsr::from_json(r#"{"CN":"appclient","hosts":["app-internal-api"]}"#)?;
//! let files = cfssl::gencert(&ca, &client, &config, None)?;
//!
//! let dir = tempfile::tempdir()?;
//! ca_files.write_bare(dir.path(), "ca", false)?;
//! files.write_bare(dir.path(), "client", false)?;
//! assert!(dir.path().join("client-key.pem").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Differences from cfssl, on purpose: keys are written as PKCS#8 (`PRIVATE KEY`, which cfssl
//! also reads) instead of SEC1; a leaf's lifetime is clamped to its CA's (cfssl's own
//! `876000h` CA + `876000h` leaf would otherwise outlive the CA by the seconds between the two
//! commands); `NAME.pem` from an intermediate CA holds the leaf followed by the intermediates.

mod config;
mod csr;
mod duration;

use std::path::Path;

pub use config::{Signing, SigningConfig, SigningProfile};
pub use csr::{CfsslCaConfig, CfsslCsr, CfsslKey, CfsslName};
pub use duration::parse_duration;

use crate::ca::{CaParams, CertificateAuthority};
use crate::csr::{CertificateSigningRequest, CsrParams};
use crate::error::Result;
use crate::files::{write_file, write_private_key};
use crate::key::KeyPair;
use crate::validity::Validity;

/// The three outputs of `cfssljson -bare`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BareFiles {
    /// `NAME.pem`: the certificate (then intermediates, if any).
    pub cert_pem: String,
    /// `NAME-key.pem`: the private key.
    pub key_pem: String,
    /// `NAME.csr`: the CSR made for the key.
    pub csr_pem: String,
}

impl BareFiles {
    /// Writes `NAME.pem`, `NAME-key.pem` (0600; refused if it exists unless `overwrite`)
    /// and `NAME.csr` into `dir`. The key is written first, so a refusal leaves no new files.
    pub fn write_bare(&self, dir: &Path, name: &str, overwrite: bool) -> Result<()> {
        write_private_key(
            &dir.join(format!("{name}-key.pem")),
            &self.key_pem,
            overwrite,
        )?;
        write_file(&dir.join(format!("{name}.pem")), &self.cert_pem)?;
        write_file(&dir.join(format!("{name}.csr")), &self.csr_pem)?;
        Ok(())
    }
}

/// `cfssl genkey -initca`: a self-signed root from a CSR JSON.
///
/// Lifetime from `ca.expiry` (default `43800h`); pathlen from `ca.pathlen` when given
/// (or 0 with `pathlenzero`), else 1.
pub fn initca(csr: &CfsslCsr) -> Result<(CertificateAuthority, BareFiles)> {
    let ca_cfg = csr.ca.clone().unwrap_or_default();
    let expiry = parse_duration(ca_cfg.expiry.as_deref().unwrap_or("43800h"))?;
    let path_len = match ca_cfg.pathlen {
        Some(0) if !ca_cfg.pathlenzero => 1,
        Some(n) => n,
        None if ca_cfg.pathlenzero => 0,
        None => 1,
    };
    let params = CaParams::for_subject(csr.subject())
        .key_algorithm(csr.key_algorithm()?)
        .valid_for(expiry)
        .path_len(path_len);
    let ca = CertificateAuthority::new_root(&params)?;
    let key = KeyPair::from_pem(&ca.key_pem())?;
    let request =
        CertificateSigningRequest::for_key(&CsrParams::new(csr.subject()).requesting_ca(), &key)?;
    let files = BareFiles {
        cert_pem: ca.cert_pem(),
        key_pem: ca.key_pem(),
        csr_pem: request.pem(),
    };
    Ok((ca, files))
}

/// `cfssl gencert`: a fresh key and CSR from a CSR JSON, signed by `ca` with the usages and
/// expiry of the signing profile (`None`: `signing.default`).
pub fn gencert(
    ca: &CertificateAuthority,
    csr: &CfsslCsr,
    config: &SigningConfig,
    profile: Option<&str>,
) -> Result<BareFiles> {
    let profile = config.profile(profile)?;
    let (key_usages, extended_key_usages) = profile.usages()?;
    let validity = Validity::for_ttl(profile.expiry()?);
    let mut params = CsrParams::new(csr.subject()).key_algorithm(csr.key_algorithm()?);
    params.sans = csr.sans();
    let (request, key) = CertificateSigningRequest::generate(&params)?;
    let issued = ca.sign_csr_with_usages(&request, key_usages, extended_key_usages, &validity)?;
    Ok(BareFiles {
        cert_pem: issued.chain_pem(),
        key_pem: key.to_pem(),
        csr_pem: request.pem(),
    })
}
