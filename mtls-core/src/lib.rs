//! # mtls-core
//!
//! Mutual TLS for rustls 0.23 (aws-lc-rs) with the peer policies people already write for
//! Envoy and SPIFFE, over any identity source, with live rotation and rejection messages
//! that say what was presented and what was expected.
//!
//! The output is a **plain** `rustls::ServerConfig` / `rustls::ClientConfig`: use it with
//! tokio-rustls, hyper, tonic (see mtls-tonic) or anything else that takes rustls configs.
//!
//! ```text
//!  IdentitySource ──current()──► resolver ──► our certificate in every handshake
//!  (Arc<Identity>, IdentityHandle::rotate, FileIdentitySource, Workload API ...)
//!
//!  peer chain ──► leaf facts ──► X509-SVID rules ──► roots of the peer's trust domain
//!                 (x509-parser)   (SPIFFE only)        (TrustSource::current())
//!             ──► webpki chain + CRLs ──► Authorizer (SPIFFE ID) ──► SanMatcher list
//!             ──► accepted, or Error { presented, expected } logged at warn
//! ```
//!
//! ## Quick start
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
//! # let api = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/ns/prod/sa/api")?))?;
//! # let web = ca.issue(&mtls_certs::LeafParams::svid(mtls_certs::SpiffeId::new("spiffe://example.org/ns/prod/sa/web")?))?;
//! # let (api_chain_pem, api_key_pem, web_chain_pem, web_key_pem, ca_pem) =
//! #     (api.chain_pem(), api.key_pem(), web.chain_pem(), web.key_pem(), ca.cert_pem());
//! use std::sync::Arc;
//! use mtls_core::{Authorize, ClientConfigBuilder, Identity, IdentityHandle, ServerConfigBuilder, TrustBundle};
//!
//! let trust = Arc::new(TrustBundle::spiffe().add_domain_pem("example.org".parse()?, &ca_pem)?);
//!
//! // Server: only workloads of example.org under /ns/prod may call.
//! let server_identity = IdentityHandle::new(Identity::from_pem(&api_chain_pem, &api_key_pem)?);
//! let server: rustls::ServerConfig = ServerConfigBuilder::new(server_identity.clone(), trust.clone())
//!     .authorize(Authorize::member_of("example.org".parse()?).and(Authorize::path_prefix("/ns/prod")))
//!     .build()?;
//!
//! // Client: the server must be exactly the api workload (dialing 127.0.0.1 is fine).
//! let client_identity = Arc::new(Identity::from_pem(&web_chain_pem, &web_key_pem)?);
//! let client: rustls::ClientConfig = ClientConfigBuilder::new(client_identity, trust)
//!     .authorize(Authorize::exact("spiffe://example.org/ns/prod/sa/api".parse()?))
//!     .build()?;
//!
//! // After the handshake (tokio-rustls): mtls_core::PeerIdentity::from_connection(stream.get_ref().1)?
//! // Rotation: server_identity.rotate(new_identity) — new handshakes use it at once.
//! # Ok(()) }
//! ```
//!
//! ## SAN matching or SPIFFE authorizers?
//!
//! - Use **[`SanMatcher`]** (with a plain CA bundle, [`TrustBundle::from_pem`]) when peers
//!   are identified by DNS names, IPs, e-mails or arbitrary URIs, or when you are carrying
//!   over an Envoy `validation_context.match_typed_subject_alt_names` block: it
//!   deserializes from the same YAML/JSON and matches with Envoy's semantics (any matcher
//!   matching any SAN of its type; DNS `exact` honours wildcard SANs; `safe_regex` is a
//!   full match), checked against a live Envoy 1.40. One deliberate difference: a wildcard
//!   must be a whole left-most label — Envoy also accepts `api*.example.com`, RFC 9525 does
//!   not (the repository's `ENVOY-PARITY.md` lists every case). It checks *names*, nothing
//!   about SPIFFE's certificate rules.
//! - Use a SPIFFE **[`Authorizer`]** ([`Authorize::member_of`], [`Authorize::exact`], ...,
//!   or a closure) when peers are workloads with SPIFFE IDs. The peer must then be a valid
//!   X509-SVID (exactly one URI SAN, a canonical SPIFFE ID with a non-root path, `cA=false`,
//!   `digitalSignature`, no `keyCertSign`/`cRLSign`), and with a SPIFFE bundle set
//!   ([`TrustBundle::spiffe`]) it is verified against **its own trust domain's** roots
//!   only — a CA trusted for one domain cannot mint identities in another. Prefer this for
//!   service-to-service traffic: the policy is typed, so `spiffe://example.org/ns/prodx`
//!   cannot slip past a prefix meant for `/ns/prod`.
//! - Both can be set; then both must accept.
//!
//! ## Rotation
//!
//! Every identity and trust bundle is a [`Source`] — the family's one rotation model,
//! [`mtls_identity::source`], documented there once: `current()` without I/O, `changed()`
//! to wait for the next value, an in-memory publisher, one file poller. The traits
//! [`IdentitySource`] and [`TrustSource`] are thin views over it (a `Source<Identity>` is an
//! `IdentitySource`). Resolvers and verifiers call [`IdentitySource::current`] and
//! [`TrustSource::current`] on every handshake (a pointer clone under a read lock), so
//! swapping the value in an [`IdentityHandle`], [`TrustHandle`], or the files behind a
//! [`FileIdentitySource`] / [`FileTrustSource`] affects the next handshake without
//! rebuilding the config.
//! Established connections are not touched. The file sources never install an identity
//! that would fail handshakes: an expired or not-yet-valid leaf, or (with
//! [`FileIdentitySource::watch_trusted`]) one that does not chain to the trust, is refused
//! at start and keeps the last good identity later, with one `warn` line per bad state.
//!
//! ## TLS policy: post-quantum by default
//!
//! Both builders apply one [`TlsPolicy`] (versions, key-exchange groups, cipher suites).
//! The default prefers the hybrid **X25519MLKEM768** (as Envoy 1.40, Go ≥ 1.24, Chrome and
//! Firefox do) and keeps X25519, P-256 and P-384 behind it, TLS 1.3 only. A client sends
//! two key shares, the hybrid and its X25519 half, so a post-quantum peer (mtls, Envoy)
//! and a classical one (OpenSSL 3.0, Python's `ssl`) both answer the first ClientHello —
//! no HelloRetryRequest either way. Presets ([`TlsPreset`]): `default`, `tls13-only`,
//! `classical` (no ML-KEM), `nist` (P-256/P-384, AES-GCM). A policy reads from YAML/JSON
//! (`{preset: classical, min_version: TLSv1_2}`), renders as Envoy `tls_params`
//! ([`TlsPolicy::envoy_tls_params`]) so sidecars run the same policy, and is refused at
//! [`build`](ServerConfigBuilder::build) when it cannot work, naming the field
//! ([`Error::InvalidTlsPolicy`]). What a connection negotiated (version, suite, group,
//! full / HelloRetryRequest / resumed) is [`PeerIdentity::negotiated`] ([`Negotiated`]);
//! [`explain_handshake_error`] turns a version or group mismatch into what each side
//! offered and what to set.
//!
//! Key logging for Wireshark: [`ClientConfigBuilder::key_log_from_env`] /
//! [`ServerConfigBuilder::key_log_from_env`] write `SSLKEYLOGFILE` — only when that
//! variable is set too, with a warning in the log.
//!
//! ## SPIFFE bundles
//!
//! [`SpiffeBundle`] reads and writes the SPIFFE bundle format (a JWK Set with
//! `spiffe_sequence` and `spiffe_refresh_hint`; `x509-svid` keys with `x5c`, `jwt-svid` keys
//! with `kid`), the document bundle endpoints serve and SPIRE exports. [`BundleSet`] keeps
//! one bundle per trust domain, never merged, and takes a newer `spiffe_sequence` only;
//! [`BundleSet::to_trust_bundle`] is the per-domain [`TrustBundle`] our verifiers use, and
//! [`SpiffeBundle::jwt_jwks_json`] the JWKS that `mtls-jwt` validates JWT-SVIDs with.
//! [`FileTrustSource`] reads a trust file as PEM or as a SPIFFE bundle, whichever it holds.
//!
//! ```
//! # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
//! # let json = mtls_core::SpiffeBundle::new("example.org".parse()?).add_x509_authorities_pem(ca.cert_pem())?.to_json();
//! use mtls_core::{BundleSet, SpiffeBundle};
//! let mut federated = BundleSet::new();
//! federated.insert(SpiffeBundle::parse("example.org".parse()?, &json)?)?;
//! let trust = federated.to_trust_bundle()?; // for ServerConfigBuilder / ClientConfigBuilder
//! # assert!(trust.is_spiffe());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Errors
//!
//! A rejected peer yields an [`Error`] naming what was presented and expected, logged with
//! `tracing` at `warn`. rustls sees it as `InvalidCertificate(CertificateError::Other(..))`
//! (the peer gets a `certificate_unknown` alert); recover it with [`Error::from_rustls`] or
//! [`Error::from_io`] from a tokio-rustls handshake error.
//!
//! ## Features
//!
//! - `workload-api` (off by default): `WorkloadApiSource`, an [`IdentitySource`] and
//!   [`TrustSource`] fed by the SPIFFE Workload API (a SPIRE agent or `mtls-agent`) through
//!   the `spiffe` crate's `X509Source`: the address comes from `SPIFFE_ENDPOINT_SOCKET` or
//!   is given, start-up waits for the first SVID with a bounded timeout and fails with an
//!   error naming the socket, and every new SVID/bundle is used by the next handshake.
//!   Needs a tokio runtime.
//! - `federation` (off by default): [`FederatedTrustSource`], a [`TrustSource`] over our
//!   own bundle and foreign trust domains' bundles fetched from their SPIFFE bundle
//!   endpoints ([`BundleEndpoint`]: `https_web` or `https_spiffe`), refreshed at the
//!   bundle's refresh hint, with backoff, last good bundle kept, newer sequence only.
//!   Brings hyper (HTTP/1.1 client), hyper-util, http, http-body-util and tokio-rustls.
//!   Needs a tokio runtime.
//! - `metrics` (off by default): handshake counters by side and result, certificate expiry
//!   gauges (our identity, each trust anchor) and rotations, through the `metrics` facade —
//!   see [`metrics`] for the names, the Envoy/linkerd equivalents and why this facade.
//!   Without it, [`metrics`]'s functions are empty.
//!
//! The crypto provider is always aws-lc-rs (another provider may be passed to the
//! builders, but `ring` is never pulled in).
//!
//! ## Dependencies
//!
//! - `mtls-identity` — the family's shared vocabulary: [`SubjectAltName`], [`SanType`],
//!   the certificate `Serial` (one text form), PEM and webpki errors in words.
//! - `rustls` — the TLS implementation whose configs we build; re-exported as
//!   [`mtls_core::rustls`](crate::rustls) so an application names the same version.
//! - `rustls-pki-types` — DER/PEM certificate and key types (PEM parsing via `PemObject`).
//! - `rustls-webpki` — chain building, validity and CRL checks (the same code rustls uses).
//! - `x509-parser` — reading SANs, basic constraints and key usage that webpki does not expose.
//! - `spiffe` — the SPIFFE ID types behind ours ([`SpiffeId`] and [`TrustDomain`] wrap them
//!   and parse with go-spiffe's rules, which the `spiffe` crate's own parser relaxes: it
//!   lower-cases and ignores what go-spiffe refuses; convert with `From`/`TryFrom` or
//!   `as_spiffe()`); with `workload-api`, its `X509Source` (Workload API client over tonic,
//!   no TLS stack of its own).
//! - `tokio` (`sync` only) — the `watch` channel behind every [`Source`]: through
//!   `mtls-identity`'s feature `source`, the family's one rotation model.
//! - `regex` — Envoy `safe_regex` matchers.
//! - `serde` — loading SAN matchers from Envoy-shaped YAML/JSON.
//! - `serde_json`, `data-encoding` — the SPIFFE bundle format (a JWK Set; `x5c` is base64
//!   DER, JWK members base64url); `data-encoding` is the codec x509-parser already brings.
//! - `metrics` (feature `metrics`) — the metrics facade: no exporter or registry of ours.
//! - `hyper`, `hyper-util`, `http`, `http-body-util`, `tokio-rustls` (feature `federation`)
//!   — fetching bundles over HTTPS with rustls, the TLS stack we already use.
//! - `thiserror` — the [`Error`] enum; `time` — RFC 3339 times in messages;
//!   `tracing` — logs.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the items of every feature (docs.rs builds with all of them); a
// build with fewer features has nothing to link to.
#![cfg_attr(
    not(all(feature = "workload-api", feature = "federation", feature = "metrics")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod authorizer;
mod builder;
mod bundle;
mod cert;
mod client;
mod error;
#[cfg(feature = "federation")]
mod federation;
mod files;
mod identity;
pub mod metrics;
mod negotiated;
mod peer;
mod policy;
mod san;
mod server;
mod source;
mod string_matcher;
mod trust;
mod verify;
#[cfg(feature = "workload-api")]
mod workload;

pub use authorizer::{Authorize, Authorizer};
pub use bundle::{BundleSet, DEFAULT_REFRESH_HINT, JwtAuthority, SpiffeBundle};
pub use client::ClientConfigBuilder;
pub use error::{Error, Result};
#[cfg(feature = "federation")]
#[cfg_attr(docsrs, doc(cfg(feature = "federation")))]
pub use federation::{
    BundleEndpoint, EndpointProfile, EndpointStatus, FederatedTrustSource, FederationBuilder,
    MAX_BUNDLE_SIZE,
};
pub use files::{FileIdentitySource, FileTrustSource};
pub use identity::Identity;
pub use mtls_identity::Serial;
pub use mtls_identity::source::Source;
pub use negotiated::Negotiated;
pub use peer::PeerIdentity;
pub use policy::{
    EnvoyTlsParams, KxGroup, TlsPolicy, TlsPreset, TlsSuite, TlsVersion, explain_handshake_error,
};
pub use san::{SanMatcher, SanType, SubjectAltName};
pub use server::{Resumption, ServerConfigBuilder};
pub use source::{IdentityHandle, IdentitySource, TrustHandle, TrustSource};
pub use string_matcher::StringMatcher;
pub use trust::TrustBundle;
#[cfg(feature = "workload-api")]
#[cfg_attr(docsrs, doc(cfg(feature = "workload-api")))]
pub use workload::{
    DEFAULT_STARTUP_TIMEOUT, SPIFFE_ENDPOINT_SOCKET, WorkloadApiEndpoint, WorkloadApiSource,
    WorkloadApiSourceBuilder,
};

pub use mtls_identity::{SpiffeId, TrustDomain};

/// The rustls whose `ClientConfig` / `ServerConfig` our builders return: use this one (or
/// pin the same version) so the types always match. `rustls::pki_types` is there too.
///
/// ```
/// let _provider: mtls_core::rustls::crypto::CryptoProvider =
///     mtls_core::rustls::crypto::aws_lc_rs::default_provider();
/// ```
pub use rustls;
