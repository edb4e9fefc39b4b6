//! JWT validation against a JWKS, the way Envoy's `jwt_authn` does it, in-process.
//!
//! A [`Validator`] checks bearer tokens against keys from a [`JwksSource`]: an inline JWKS, a
//! file (reloaded when it changes) or, with the `remote` feature, a remote URL / OIDC
//! discovery (`RemoteJwks`: cached
//! 10 min like Envoy, refreshed in the background, refetched — rate-limited — when a token
//! names an unknown `kid`, last good keys kept when the server fails; a misbehaving server
//! is bounded: body size, no redirects by default, short jittered retries, no token held
//! behind a hanging fetch — see `RemoteJwks`). Failures are
//! [`enum@Error`] variants named and worded like Envoy's (`"Jwt is expired"`, `"Audiences in
//! Jwt are not allowed"`, ...) with their HTTP status (401, or 403 for audiences) and gRPC
//! code ([`GrpcCode`]). Verified tokens are cached (bounded, keyed by the token, expiring with
//! it, dropped when the JWKS changes), as Envoy's `jwt_cache_config` does.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mtls_jwt::Error> {
//! // An issuer's key and its JWKS (in production: JwksSource::remote(url) or ::file(path)).
//! let key = SigningKey::generate(Algorithm::ES256)?;
//! let jwks = mtls_jwt::jwks_json([key.jwk(None)]);
//!
//! let validator = Validator::builder()
//!     .jwks(JwksSource::inline(jwks))
//!     .issuer("https://issuer.test")
//!     .audience("bookstore")
//!     .build()?;
//!
//! let token = key.mint(
//!     &TokenSpec::new(Duration::from_secs(300))
//!         .issuer("https://issuer.test")
//!         .audience("bookstore")
//!         .subject("spiffe://example.org/client"),
//! )?;
//! let claims = validator.validate(&token).await?;
//! assert_eq!(claims.subject(), Some("spiffe://example.org/client"));
//!
//! // Failures carry Envoy's message and the status to answer with.
//! let err = validator.validate("a.b").await.unwrap_err();
//! assert_eq!(err.envoy_message(),
//!     "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections");
//! assert_eq!(err.http_status(), 401);
//! # Ok(())
//! # }
//! ```
//!
//! A remote JWKS (feature `remote`; needs a tokio runtime, the background refresh runs on it):
//!
//! ```no_run
//! # async fn f() -> Result<(), mtls_jwt::Error> {
//! # #[cfg(feature = "remote")] {
//! use std::time::Duration;
//! use mtls_jwt::{RemoteJwks, Validator};
//!
//! let validator = Validator::builder()
//!     .jwks(RemoteJwks::new("https://issuer.example/.well-known/jwks.json")
//!         .cache_duration(Duration::from_secs(600))
//!         .refetch_min_interval(Duration::from_secs(10)))
//!     .issuer("https://issuer.example")
//!     .audience("bookstore")
//!     .build()?;
//! # let headers = http::HeaderMap::new();
//! let claims = validator.validate_headers(&headers).await?; // authorization: Bearer <jwt>
//! # }
//! # Ok(()) }
//! ```
//!
//! # JWT-SVIDs
//!
//! [`ValidatorBuilder::jwt_svid`] applies the SPIFFE JWT-SVID rules: RS/ES/PS algorithms only,
//! `aud` required and containing ours, `exp` required, `sub` a valid SPIFFE ID
//! ([`Claims::spiffe_id`]), `typ` absent or `JWT`/`JOSE`. ES512 is supported: `jsonwebtoken`
//! does not implement it, but we verify with aws-lc-rs directly (below).
//!
//! # What the defaults refuse
//!
//! - `alg: none`, unknown algorithms, and HMAC unless a secret is configured
//!   ([`ValidatorBuilder::hmac_secret`]), so an `HS256` token "signed" with the RSA public key
//!   (algorithm confusion) fails with [`Error::AlgorithmNotAllowed`];
//! - a key whose JWK `alg` or key type/curve differs from the token's `alg`
//!   ([`Error::KeyAlgorithmMismatch`]), and a JWK with `use` other than `sig`
//!   ([`Error::KeyNotForSignature`]);
//! - tokens without `exp`, or without `aud` when audiences are configured;
//! - `crit` header parameters (we implement none), tokens over 8 KiB.
//!
//! # Design notes
//!
//! - **Verification with pre-parsed keys.** Each JWK is parsed once into an aws-lc-rs
//!   `ParsedPublicKey` per algorithm it may verify; `jsonwebtoken::decode` instead re-parses
//!   the key and the header on every call. So the uncached path is no slower than raw
//!   `decode` (see `benches/validate.rs`), and the JWK's own `alg`/`use` can be enforced.
//! - **Keys are a `Source<KeySet>`**, the family's one rotation model
//!   ([`mtls_identity::source`]): an inline JWKS is a fixed source, a file is polled by its
//!   one `FilePoller` (contents compared), a remote JWKS's fetches publish into a
//!   `Publisher`, and any source the application feeds plugs in with
//!   [`JwksSource::source`] (SPIFFE Workload API JWT bundles, tests);
//!   [`Validator::jwks`] hands it out.
//! - **No lock on the hot path.** A token reads the source's `current()` (a pointer clone)
//!   and the generation stamped on it from an `ArcSwap`. Only a
//!   token with an unknown `kid` may wait: the one that starts the (rate-limited) refetch,
//!   at most `miss_wait`; no token waits behind a fetch already in flight, except during a
//!   remote JWKS's first fetch (at most `first_fetch_wait` after the build).
//! - **One crypto provider**: aws-lc-rs (also under reqwest's rustls); no `ring`.
//!
//! # Features
//!
//! - `metrics` (off by default): Envoy `jwt_authn`'s statistics — allowed, denied by Envoy
//!   failure message, verified-token cache hits and misses, JWKS fetches, keys loaded and
//!   skipped — through the `metrics` facade; names and what counts once: [`metrics`]. No
//!   exporter or recorder is installed by this crate.
//! - `remote` (off by default): `RemoteJwks` (a JWKS URL or OIDC discovery, refreshed in
//!   the background), `JwksSource::remote` and `KeySet::fetch`. It brings `reqwest` (rustls
//!   on aws-lc-rs, HTTP/2) and with it hyper, hyper-util, h2, tower and their dependencies —
//!   about 60 more crates. Without it the crate takes inline, parsed and file JWKS.
//!
//! # Dependencies
//!
//! - `aws-lc-rs`: signature verification, key generation and signing, SHA-256 for RFC 7638
//!   thumbprints — the provider the rest of the workspace uses.
//! - `serde`, `serde_json`, `base64`: JOSE headers, claims and JWKS documents.
//! - `reqwest` (feature `remote` only; rustls, aws-lc-rs): fetching remote JWKS and OIDC
//!   discovery documents.
//! - `tokio`: the remote refresh task, timeouts, the refetch lock.
//! - `arc-swap`: lock-free reads of the key set's generation.
//! - `http`: header maps for token extraction.
//! - `rustls-pki-types`: PEM parsing of public and private keys.
//! - `mtls-identity` (feature `source`): the family's shared vocabulary: the strict
//!   `SpiffeId` of JWT-SVID subjects, PEM errors in words, and the rotation model
//!   (`Source`, `Publisher`, `FilePoller`).
//! - `thiserror`, `tracing`: the error type and logs (target `mtls_jwt`).
//! - `metrics` (feature `metrics` only): the facade the counters go through; the
//!   application picks the exporter.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alg;
mod bearer;
mod cache;
mod claims;
mod der;
mod error;
mod jwk;
mod keys;
pub mod metrics;
mod source;
mod validator;

pub use alg::Algorithm;
pub use bearer::{TokenLocation, bearer_token};
pub use claims::Claims;
pub use error::{Error, GrpcCode, Result};
pub use jwk::KeySet;
pub use keys::{PublicKey, SigningKey, TokenSpec, jwks_json};
/// The strict SPIFFE ID of [`Claims::spiffe_id`] (the family's one type, from mtls-identity).
pub use mtls_identity::SpiffeId;
#[cfg(feature = "remote")]
pub use source::RemoteJwks;
pub use source::{FileJwks, JwksSource};
pub use validator::{Validator, ValidatorBuilder};
