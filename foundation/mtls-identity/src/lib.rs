//! # mtls-identity: the foundation of the mtls crates
//!
//! The vocabulary every mtls crate shares and none re-models (linkerd keeps its identity
//! types in one small crate the same way):
//!
//! - [`SubjectAltName`] — a SAN as a certificate carries it (DNS, URI, e-mail, IP), with
//!   one text form (`DNS:api.internal`, `IP:10.0.0.1`, `URI:spiffe://…`), and [`SanType`],
//!   Envoy's names for the types (`DNS`, `URI`, `EMAIL`, `IP_ADDRESS`);
//! - [`Serial`] — a certificate serial number, shown one way everywhere (`0a:1b:…`);
//! - [`SpiffeId`] and [`TrustDomain`] — parsed as strictly as go-spiffe parses them (the
//!   `spiffe` crate's own types lower-case and ignore what the spec refuses);
//! - **one rotation model** ([`source`], feature `source`): a [`Source<T>`](source::Source)
//!   readers call `current()` on, the in-memory [`Publisher<T>`](source::Publisher) that
//!   changes it, and the one [`FilePoller`](source::FilePoller) (contents compared, bad
//!   files keep the last good value, one thread per poller). Identities, trust bundles,
//!   JWKS and bearer tokens across the family are all sources;
//! - **leaf facts parsed once** ([`LeafFacts`], feature `x509`): subject, issuer, SANs,
//!   [`Serial`], validity as `SystemTime`, basicConstraints, [`KeyUsage`] and the SPIFFE ID,
//!   read with x509-parser for mtls-core's verifier and mtls-certs' inspection alike;
//! - errors in words: [`pem_error_words`] (rustls-pki-types prints a missing end line as a
//!   byte array) and [`debug_words`] (for errors that only have `Debug`).
//!
//! ```text
//!                 mtls-identity   (foundation/: this crate — vocabulary, no TLS, no runtime)
//!            ▲          ▲           ▲
//!      mtls-certs    mtls-core    mtls-jwt
//!            ▲          ▲           ▲
//!      mtls-agent, mtls-tonic, mtls-cli (each on certs, core and/or jwt)
//! ```
//!
//! ## Quick start
//!
//! ```
//! use mtls_identity::{SanType, Serial, SubjectAltName};
//!
//! let san = SubjectAltName::classify("spiffe://example.org/ns/prod/sa/web").unwrap();
//! assert_eq!(san.san_type(), SanType::Uri);
//! assert_eq!(san.to_string(), "URI:spiffe://example.org/ns/prod/sa/web");
//!
//! let serial = Serial::from(vec![0x0a, 0xff]);
//! assert_eq!(serial.to_string(), "0a:ff");
//! assert_eq!(serial.as_bytes(), [0x0a, 0xff]);
//! ```
//!
//! ## Features
//!
//! - `serde` (off by default): `serde::Serialize` for [`SubjectAltName`]
//!   (`{"type": "dns", "value": "…"}`) and [`Serial`] (its text), `Serialize` and
//!   `Deserialize` for [`SanType`] (Envoy's names). Brings `serde`.
//! - `source` (off by default): the [`source`] module. Brings `tokio` with its `sync`
//!   feature only (the `watch` channel a `Source` is; no runtime, no
//!   I/O driver) and `tracing` (the poller's warnings about bad files; `std` only). The
//!   poller itself is `std` (a thread, `std::fs`, `std::sync::mpsc`): no further crate.
//! - `x509` (off by default): [`LeafFacts`], [`KeyUsage`], [`parse_certificate`] and
//!   `SubjectAltName::from_general_name`. Brings `x509-parser` (its types appear in
//!   `parse_certificate`, `LeafFacts::from_x509` and `from_general_name`).
//!
//! ## Dependencies and why
//!
//! - `spiffe` (no features) — the SPIFFE ID types behind ours (`as_spiffe()`, `From`,
//!   `TryFrom`), for its Workload API client.
//! - `rustls-pki-types` — the PEM error type [`pem_error_words`] puts into words (the PEM
//!   parser every mtls crate uses).
//! - `thiserror` — the [`Error`] enum; `serde` (feature `serde`) — see above.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the items of every feature (docs.rs builds with all of them); a
// build with fewer features has nothing to link to.
#![cfg_attr(
    not(all(feature = "source", feature = "x509")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod error;
#[cfg(feature = "x509")]
#[cfg_attr(docsrs, doc(cfg(feature = "x509")))]
mod leaf;
mod san;
mod serial;
#[cfg(feature = "source")]
#[cfg_attr(docsrs, doc(cfg(feature = "source")))]
pub mod source;
mod spiffe_id;
mod words;

pub use error::{Error, Result};
#[cfg(feature = "x509")]
#[cfg_attr(docsrs, doc(cfg(feature = "x509")))]
pub use leaf::{KeyUsage, LeafFacts, parse_certificate};
pub use san::{SanType, SubjectAltName};
pub use serial::Serial;
pub use spiffe_id::{SpiffeId, TrustDomain};
pub use words::{debug_words, pem_error_words};
