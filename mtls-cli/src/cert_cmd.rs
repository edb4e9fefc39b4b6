//! `mtls cert ...`: issue, sign, inspect, verify and check certificates.

use crate::output::{out, outln, rfc3339};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use mtls_certs::{
    CertificateSigningRequest, CertificateSummary, CsrPolicy, KeyAlgorithm, LeafParams, Profile,
    RenewalPolicy, SanPolicy, SubjectAltName, Usage,
};
use time::OffsetDateTime;

use crate::ca_cmd::load_ca_dir;
use crate::output::{
    CliResult, check_key_free, ensure_dir, file_in, parse_duration, read_text, write_key,
    write_public,
};

/// Certificate commands.
#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Issue a leaf with a fresh key: DIR/NAME.pem (leaf then intermediates), DIR/NAME-key.pem.
    Issue(IssueArgs),
    /// Sign a CSR under a policy (CA bit, validity, serial, usages decided by the CA).
    SignCsr(SignCsrArgs),
    /// Show what a certificate says (PEM or DER).
    Inspect(InspectArgs),
    /// Verify a certificate chain against a CA bundle (rustls-webpki).
    Verify(VerifyArgs),
    /// Say whether a certificate is due for renewal.
    RenewCheck(RenewCheckArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Server,
    Client,
    Peer,
    Svid,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Server => Profile::Server,
            ProfileArg::Client => Profile::Client,
            ProfileArg::Peer => Profile::Peer,
            ProfileArg::Svid => Profile::Svid,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// Directory of the issuing CA (ca.pem, ca-key.pem).
    #[arg(long)]
    ca: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the output files.
    #[arg(long)]
    name: String,
    /// Profile: server, client, peer or svid.
    #[arg(long, value_enum)]
    profile: ProfileArg,
    /// Subject alternative name (IP, e-mail, URI or DNS name, classified as cfssl does); repeatable.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// SPIFFE ID (URI SAN); required for --profile svid.
    #[arg(long, required_if_eq("profile", "svid"))]
    spiffe_id: Option<String>,
    /// Common name (default: the first DNS SAN).
    #[arg(long)]
    cn: Option<String>,
    /// Lifetime (clamped to the CA's).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
    /// Key algorithm.
    #[arg(long, default_value = "p256")]
    key_alg: KeyAlgorithm,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SignCsrArgs {
    /// Directory of the issuing CA.
    #[arg(long)]
    ca: PathBuf,
    /// The CSR (PEM).
    csr: PathBuf,
    /// Profile deciding key usages and SAN rules.
    #[arg(long, value_enum, default_value = "peer")]
    profile: ProfileArg,
    /// Only allow SPIFFE IDs in this trust domain as SANs.
    #[arg(long)]
    trust_domain: Option<String>,
    /// Issue CA:FALSE for a CSR asking CA:TRUE (default: refuse it).
    #[arg(long)]
    strip_ca: bool,
    /// Lifetime.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
    /// Write the chain to this file instead of stdout. (`--out` is a directory in the other
    /// subcommands; the old spelling `--out FILE` still works here.)
    #[arg(long = "out-file", alias = "out", value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Certificate file (PEM or DER); with several certificates, all are shown.
    file: PathBuf,
    /// Print JSON (an object for one certificate, an array for several).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Trusted CA bundle file (PEM), like openssl's -CAfile. (`--ca` is a CA directory in
    /// the other subcommands; the old spelling `--ca FILE` still works here.)
    #[arg(long = "ca-file", alias = "ca", value_name = "FILE")]
    ca: PathBuf,
    /// Extra intermediates (PEM), like openssl's -untrusted.
    #[arg(long)]
    untrusted: Option<PathBuf>,
    /// Required usage.
    #[arg(long, value_enum, default_value = "any")]
    usage: UsageArg,
    /// Certificate chain to verify (leaf first).
    cert: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UsageArg {
    Server,
    Client,
    Any,
}

#[derive(Debug, Args)]
pub(crate) struct RenewCheckArgs {
    /// Certificate file.
    cert: PathBuf,
    /// Renew after this fraction of the lifetime: a number in (0, 1] or a ratio like 2/3
    /// (SPIRE renews at 1/2).
    #[arg(long, default_value = "2/3", value_parser = parse_fraction)]
    fraction: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Exit with status 3 when renewal is due.
    #[arg(long)]
    fail_if_due: bool,
}

impl CertCommand {
    pub(crate) fn run(self) -> CliResult {
        match self {
            Self::Issue(a) => issue(a),
            Self::SignCsr(a) => sign_csr(a),
            Self::Inspect(a) => inspect(a),
            Self::Verify(a) => verify(a),
            Self::RenewCheck(a) => renew_check(a),
        }
    }
}

fn issue(a: IssueArgs) -> CliResult {
    let ca = load_ca_dir(&a.ca)?;
    let key_path = file_in(&a.out, &format!("{}-key.pem", a.name));
    let mut params = LeafParams::new(a.profile.into())
        .add_names(&a.sans)
        .key_algorithm(a.key_alg)
        .valid_for(a.ttl);
    if let Some(id) = &a.spiffe_id {
        let id = mtls_core::SpiffeId::new(id).map_err(|e| format!("--spiffe-id: {e}"))?;
        params = params.spiffe_id(id);
    }
    if let Some(cn) = a.cn {
        params = params.common_name(cn);
    }
    // Every input is checked (the leaf is made, in memory) before the overwrite check, so a
    // bad SAN or SPIFFE ID is named as such, not hidden behind "refusing to overwrite".
    let leaf = ca.issue(&params)?;
    check_key_free(&key_path, a.force)?;
    if leaf.certificate().was_clamped() {
        eprintln!(
            "warning: requested lifetime exceeds the CA's; not_after clamped to {}",
            leaf.certificate().not_after()
        );
    }
    ensure_dir(&a.out)?;
    write_key(&key_path, &leaf.key_pem(), a.force)?;
    write_public(
        &file_in(&a.out, &format!("{}.pem", a.name)),
        &leaf.chain_pem(),
    )?;
    Ok(())
}

fn sign_csr(a: SignCsrArgs) -> CliResult {
    let ca = load_ca_dir(&a.ca)?;
    let csr = CertificateSigningRequest::from_pem(&read_text(&a.csr)?)?;
    let mut policy = CsrPolicy::new(a.profile.into()).valid_for(a.ttl);
    if let Some(td) = &a.trust_domain {
        // mtls-core's strict parser: an upper-case or malformed trust domain is refused.
        let td = mtls_core::TrustDomain::new(td).map_err(|e| format!("--trust-domain: {e}"))?;
        policy = policy.san_policy(SanPolicy::SpiffeTrustDomain(td));
    }
    if a.strip_ca {
        policy = policy.stripping_ca_requests();
    }
    let issued = ca.sign_csr(&csr, &policy)?;
    match a.out {
        Some(path) => write_public(&path, &issued.chain_pem())?,
        None => out!("{}", issued.chain_pem()),
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> CliResult {
    let bytes =
        std::fs::read(&a.file).map_err(|e| format!("cannot read {}: {e}", a.file.display()))?;
    let parsed = if bytes.first() == Some(&0x30) {
        mtls_certs::inspect(&bytes).map(|one| vec![one])
    } else {
        let text = String::from_utf8_lossy(&bytes);
        mtls_certs::parse_certificates_pem(&text).and_then(|certs| {
            certs
                .iter()
                .map(|c| CertificateSummary::from_der(c))
                .collect::<Result<_, _>>()
        })
    };
    let summaries: Vec<CertificateSummary> =
        parsed.map_err(|e| format!("{}: {e}", a.file.display()))?;
    if a.json {
        let json = match summaries.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        outln!("{json}");
        return Ok(());
    }
    for (i, s) in summaries.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        print_summary(s)?;
    }
    Ok(())
}

fn print_summary(s: &CertificateSummary) -> CliResult {
    outln!("subject:        {}", s.subject);
    outln!("issuer:         {}", s.issuer);
    outln!("serial:         {}", s.serial);
    outln!("not before:     {}", rfc3339(s.not_before));
    outln!("not after:      {}", rfc3339(s.not_after));
    let sans: Vec<String> = s.sans.iter().map(SubjectAltName::to_string).collect();
    outln!(
        "SANs:           {}",
        if sans.is_empty() {
            "-".into()
        } else {
            sans.join(", ")
        }
    );
    if let Some(id) = &s.spiffe_id {
        outln!("SPIFFE ID:      {id}");
    }
    match (s.is_ca, s.path_len) {
        (true, Some(n)) => outln!("CA:             TRUE, pathlen {n}"),
        (true, None) => outln!("CA:             TRUE"),
        (false, _) => outln!("CA:             FALSE"),
    }
    outln!("key usage:      {}", s.key_usage.join(", "));
    outln!("ext key usage:  {}", s.extended_key_usage.join(", "));
    outln!("public key:     {}", s.public_key);
    outln!(
        "SKI:            {}",
        s.subject_key_id.as_deref().unwrap_or("-")
    );
    outln!(
        "AKI:            {}",
        s.authority_key_id.as_deref().unwrap_or("-")
    );
    outln!("SHA-256:        {}", s.sha256_fingerprint);
    Ok(())
}

fn verify(a: VerifyArgs) -> CliResult {
    let mut chain_pem = read_text(&a.cert)?;
    if let Some(untrusted) = &a.untrusted {
        chain_pem.push_str(&read_text(untrusted)?);
    }
    let bundle_pem = read_text(&a.ca)?;
    let usage = match a.usage {
        UsageArg::Server => Usage::Server,
        UsageArg::Client => Usage::Client,
        UsageArg::Any => Usage::Any,
    };
    mtls_certs::verify_chain_pem(&chain_pem, &bundle_pem, usage).map_err(|e| {
        let untrusted = a
            .untrusted
            .as_ref()
            .map(|u| format!(" (+ --untrusted {})", u.display()))
            .unwrap_or_default();
        format!(
            "{}{untrusted} against --ca-file {}: {e}",
            a.cert.display(),
            a.ca.display()
        )
    })?;
    outln!("{}: OK", a.cert.display());
    Ok(())
}

/// `0.5`, `2/3`: a fraction of a lifetime, in (0, 1].
fn parse_fraction(text: &str) -> Result<f64, String> {
    let bad = || format!("expected a number in (0, 1] or a ratio like 2/3, found {text:?}");
    let value = match text.split_once('/') {
        Some((n, d)) => {
            let n: f64 = n.trim().parse().map_err(|_| bad())?;
            let d: f64 = d.trim().parse().map_err(|_| bad())?;
            n / d
        }
        None => text.trim().parse().map_err(|_| bad())?,
    };
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(bad())
    }
}

fn renew_check(a: RenewCheckArgs) -> CliResult {
    let summary = CertificateSummary::from_pem(&read_text(&a.cert)?)
        .map_err(|e| format!("{}: {e}", a.cert.display()))?;
    let status = RenewalPolicy::fraction(a.fraction).check(&summary, OffsetDateTime::now_utc());
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else if status.expired {
        outln!(
            "{}: EXPIRED at {}; renew now",
            a.cert.display(),
            rfc3339(status.not_after)
        );
    } else if status.due {
        outln!(
            "{}: renewal DUE since {} (expires {})",
            a.cert.display(),
            rfc3339(status.renew_at),
            rfc3339(status.not_after)
        );
    } else {
        outln!(
            "{}: not due; renew at {} (expires {})",
            a.cert.display(),
            rfc3339(status.renew_at),
            rfc3339(status.not_after)
        );
    }
    if a.fail_if_due && status.due {
        std::process::exit(3);
    }
    Ok(())
}
