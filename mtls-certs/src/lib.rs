//! # mtls-certs: the careful PKI layer
//!
//! Make mesh certificates the way cfssl, SPIRE and cert-manager make them — without the
//! recipes' subtle mistakes. Built on [rcgen], which does none of the careful parts by default
//! (its default validity is 1975–4096 and its serial a hash of the public key).
//!
//! What this crate does for every certificate:
//! - random positive serial of 153–159 bits from the system CSPRNG (cfssl uses 160);
//! - subject key identifier on every certificate, authority key identifier on every non-root;
//! - `not_before` backdated 5 minutes (configurable) to absorb clock skew;
//! - a leaf never outlives its issuer: the end is **clamped** to the issuer's `not_after`,
//!   logged, and reported by [`IssuedCertificate::was_clamped`];
//! - an expired CA refuses to issue; a CA loaded from PEM must match its key and be a CA;
//! - root pathlen 1 (10 years), intermediate pathlen 0 (5 years), leaf 24 hours by default;
//! - profiles with exact key usages: `server`, `client`, `peer`, `svid` (see [`Profile`]).
//!
//! Also: CSR creation and policy-driven CSR signing ([`CsrPolicy`]), inspection into a typed
//! [`CertificateSummary`], chain verification with rustls-webpki ([`verify_chain`]), renewal
//! checks ([`RenewalPolicy`]) and cfssl compatibility ([`cfssl`]).
//!
//! ## Quick start
//!
//! ```
//! use mtls_certs::{CaParams, CertificateAuthority, LeafParams, verify_chain_pem, Usage};
//!
//! // A root, an intermediate under it, and a SPIFFE SVID from the intermediate.
//! let root = CertificateAuthority::new_root(&CaParams::new("Mesh Root"))?;
//! let intermediate = root.new_intermediate(&CaParams::new("Mesh Intermediate"))?;
//! let svid = intermediate.issue(&LeafParams::svid(
//!     "spiffe://mesh.internal/ns/shop/sa/bookstore".parse()?,
//! ))?;
//!
//! // Files a TLS server wants: chain (leaf, then intermediate) and key.
//! let chain_pem: String = svid.chain_pem();
//! let key_pem: String = svid.key_pem();
//!
//! // Verify with rustls-webpki against the root.
//! let root_pem = root.cert_pem();
//! verify_chain_pem(&chain_pem, &root_pem, Usage::Client)?;
//! # let _ = key_pem;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Expired and not-yet-valid certificates for tests:
//!
//! ```
//! use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
//! use time::{Duration, OffsetDateTime};
//!
//! let ca = CertificateAuthority::new_root(&CaParams::new("Test Root"))?;
//! let now = OffsetDateTime::now_utc();
//! let expired = ca.issue(
//!     &LeafParams::server(["localhost"]).valid_between(now - Duration::hours(2), now - Duration::hours(1)),
//! )?;
//! assert!(expired.certificate().not_after() < now);
//! # Ok::<(), mtls_certs::Error>(())
//! ```
//!
//! ## Crate features
//! One crypto provider (aws-lc-rs), always on. Both features are off by default:
//! - `cfssl`: the `cfssl` module — cfssl CSR and signing-config JSON, `cfssljson -bare`
//!   outputs. Brings `serde_json` (and turns on `serde`).
//! - `serde`: `serde::Serialize` for [`CertificateSummary`], [`RenewalStatus`],
//!   [`SubjectAltName`], [`KeyAlgorithm`] and [`Profile`] (the CLI's `--json` output), times
//!   as RFC 3339. Brings `serde` and time's serde support.
//!
//! ## Dependencies and why
//! - `mtls-identity` — the family's shared vocabulary: [`SubjectAltName`], [`Serial`] (one
//!   text form for serials), the strict [`SpiffeId`] / [`TrustDomain`], PEM and webpki errors
//!   in words.
//! - `rcgen` — X.509 encoding and signing of certificates and CSRs (aws-lc-rs backend).
//! - `aws-lc-rs` — key generation (RSA included), CSPRNG for serials, SHA-256 fingerprints;
//!   the one crypto provider of the workspace.
//! - `x509-parser` — reading certificates and CSRs, and checking CSR signatures.
//! - `rustls-webpki` — chain verification: the verifier rustls uses, not a hand-rolled one.
//! - `rustls-pki-types` — DER/PEM types shared with rustls (`PemObject`).
//! - `time` — validity instants; `serde`/`serde_json` (features `serde`, `cfssl`) — cfssl
//!   JSON and `--json` output;
//!   `base64` — PEM encoding; `thiserror` — [`Error`]; `tracing` — logs.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the items of every feature (docs.rs builds with all of them); a
// build with fewer features has nothing to link to.
#![cfg_attr(not(feature = "cfssl"), allow(rustdoc::broken_intra_doc_links))]

mod ca;
#[cfg(feature = "cfssl")]
#[cfg_attr(docsrs, doc(cfg(feature = "cfssl")))]
pub mod cfssl;
mod csr;
mod error;
pub mod files;
mod inspect;
mod issued;
mod key;
mod leaf;
mod pem;
mod profile;
mod renew;
mod san;
mod serial;
mod spiffe_id;
mod subject;
mod validity;
mod verify;

pub use ca::{CaParams, CertificateAuthority};
pub use csr::{CaRequest, CertificateSigningRequest, CsrParams, CsrPolicy, SanPolicy};
pub use error::{Error, Result};
pub use inspect::{CertificateSummary, inspect};
pub use issued::{Credential, IssuedCertificate};
pub use key::{KeyAlgorithm, KeyPair};
pub use leaf::LeafParams;
pub use mtls_identity::Serial;
pub use mtls_identity::{SpiffeId, TrustDomain};
pub use pem::parse_certificates_pem;
pub use profile::Profile;
pub use renew::{RenewalPolicy, RenewalStatus};
pub use san::SubjectAltName;
pub use subject::{Subject, SubjectAttribute};
pub use validity::{
    DEFAULT_BACKDATE, DEFAULT_INTERMEDIATE_TTL, DEFAULT_LEAF_TTL, DEFAULT_ROOT_TTL, Validity,
};
pub use verify::{Usage, verify_chain, verify_chain_at, verify_chain_pem};
