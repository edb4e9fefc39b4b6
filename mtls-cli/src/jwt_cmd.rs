//! `mtls jwt keygen|jwks|mint|verify`: signing keys, JWKS documents, dev tokens and a
//! verifier with Envoy's failure names (all from `mtls-jwt`).

use crate::output::outln;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use mtls_jwt::{Algorithm, JwksSource, KeySet, PublicKey, SigningKey, TokenSpec, Validator};

use crate::output::{
    CliResult, check_key_free, ensure_dir, file_in, parse_duration, read_text, write_key,
    write_public,
};

/// JWT signing keys, JWKS, dev tokens and verification.
#[derive(Debug, Subcommand)]
pub(crate) enum JwtCommand {
    /// Generate a signing key: DIR/NAME-key.pem (mode 0600) and DIR/NAME.pub.pem.
    Keygen(KeygenArgs),
    /// Print a JWKS for public (or private) key PEM files; kid = RFC 7638 thumbprint.
    Jwks(JwksArgs),
    /// Mint a signed token and print it.
    Mint(MintArgs),
    /// Verify a token against a JWKS file or URL; print its claims as JSON.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Algorithm: ES256, ES384, ES512, RS256 (RSA 2048; also PS256...), EdDSA.
    #[arg(long, default_value = "ES256", value_parser = parse_alg)]
    alg: Algorithm,
    /// Output directory.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Base name of the files.
    #[arg(long)]
    name: String,
    /// Overwrite an existing key file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JwksArgs {
    /// PEM files (public keys, or private keys whose public half is used).
    #[arg(required = true)]
    keys: Vec<PathBuf>,
    /// Key ids, in the order of the files (default: each key's RFC 7638 thumbprint).
    #[arg(long)]
    kid: Vec<String>,
    /// The `alg` for RSA keys (default RS256); EC and Ed25519 keys have one algorithm.
    #[arg(long, value_parser = parse_alg)]
    alg: Option<Algorithm>,
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    /// Private key PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    key: PathBuf,
    /// `iss`.
    #[arg(long)]
    iss: String,
    /// `aud` (repeat for several).
    #[arg(long, required = true)]
    aud: Vec<String>,
    /// `sub`.
    #[arg(long)]
    sub: String,
    /// Lifetime: `5m`, `1h`, `24h`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Header `kid` (default: the key's thumbprint, as `mtls jwt jwks` gives it).
    #[arg(long)]
    kid: Option<String>,
    /// Leave `kid` out (validators then try every key of the algorithm).
    #[arg(long, conflicts_with = "kid")]
    no_kid: bool,
    /// Signing algorithm for RSA keys (default RS256; PS256...).
    #[arg(long, value_parser = parse_alg)]
    alg: Option<Algorithm>,
    /// Extra claim `name=value`; the value is JSON if it parses as JSON, else a string.
    #[arg(long = "claim", value_parser = parse_claim)]
    claims: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("token_source").required(true).args(["token", "token_file"])))]
pub(crate) struct VerifyArgs {
    /// JWKS file, or an https:// (or loopback http://) URL.
    #[arg(long)]
    jwks: String,
    /// Accepted issuer (repeat for several).
    #[arg(long, required = true)]
    iss: Vec<String>,
    /// Accepted audience (repeat for several).
    #[arg(long, required = true)]
    aud: Vec<String>,
    /// Clock skew allowed on exp/nbf.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    clock_skew: Duration,
    /// The token, bare or as an `authorization` value (`Bearer <token>`, read by the same
    /// parser as the library's and JwtLayer's); `-` reads it from stdin. An argument is
    /// visible to other users in `ps`: prefer `-` or `--token-file`.
    token: Option<String>,
    /// Read the token from this file (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl VerifyArgs {
    /// The token text, from the argument, stdin (`-`) or `--token-file`.
    fn token_text(&self) -> CliResult<String> {
        match (&self.token, &self.token_file) {
            (_, Some(path)) => read_text(path).map_err(|e| format!("--token-file: {e}").into()),
            (Some(dash), None) if dash == "-" => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| format!("reading the token from stdin (-): {e}"))?;
                Ok(text)
            }
            (Some(token), None) => Ok(token.clone()),
            (None, None) => {
                Err("no token: give it as an argument, - (stdin) or --token-file".into())
            }
        }
    }
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    s.parse().map_err(|e: mtls_jwt::Error| e.to_string())
}

fn parse_claim(s: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=value, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("empty claim name in {s:?}"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
    Ok((name.to_owned(), value))
}

fn public_key_of(pem: &str) -> CliResult<PublicKey> {
    match PublicKey::from_pem(pem) {
        Ok(key) => Ok(key),
        Err(public_err) => match SigningKey::from_pem(pem) {
            Ok(private) => Ok(private.public_key().clone()),
            Err(_) => Err(public_err.into()),
        },
    }
}

impl JwtCommand {
    pub(crate) fn run(self) -> CliResult {
        match self {
            Self::Keygen(a) => {
                let key_path = file_in(&a.out, &format!("{}-key.pem", a.name));
                let pub_path = file_in(&a.out, &format!("{}.pub.pem", a.name));
                check_key_free(&key_path, a.force)?;
                let key = SigningKey::generate(a.alg)?;
                ensure_dir(&a.out)?;
                write_key(&key_path, &key.private_pem(), a.force)?;
                write_public(&pub_path, &key.public_pem())?;
                outln!("kid {}", key.kid());
                Ok(())
            }
            Self::Jwks(a) => {
                if a.kid.len() > a.keys.len() {
                    return Err(format!(
                        "{} --kid values for {} key files",
                        a.kid.len(),
                        a.keys.len()
                    )
                    .into());
                }
                let mut jwks = Vec::with_capacity(a.keys.len());
                for (i, path) in a.keys.iter().enumerate() {
                    let key = public_key_of(&read_text(path)?)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let alg = match a.alg {
                        Some(alg) if key.algorithm() == Algorithm::RS256 => alg,
                        _ => key.algorithm(),
                    };
                    jwks.push(key.to_jwk_for(a.kid.get(i).map(String::as_str), alg));
                }
                outln!("{}", mtls_jwt::jwks_json(jwks));
                Ok(())
            }
            Self::Mint(a) => {
                let mut key = SigningKey::from_pem(&read_text(&a.key)?)
                    .map_err(|e| format!("{}: {e}", a.key.display()))?;
                if let Some(alg) = a.alg {
                    key = key.signing_algorithm(alg)?;
                }
                let mut spec = TokenSpec::new(a.ttl).issuer(a.iss).subject(a.sub);
                for aud in a.aud {
                    spec = spec.audience(aud);
                }
                for (name, value) in a.claims {
                    spec = spec.claim(name, value);
                }
                spec = match (a.kid, a.no_kid) {
                    (Some(kid), _) => spec.kid(kid),
                    (None, true) => spec.no_kid(),
                    (None, false) => spec,
                };
                outln!("{}", key.mint(&spec)?);
                Ok(())
            }
            Self::Verify(a) => {
                // Read first: a missing token file fails before any JWKS fetch.
                let text = a.token_text()?;
                let set = if a.jwks.starts_with("https://") || a.jwks.starts_with("http://") {
                    fetch_blocking(&a.jwks, Duration::from_secs(10))
                        .map_err(|e| format!("--jwks {}: {e}", a.jwks))?
                } else {
                    let path = std::path::Path::new(&a.jwks);
                    KeySet::from_json(&read_text(path).map_err(|e| format!("--jwks: {e}"))?)
                        .map_err(|e| format!("--jwks {}: {e}", path.display()))?
                };
                let validator = Validator::builder()
                    .jwks(JwksSource::key_set(set))
                    .issuers(a.iss)
                    .audiences(a.aud)
                    .clock_skew(a.clock_skew)
                    .build()?;
                if text.trim().is_empty() {
                    return Err(
                        "the token is empty (expected a JWT: header.payload.signature)".into(),
                    );
                }
                let token = mtls_jwt::bearer_token(&text).unwrap_or(text.trim());
                let claims = validator.validate_now(token)?;
                outln!("{}", serde_json::to_string_pretty(&claims)?);
                Ok(())
            }
        }
    }
}

/// Fetches a JWKS once, blocking: a current-thread runtime around `KeySet::fetch` (the
/// library's policy: https or loopback http, no redirects, the body limit).
fn fetch_blocking(url: &str, timeout: Duration) -> CliResult<KeySet> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the JWKS fetch: {e}"))?;
    Ok(runtime.block_on(KeySet::fetch(url, timeout))?)
}
