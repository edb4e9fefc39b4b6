//! The bodies of the mtls fuzz targets, as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` is one line: `fuzz_target!(|data| mtls_fuzz::<name>(data))`.
//! Keeping the bodies here means they build on stable, and `tests/seeds.rs` runs every
//! committed seed through them in `ci.sh` — the targets cannot rot, and a crash once found
//! stays fixed (its input is kept under `seeds/<name>/`).
//!
//! A target "crashes" on a panic: either one inside the code under test, or a failed
//! `assert!` here stating a property — a differential check against a reference (the
//! go-spiffe SPIFFE ID rules, rustls-pki-types' PEM reader, x509-parser's SPKI reader) or a
//! round trip (parse → display → parse).

#![forbid(unsafe_code)]

mod authority;
mod cfssl;
mod csr;
mod jwks;
mod jwt;
mod pem;
pub mod reference;
mod san_matcher;
mod spiffe_bundle;
mod spiffe_id;
mod spki;

pub use authority::authority;
pub use cfssl::cfssl_json;
pub use csr::csr;
pub use jwks::jwks;
pub use jwt::jwt;
pub use pem::pem;
pub use san_matcher::san_matcher;
pub use spiffe_bundle::spiffe_bundle;
pub use spiffe_id::spiffe_id;
pub use spki::spki;

/// A target body: panics when the input shows a defect.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo fuzz` knows them (`fuzz_targets/<name>.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("authority", authority),
    ("cfssl_json", cfssl_json),
    ("csr", csr),
    ("jwks", jwks),
    ("jwt", jwt),
    ("pem", pem),
    ("san_matcher", san_matcher),
    ("spiffe_bundle", spiffe_bundle),
    ("spiffe_id", spiffe_id),
    ("spki", spki),
];
