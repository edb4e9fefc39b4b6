//! Test support shared by the mtls workspace's integration tests (not published).
//!
//! - [`ChildGuard`]: a child process killed by its PID and reaped when dropped, with
//!   bounded waits for its exit and its output lines; [`run_within`] runs a command to
//!   completion under a time bound.
//! - [`peers`]: the independent peers the tests talk to, found one way: the project's
//!   Python (`MTLS_PYTHON`), Envoy (`MTLS_ENVOY`, with `MTLS_REQUIRE_ENVOY=1` turning a
//!   missing Envoy from a skip into a failure) and the `openssl` CLI.
//! - [`eventually`] and [`wait_until`]: polling with a deadline instead of sleeping.
//! - [`free_port`], [`free_addr`], [`http_get`]: loopback helpers.
//! - [`envoy_ports`], [`envoy_listeners`]: the ports an Envoy given port 0 was bound to
//!   (admin and listeners); [`envoy_config`]: configuration pieces several tests write alike.
//! - [`pyjwt::verify`]: PyJWT checking our tokens; [`cfssl_files::bare`]: the files cfssl writes.
//! - [`put`]: a PEM (or any text) written into a test's temp dir; [`words`] and
//!   [`words_and`]: command lines written as one string.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = mtls_test_support::put(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\n");
//! assert!(path.ends_with("ca.pem"));
//! ```
// Test support: a panic is the failed test, with the message saying what was expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cfssl_files;
mod envoy;
pub mod envoy_config;
mod net;
pub mod peers;
mod process;
pub mod pyjwt;
mod wait;

pub use envoy::{EnvoyPorts, envoy_listeners, envoy_ports};
pub use net::{free_addr, free_port, http_get, put, words, words_and};
pub use process::{ChildGuard, run_group_within, run_within, wait_on};
pub use wait::{eventually, wait_until};
