//! What the agent counts, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, off by default; the `mtls-agent` binary serves them with `--metrics-listen`
//! when built with it). Without the feature every function here is an empty `#[inline]`
//! body. Names and their SPIRE / Envoy equivalents: the repository's METRICS.md.
//!
//! | metric (labels) | kind | SPIRE agent |
//! |---|---|---|
//! | `mtls.agent.svids.issued` | counter | `spire_agent_svid_*` (rotations of cached SVIDs) |
//! | `mtls.agent.rotations` (`reason` = `half-life`/`requested`/`registration reloaded`/`CA rotation`) | counter | `spire_agent_manager_sync` |
//! | `mtls.agent.ca.rotations` (`phase` = `prepared`/`activated`/`retired`) | counter | the SPIRE server CA manager's prepare/activate steps |
//! | `mtls.agent.connections` (`socket` = `Workload API`/`SDS`, `result` = `accepted`/`refused`) | counter | `spire_agent_workload_api_connection` |
//! | `mtls.agent.callers.refused` | counter | `spire_agent_workload_api_..._no_identity_issued` |
//!
//! A caller is refused (`mtls.agent.callers.refused`) when it is answered PERMISSION_DENIED
//! "no identity issued": no registration entry matches it, or it is no longer the process
//! that connected.
//!
//! ```
//! assert_eq!(mtls_agent::metrics::CALLERS_REFUSED, "mtls.agent.callers.refused");
//! mtls_agent::metrics::describe(); // help texts; a no-op without a recorder
//! ```

/// Counter: X509-SVIDs issued (at start, on every rotation, for every registered ID).
pub const SVIDS_ISSUED: &str = "mtls.agent.svids.issued";
/// Counter: rotations (a new SVID for every ID), by [`REASON`].
pub const ROTATIONS: &str = "mtls.agent.rotations";
/// Label of [`ROTATIONS`]: `half-life`, `requested`, `registration reloaded` or
/// `CA rotation` (a new CA activated).
pub const REASON: &str = "reason";
/// Counter: CA rotation steps ([`Agent::rotate_ca`](crate::Agent::rotate_ca)), by [`PHASE`].
pub const CA_ROTATIONS: &str = "mtls.agent.ca.rotations";
/// Label of [`CA_ROTATIONS`]: `prepared` (a new root joined the bundle), `activated` (it
/// issues the SVIDs) or `retired` (a former root left the bundle).
pub const PHASE: &str = "phase";
/// Counter: connections to the agent's sockets, by [`SOCKET`] and [`RESULT`].
pub const CONNECTIONS: &str = "mtls.agent.connections";
/// Label of [`CONNECTIONS`]: `Workload API` or `SDS`.
pub const SOCKET: &str = "socket";
/// Label of [`CONNECTIONS`]: `accepted` or `refused` (over a connection limit).
pub const RESULT: &str = "result";
/// Counter: callers answered PERMISSION_DENIED "no identity issued".
pub const CALLERS_REFUSED: &str = "mtls.agent.callers.refused";

/// Describes every metric of the agent (and mtls-jwt's) to the installed recorder; a no-op
/// without the feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::describe_counter;
        mtls_jwt::metrics::describe();
        describe_counter!(SVIDS_ISSUED, "X509-SVIDs issued");
        describe_counter!(ROTATIONS, "SVID rotations, by reason");
        describe_counter!(
            CA_ROTATIONS,
            "CA rotation steps: a new root prepared, activated, or a former root retired"
        );
        describe_counter!(
            CONNECTIONS,
            "Connections to the Workload API and SDS sockets, accepted or refused"
        );
        describe_counter!(CALLERS_REFUSED, "Callers answered 'no identity issued'");
    }
}

/// `count` SVIDs issued.
#[inline]
pub(crate) fn svids_issued(count: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(SVIDS_ISSUED).increment(u64::try_from(count).unwrap_or(u64::MAX));
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// One rotation.
#[inline]
pub(crate) fn rotation(reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(ROTATIONS, REASON => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// One step of a CA rotation.
#[inline]
pub(crate) fn ca_rotation(phase: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CA_ROTATIONS, PHASE => phase).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = phase;
}

/// A connection to `socket` accepted or refused.
#[inline]
pub(crate) fn connection(socket: &'static str, accepted: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CONNECTIONS, SOCKET => socket,
        RESULT => if accepted { "accepted" } else { "refused" })
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (socket, accepted);
}

/// A caller refused with "no identity issued".
#[inline]
pub(crate) fn caller_refused() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CALLERS_REFUSED).increment(1);
}
