//! # mtls-agent
//!
//! A local identity agent for development, CI and single-host deployments: what a SPIRE
//! agent does for workloads and Envoy, without a SPIRE server.
//!
//! ```text
//!  registration.yaml ──► Registration (uid/gid/exe, SDS node id → SPIFFE ID)
//!  CA (given, or created in --state-dir) ──► Issuer: one X509-SVID per registered ID
//!        (default 1 h, rotated at half-life or on SIGHUP / Agent::rotate_now)
//!        │ watch channel: every rotation is pushed on every open stream
//!        ├──► SPIFFE Workload API  (unix socket; `workload.spiffe.io: true` required)
//!        │      FetchX509SVID, FetchX509Bundles, FetchJWTSVID, FetchJWTBundles, ValidateJWTSVID
//!        ├──► Envoy SDS            (unix socket; envoy.service.secret.v3)
//!        │      StreamSecrets, FetchSecrets: "<spiffe id>" | "default" → tls_certificate,
//!        │      "spiffe://<td>" | "ROOTCA" → validation_context (trusted_ca),
//!        │      "ALL" → every domain in Envoy's SPIFFE validator (SPIRE's ALL)
//!        └──► Filesystem Delivery  (optional, AgentConfig::deliver / --deliver-to DIR)
//!               credential-bundle.private-key.pem, <td>.spiffe-trust-bundle.pem,
//!               renamed into place atomically; renew_signal to a PID
//! ```
//!
//! ## Federation
//! The agent can serve its trust domain's SPIFFE bundle endpoint
//! ([`AgentConfig::serve_bundle_endpoint`]: the CA as `x509-svid`, the JWT-SVID key as
//! `jwt-svid`; profile `https_spiffe` with an SVID the agent issues itself, or `https_web`
//! with a given certificate — see [`ServeProfile`]) and federate with other trust domains
//! ([`AgentConfig::federate_with`] a `mtls_core::BundleEndpoint`: refreshed at the hint,
//! last good kept, newer sequence only). Foreign bundles go to workloads — the X509-SVID
//! response's `federated_bundles`, FetchX509Bundles and FetchJWTBundles — to Envoy as the
//! SDS validation context `spiffe://<foreign td>` (SPIRE's naming), and to delivered files.
//! Our own domain's bundle is never replaced by a federated one.
//!
//! ## CA rotation
//! [`Agent::rotate_ca`] (or `--rotate-ca-every DURATION`, [`AgentConfig::rotate_ca_every`];
//! off by default) rotates the CA the way SPIRE does: a new CA (same trust domain, same key
//! algorithm) is *prepared* — its root joins the bundle next to the old one, with
//! `spiffe_sequence` + 1, on every consumer (Workload API, SDS `spiffe://<td>`/`ROOTCA`/`ALL`,
//! delivered bundle files, the bundle endpoint) — then, after
//! [`AgentConfig::ca_activation_delay`] (default: the bundle endpoint's refresh hint, so
//! federated peers have polled; zero without one), *activated*: every SVID is reissued from
//! it. The old root is *retired* from the bundle (`spiffe_sequence` + 1) once its last SVID
//! has expired, one `svid_ttl` later, or at once with [`Agent::retire_old_cas`]. Open
//! connections made with old SVIDs keep verifying during the overlap. The bundle endpoint
//! serves the bundle as it is at each request. The JWT-SVID key is not rotated.
//!
//! ## Filesystem delivery
//! For programs that cannot speak the Workload API (nginx, an Envoy with file mounts), the
//! agent writes one registered ID's SVID and the trust bundle into a folder the way
//! spiffe-helper does ([`Delivery`]): `credential-bundle.private-key.pem` (the PKCS#8 key,
//! then the chain, leaf first, no root; mode 0600) and `<trust-domain>.spiffe-trust-bundle.pem`,
//! each written to a temporary file in the same folder and renamed over the old one on every
//! rotation, then optionally a signal to a process. `mtls_core::FileIdentitySource::watch_delivered`
//! and `FileTrustSource::watch_delivered` read that layout.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! # let registration = mtls_agent::Registration::from_yaml("entries: []")?;
//! use mtls_agent::{Agent, AgentConfig, Delivery};
//! let agent = Agent::start(
//!     AgentConfig::new("bookstore.local".parse()?, "/tmp/a/workload.sock", registration)
//!         .deliver(Delivery::new("/run/nginx/creds", "spiffe://bookstore.local/nginx".parse()?)
//!             .renew_signal(4242, "SIGHUP")?),
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Callers are identified by their Unix peer credentials (`SO_PEERCRED`: uid, gid, pid), the
//! calling process tracked from accept (pidfd, `/proc` start time, executable; re-checked on
//! every call and on every rotation of an open stream: see [`Registration`] and the
//! remaining limits below) and, on SDS, Envoy's claimed `node.id`. A caller no entry matches
//! gets PERMISSION_DENIED ("no identity issued"); a call without the security header gets INVALID_ARGUMENT; an SDS
//! request for a secret name the caller has no right to ends the stream with
//! INVALID_ARGUMENT naming the caller's own names (Envoy logs it and counts
//! `sds.<name>.update_failure`) — the same answer whether that SPIFFE ID is registered for
//! someone else or not at all, so a peer cannot probe which identities exist.
//!
//! ## Limits: what a local peer can make the agent hold
//! The agent runs as root on developer machines and CI hosts, and any local user can
//! connect to its sockets. So everything a peer can send before (and after) it is
//! identified is bounded — see [`Limits`] for the table of limits and their defaults
//! ([`AgentConfig::limits`] changes them):
//! - connections, total and per Unix uid (`SO_PEERCRED`), over both sockets; a handshake
//!   timeout (the HTTP/2 preface) and an idle timeout (no call in flight);
//! - HTTP/2: frame size, header-list size, concurrent streams and receive windows set on
//!   both servers; the Workload API's `:authority` rewriter ([`AuthorityRewriter`], which
//!   parses HTTP/2 before h2 does) enforces frame size, header-block size, CONTINUATION
//!   count and the *decoded* HPACK size itself, so an HPACK bomb is refused, not decoded;
//! - request messages, JWT-SVID audiences (count, length, non-empty), SDS resource names
//!   (deduplicated, count, length) and the ValidateJWTSVID validator cache;
//! - logs: client-controlled fields are escaped (a newline in an exe path cannot forge a
//!   log line) and cut to 128 characters; refusals a peer can trigger at will are logged at
//!   most 20 times per 10 s each, then counted.
//!
//! JWT-SVID rules: ValidateJWTSVID is keyed by trust domain — it holds our trust domain's
//! keys only, so a token whose `sub` is in another trust domain is refused even when our
//! key signed it; FetchJWTSVID refuses empty audiences.
//!
//! ## Quick start
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use mtls_agent::{Agent, AgentConfig, Registration};
//!
//! let registration = Registration::from_yaml(r#"
//! entries:
//!   - spiffe_id: spiffe://bookstore.local/web
//!     selectors: { uid: 1000 }
//!   - spiffe_id: spiffe://bookstore.local/envoy
//!     selectors: { uid: 1001, sds_node_id: web-sidecar }
//! "#)?;
//! let agent = Agent::start(
//!     AgentConfig::new("bookstore.local".parse()?, "/tmp/mtls-agent/workload.sock", registration)
//!         .sds_socket("/tmp/mtls-agent/sds.sock")
//!         .state_dir("/tmp/mtls-agent/state"),
//! )
//! .await?;
//! // A workload: SPIFFE_ENDPOINT_SOCKET=unix:///tmp/mtls-agent/workload.sock, then
//! // mtls_core::WorkloadApiSource::builder().connect().await? (feature workload-api).
//! agent.rotate_now()?;
//! # Ok(()) }
//! ```
//!
//! The `mtls-agent` binary wraps the same: `mtls-agent --trust-domain bookstore.local
//! --registration reg.yaml --socket /tmp/a/workload.sock --sds-socket /tmp/a/sds.sock
//! --state-dir /tmp/a/state`; SIGHUP re-reads the registration file and rotates now.
//!
//! ## Features
//! - `bin` (on by default): what the `mtls-agent` binary needs beyond the library — `clap`
//!   (flags), `humantime` (durations), `tracing-subscriber` (log output), tokio's `signal`
//!   and multi-threaded runtime. A library user (`Agent::start` in a test harness or a
//!   larger process) depends with `default-features = false`.
//!
//! ## Protos
//! The SPIFFE `workload.proto` and a trimmed subset of Envoy's xDS protos (field numbers
//! kept) are vendored in `proto/` and compiled by `build.rs` with protox and
//! tonic-prost-build — no system `protoc`. The `spiffe` crate's generated types are
//! crate-private and client-only, and the Envoy API crates on crates.io generate the whole
//! xDS API (thousands of messages) for the four SDS needs.
//!
//! ## Dependencies
//! The agent hands out material and terminates TLS only for its optional bundle endpoint,
//! so it builds on `mtls-certs` and `mtls-jwt`; of `mtls-core` it uses the federation parts
//! (workloads use `mtls-core`'s `WorkloadApiSource`).
//!
//! - `mtls-identity`: the family's shared vocabulary: the strict `SpiffeId` / `TrustDomain`
//!   (go-spiffe's rules) for registration entries and the `spiffe_id` field of requests,
//!   serials, HPACK errors in words; with its feature `source`, the rotation model: what
//!   the Workload API, SDS, Filesystem Delivery and the bundle endpoint serve is published
//!   into one `Publisher` and read as its `Source` (`mtls_identity::source`).
//! - `mtls-certs`: the CA and SVID issuance (random serials, SKI/AKI, backdating, clamping).
//! - `mtls-core` (feature `federation`): the SPIFFE bundle format and the bundle endpoint
//!   client (`FederatedTrustSource`).
//! - `rustls`, `tokio-rustls`, `rustls-pki-types`: the bundle endpoint's HTTPS server (the
//!   TLS stack mtls-core brings).
//! - `mtls-jwt`: the ES256 JWT-SVID signing key, JWKS, and JWT-SVID validation.
//! - `tonic`, `tonic-prost`, `prost`, `prost-types`: the gRPC servers and messages;
//!   `protox`, `tonic-prost-build` (build): proto compilation.
//! - `fluke-hpack`, `http`: the `:authority` rewrite for gRPC C-core/Java clients (HPACK
//!   decoding of their header blocks; `http` decides what a valid authority is).
//! - `tokio`, `tokio-stream`, `futures-util`: Unix sockets, streams, signals, timers.
//! - `serde`, `serde_yaml_ng`, `serde_json`: the registration file and JWT claims.
//! - `clap`, `humantime`, `tracing-subscriber` (feature `bin`, the binary only): flags,
//!   durations, log output.
//! - `thiserror`, `tracing`: errors and logs.
//! - `rustix`: the syscalls behind attestation and hijack-proof files with no `unsafe` here
//!   (`pidfd_open`, `poll` on a pidfd, `geteuid`, `O_PATH | O_NOFOLLOW` opens, `fstat`).
//! - `nix` (feature `socket` only): `SO_PEERPIDFD`, the pidfd of the process that called
//!   `connect` — what makes PID reuse harmless; rustix has no wrapper for it.
//! - `metrics` (feature `metrics`): the facade the agent's counters go through
//!   ([`metrics`]); `metrics-exporter-prometheus` (same feature): the binary's
//!   `--metrics-listen`.
//! - `aws-lc-rs`: SHA-256 of executables for `sha256` selectors (the workspace's one
//!   crypto backend).
//!
//! ## What attestation cannot see
//! As for SPIRE: a process that execs a registered binary in the moment between its
//! `connect` and the agent's `accept` is attested as that binary; a registered process that
//! hands its connection to another (fd passing, inheritance) lends it its identity; root, or
//! anyone who can ptrace a registered process, can act as it. `uid` selectors hold against
//! other users in each case (the kernel records the uid at `connect`): pin the uid.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod agent;
mod authority;
mod bundle_endpoint;
mod caller;
mod conn;
mod delivery;
mod error;
mod files;
mod issuer;
mod limits;
mod logging;
pub mod metrics;
mod pb;
mod registration;
mod sds;
mod workload;

pub use agent::{Agent, AgentConfig, DEFAULT_JWT_TTL, DEFAULT_SVID_TTL};
pub use authority::{AuthorityRewriter, MAX_CONTINUATIONS, MAX_FRAME_SIZE};
pub use bundle_endpoint::{
    BUNDLE_ENDPOINT_MAX_CONNECTIONS, BUNDLE_ENDPOINT_MAX_REQUEST_HEAD,
    BUNDLE_ENDPOINT_REQUEST_TIMEOUT, ServeProfile,
};
pub use delivery::{CREDENTIAL_FILE, Delivery, SPIFFE_CREDENTIAL_FOLDER, trust_bundle_file};
pub use error::{Error, Result};
pub use limits::Limits;
pub use registration::{Caller, Entry, Registration, Selectors};
pub use sds::SECRET_TYPE_URL;
