//! The side-by-side stats table: for each event the mesh drives on both paths, the
//! proxyless figure read from our own metrics (the process's recorder:
//! [`crate::metrics::record`] or `--metrics-listen`) and the Envoy figure read from the
//! sidecars' admin `/stats`, each the change across the step that drives the event.
//!
//! Calls per replica are the one event counted by both sides of the same hop: the
//! balancers' splits on the two paths are separate runs (equal only by chance), so each
//! replica's row is the Envoy path's scenario, the calls the replica's own server counted
//! (`grpc.server.call.started{replica}`) beside the calls its server sidecar sent it
//! (`cluster.replica.upstream_rq_total`).

use std::fmt::Write;

use super::{PathKind, checks};

/// Row: handshakes refused for the peer's SAN / SPIFFE ID (the intruder's attempts).
pub(super) const STAT_SAN: &str = "handshakes refused for SAN";
/// Row: the retries of the retry step's calls (each fails its first attempt once).
pub(super) const STAT_RETRIES: &str = "retries (calls failing their first attempt)";
/// Row: the retry step's calls that were served on their retry.
pub(super) const STAT_RETRIED_SERVED: &str = "retried calls served";
/// Row: GOAWAYs the replicas sent during the rolling restart (graceful shutdowns).
pub(super) const STAT_GOAWAY: &str = "GOAWAYs in the rolling restart";
/// Rows: the calls each replica served in the Envoy path's scenario, with the replica's
/// name (its IP, as [`super::REPLICA_IPS`]), our metric and the server sidecar's stat.
pub(super) const STAT_REPLICA_CALLS: [(&str, &str, &str, &str); 3] = [
    (
        "calls served by 127.0.0.2 (envoy path)",
        "127.0.0.2",
        "grpc_server_call_started{replica=\"127.0.0.2\"}",
        "cluster.replica.upstream_rq_total (its sidecar)",
    ),
    (
        "calls served by 127.0.0.3 (envoy path)",
        "127.0.0.3",
        "grpc_server_call_started{replica=\"127.0.0.3\"}",
        "cluster.replica.upstream_rq_total (its sidecar)",
    ),
    (
        "calls served by 127.0.0.4 (envoy path)",
        "127.0.0.4",
        "grpc_server_call_started{replica=\"127.0.0.4\"}",
        "cluster.replica.upstream_rq_total (its sidecar)",
    ),
];
/// The server sidecar's stat for the requests it sent its replica (its one cluster).
pub(super) const REPLICA_UPSTREAM_RQ: &str = "cluster.replica.upstream_rq_total";
/// The refusal checks with a row, and our `mtls.jwt.denied` reason for each.
pub(super) const STAT_REFUSALS: [(&str, &str); 2] = [
    (checks::NO_TOKEN, "Jwt is missing"),
    (checks::WRONG_AUDIENCE, "Audiences in Jwt are not allowed"),
];

/// One event, with the metric each figure comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatRow {
    /// The event, e.g. "no token".
    pub event: &'static str,
    /// Our metric (Prometheus name) and its change, `None` when not read (no recorder): on
    /// the proxyless path, except the calls per replica (the replicas' own count of the
    /// calls the Envoy path delivered, the same calls Envoy counts).
    pub proxyless: (&'static str, Option<u64>),
    /// Envoy's stat and its change, `None` when the Envoy path did not run.
    pub envoy: (&'static str, Option<u64>),
}

impl StatRow {
    /// Whether both figures were read and are equal.
    ///
    /// ```
    /// # use bookstore::mesh::MeshOutcome;
    /// let outcome = MeshOutcome::default();
    /// assert!(outcome.stats.iter().all(|row| row.agrees()));
    /// ```
    pub fn agrees(&self) -> bool {
        matches!((self.proxyless.1, self.envoy.1), (Some(a), Some(b)) if a == b)
    }
}

/// The rows being filled while the mesh runs.
pub(super) struct StatsTable {
    pub(super) rows: Vec<StatRow>,
}

impl StatsTable {
    pub(super) fn new() -> Self {
        let row = |event, ours, envoy| StatRow {
            event,
            proxyless: (ours, None),
            envoy: (envoy, None),
        };
        let mut rows = vec![
            row(
                STAT_SAN,
                "grpc_server_tls_handshakes{authorizer_denied|san_mismatch}",
                "ssl.fail_verify_san",
            ),
            row(
                checks::NO_TOKEN,
                "mtls_jwt_denied{reason=\"Jwt is missing\"}",
                "jwt_authn.denied",
            ),
            row(
                checks::WRONG_AUDIENCE,
                "mtls_jwt_denied{reason=\"Audiences in Jwt are not allowed\"}",
                "jwt_authn.denied",
            ),
            row(
                STAT_RETRIES,
                "grpc_client_call_retries (sum)",
                "cluster.bookstore.upstream_rq_retry (client sidecar)",
            ),
            row(
                STAT_RETRIED_SERVED,
                "grpc_client_call_duration_count{grpc_status=\"OK\"}",
                "cluster.bookstore.upstream_rq_retry_success",
            ),
            row(
                STAT_GOAWAY,
                "grpc_subchannel_disconnections{grpc_disconnect_error=\"GOAWAY\"}",
                "upstream_cx_close_notify",
            ),
        ];
        for (event, _, ours, envoy) in STAT_REPLICA_CALLS {
            rows.push(row(event, ours, envoy));
        }
        Self { rows }
    }

    pub(super) fn set(&mut self, event: &str, path: PathKind, value: Option<u64>) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.event == event) {
            match path {
                PathKind::Proxyless => row.proxyless.1 = value,
                PathKind::Envoy => row.envoy.1 = value,
            }
        }
    }
}

/// Reads a figure until it is at least `at_least` (5 s at most: then the last reading, for
/// the table to show): counters that the event's other side raises just after the caller
/// saw the event.
pub(super) async fn settled<F, Fut>(at_least: u64, mut read: F) -> Option<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let figure = read().await;
        if figure.is_none_or(|f| f >= at_least) || std::time::Instant::now() > deadline {
            return figure;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `after - before`, when both were read.
pub(super) fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Our `mtls.jwt.denied{reason}`.
pub(super) fn our_jwt_denied(reason: &str) -> Option<u64> {
    crate::metrics::counter("mtls.jwt.denied", &[("reason", reason)])
}

/// Our server handshakes refused for the peer's identity (SAN matchers or authorizer).
pub(super) fn our_san_refusals() -> Option<u64> {
    let name = mtls_core::metrics::SERVER_TLS_HANDSHAKES;
    let label = mtls_core::metrics::HANDSHAKE_RESULT;
    Some(
        crate::metrics::counter(name, &[(label, "authorizer_denied")])?
            + crate::metrics::counter(name, &[(label, "san_mismatch")])?,
    )
}

/// The calls replica `name`'s servers started (every method; the mesh's servers of one
/// replica share its name: during the Envoy path only its plaintext server is called).
pub(super) fn our_replica_calls(name: &str) -> Option<u64> {
    crate::metrics::counter(
        mtls_tonic::metrics::SERVER_CALL_STARTED,
        &[(crate::server::REPLICA_LABEL, name)],
    )
}

/// The retries our channels made by their retry policy (the sum of
/// `grpc.client.call.retries`, recorded per retried call).
pub(super) fn our_retries() -> Option<u64> {
    crate::metrics::histogram_sum(mtls_tonic::metrics::CALL_RETRIES, &[])
}

/// Our client calls that ended OK (every channel): across the retry step, its calls, each
/// retried once.
pub(super) fn our_calls_ok() -> Option<u64> {
    crate::metrics::histogram_count(
        mtls_tonic::metrics::CLIENT_CALL_DURATION,
        &[(mtls_tonic::metrics::STATUS, "OK")],
    )
}

/// Our ready connections that ended with the server's GOAWAY (every channel).
pub(super) fn our_goaways() -> Option<u64> {
    crate::metrics::counter(
        mtls_tonic::metrics::DISCONNECTIONS,
        &[(mtls_tonic::metrics::DISCONNECT_ERROR, "GOAWAY")],
    )
}

impl super::MeshOutcome {
    /// The side-by-side stats table (`–`: not read).
    pub fn stats_table(&self) -> String {
        let figure = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
        let mut rows = vec![[
            "event".to_owned(),
            "ours (our metrics)".to_owned(),
            "envoy (sidecars' /stats)".to_owned(),
            String::new(),
        ]];
        for r in &self.stats {
            rows.push([
                r.event.to_owned(),
                format!("{} {}", figure(r.proxyless.1), r.proxyless.0),
                format!("{} {}", figure(r.envoy.1), r.envoy.0),
                if r.agrees() { "agree" } else { "DIFFER" }.to_owned(),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }
}
