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

use std::{net::SocketAddr, sync::OnceLock};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};

/// Where `--metrics-listen` without a value serves: loopback, on the OpenTelemetry
/// Prometheus exporter's usual port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The installed recorder's handle (read by [`counter`]).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The exporter with gRFC A66's latency buckets for the per-call durations (Prometheus
/// histograms).
fn builder() -> Result<PrometheusBuilder> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration".to_owned()),
            &mtls_tonic::metrics::LATENCY_BUCKETS,
        )
        .map_err(|e| Error::Config(format!("Prometheus histogram buckets: {e}")))
}

/// Installs the Prometheus recorder as the process's recorder and serves its text on
/// `addr` (bound before this returns: a busy address is an [`Error::Bind`]). Describes the
/// libraries' metrics (the `# HELP` lines). Call inside a tokio runtime, once.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let (recorder, exporter) =
        builder()?
            .with_http_listener(addr)
            .build()
            .map_err(|e| match e {
                BuildError::FailedToCreateHTTPListener(reason) => Error::Bind { addr, reason },
                other => Error::Config(format!("installing the Prometheus exporter: {other}")),
            })?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Error::Config(format!("installing the Prometheus exporter: {e}")))?;
    tokio::spawn(exporter);
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

/// Installs the Prometheus recorder as the process's recorder without serving it: the
/// program reads its own figures with [`counter`] (`bookstore-mesh`'s stats table). Once
/// per process: a second call (or after [`serve`]) is an [`Error::Config`].
///
/// ```
/// bookstore::metrics::record().unwrap();
/// metrics::counter!("mtls.jwt.denied", "reason" => "Jwt is missing").increment(2);
/// assert_eq!(bookstore::metrics::counter("mtls.jwt.denied", &[("reason", "Jwt is missing")]), Some(2));
/// assert!(bookstore::metrics::record().is_err(), "once per process");
/// ```
pub fn record() -> Result<()> {
    let handle = builder()?
        .install_recorder()
        .map_err(|e| Error::Config(format!("installing the Prometheus recorder: {e}")))?;
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

/// The sum of counter `name` (the library's name: `mtls.jwt.denied`) over the series whose
/// labels include `labels`, as the installed recorder has it; `None` without a recorder
/// installed by [`serve`] or [`record`]. (0 when nothing was recorded.)
pub fn counter(name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let name = name.replace('.', "_");
    sum_series(&[name.clone(), format!("{name}_total")], labels)
}

/// The sum of the values histogram `name` recorded (its `_sum`, e.g. every retry that
/// `grpc.client.call.retries` counted), over the series whose labels include `labels`;
/// `None` without a recorder, as [`counter`].
///
/// ```
/// bookstore::metrics::record().unwrap();
/// metrics::histogram!("grpc.client.call.retries", "grpc.target" => "a").record(2.0);
/// metrics::histogram!("grpc.client.call.retries", "grpc.target" => "b").record(1.0);
/// assert_eq!(bookstore::metrics::histogram_sum("grpc.client.call.retries", &[]), Some(3));
/// assert_eq!(bookstore::metrics::histogram_count("grpc.client.call.retries", &[("grpc.target", "a")]), Some(1));
/// ```
pub fn histogram_sum(name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    sum_series(&[format!("{}_sum", name.replace('.', "_"))], labels)
}

/// How many values histogram `name` recorded (its `_count`), over the series whose labels
/// include `labels`; `None` without a recorder, as [`counter`].
pub fn histogram_count(name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    sum_series(&[format!("{}_count", name.replace('.', "_"))], labels)
}

/// The sum of the series named one of `names` (Prometheus names) whose labels include
/// `labels`.
fn sum_series(names: &[String], labels: &[(&str, &str)]) -> Option<u64> {
    let text = HANDLE.get()?.render();
    let wanted: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}=\"{v}\"", k.replace('.', "_")))
        .collect();
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if !names.iter().any(|n| n == series_name) {
            continue;
        }
        let present: Vec<&str> = split_labels(series_labels);
        if wanted.iter().all(|w| present.contains(&w.as_str())) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    Some(sum as u64)
}

/// `a="x",b="y, z"` -> [`a="x"`, `b="y, z"`] (a comma inside quotes stays).
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

/// Describes every metric of the libraries to the installed recorder.
pub fn describe() {
    // mtls-tonic's describes mtls-core's and mtls-jwt's too.
    mtls_tonic::metrics::describe();
}
