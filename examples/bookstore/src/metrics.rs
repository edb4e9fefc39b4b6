//! Prometheus text for the binaries' `--metrics-listen ADDR`: the libraries record through
//! the `metrics` facade (their feature `metrics`), and a program installs one recorder —
//! here `metrics-exporter-prometheus`, serving the text on `http://ADDR/` (any path, e.g.
//! `/metrics`). Names are the libraries' with dots as underscores
//! (`grpc.server.tls.handshakes` -> `grpc_server_tls_handshakes`); see METRICS.md.
//!
//! ```no_run
//! # async fn f() -> bookstore::Result<()> {
//! // First thing in the program, inside the tokio runtime, before any identity is loaded
//! // (its expiry gauge is set when it is put in place).
//! bookstore::metrics::serve(bookstore::metrics::DEFAULT_LISTEN.parse().unwrap())?;
//! // curl http://127.0.0.1:9464/metrics
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

use crate::error::{Error, Result};

/// Where `--metrics-listen` without a value serves: loopback, on the OpenTelemetry
/// Prometheus exporter's usual port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Installs the Prometheus recorder as the process's recorder and serves its text on
/// `addr` (bound before this returns: a busy address is an [`Error::Bind`]). Describes the
/// libraries' metrics (the `# HELP` lines). Call inside a tokio runtime, once.
pub fn serve(addr: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // gRFC A66's latency buckets for the per-call durations (Prometheus histograms).
        .set_buckets_for_metric(
            Matcher::Suffix("duration".to_owned()),
            &mtls_tonic::metrics::LATENCY_BUCKETS,
        )
        .map_err(|e| Error::Config(format!("Prometheus histogram buckets: {e}")))?
        .install()
        .map_err(|e| match e {
            BuildError::FailedToCreateHTTPListener(reason) => Error::Bind { addr, reason },
            other => Error::Config(format!("installing the Prometheus exporter: {other}")),
        })?;
    describe();
    Ok(())
}

/// Describes every metric of the libraries to the installed recorder.
pub fn describe() {
    // mtls-tonic's describes mtls-core's and mtls-jwt's too.
    mtls_tonic::metrics::describe();
}
