//! Issue 15: the agent's counters read back through `metrics-util`'s `DebuggingRecorder`
//! (agent, its accept loops and the clients on the test's current-thread runtime): SVIDs
//! issued at start and per rotation, rotations by reason, Workload API connections, a caller
//! with no registration entry refused; the steps of a CA rotation.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mtls-core/tests/support/metrics.rs"]
mod recorded;
mod support;

use std::time::Duration;

use mtls_agent::metrics::{
    CALLERS_REFUSED, CONNECTIONS, REASON, RESULT, ROTATIONS, SOCKET, SVIDS_ISSUED,
};
use recorded::Recorded;
use support::pb::workload::{X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use support::*;

async fn fetch(socket: std::path::PathBuf) -> tonic::Code {
    let mut client = SpiffeWorkloadApiClient::new(unix_channel(socket).await);
    let request = workload_request(X509svidRequest {});
    match client.fetch_x509svid(request).await {
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(Some(_)) => tonic::Code::Ok,
            Ok(None) => tonic::Code::Unknown,
            Err(status) => status.code(),
        },
        Err(status) => status.code(),
    }
}

#[test]
fn svids_rotations_connections_and_refused_callers_are_counted() {
    let rec = Recorded::new();
    let values = rec.block_on(async {
        let served = TestAgent::start(&web_for_me()).await;
        served.agent.rotate_now().unwrap();
        assert_eq!(
            fetch(served.agent.workload_socket().to_owned()).await,
            tonic::Code::Ok
        );
        // Another agent whose only entry is for another uid: we get no identity.
        let other = my_uid().wrapping_add(4242);
        let refusing = TestAgent::start(&format!(
            "entries:\n  - spiffe_id: {WEB}\n    selectors: {{ uid: {other} }}\n"
        ))
        .await;
        assert_eq!(
            fetch(refusing.agent.workload_socket().to_owned()).await,
            tonic::Code::PermissionDenied
        );
        rec.take_until(Duration::from_secs(10), |v| {
            v.counter_total(CALLERS_REFUSED) >= 1
        })
        .await
    });
    // One SVID at each start (the second agent's entry is registered too), one per rotation.
    assert_eq!(values.counter(SVIDS_ISSUED, &[]), 3);
    assert_eq!(values.counter(ROTATIONS, &[(REASON, "requested")]), 1);
    assert_eq!(values.counter_total(ROTATIONS), 1);
    assert_eq!(
        values.counter(
            CONNECTIONS,
            &[(SOCKET, "Workload API"), (RESULT, "accepted")]
        ),
        2,
        "{:?}",
        values.label_sets(CONNECTIONS)
    );
    assert_eq!(values.counter(CALLERS_REFUSED, &[]), 1);
}

#[test]
fn ca_rotation_steps_are_counted() {
    use mtls_agent::metrics::{CA_ROTATIONS, PHASE};
    let rec = Recorded::new();
    let values = rec.block_on(async {
        let t = TestAgent::start_with(&web_for_me(), |c| {
            c.ca_activation_delay(Duration::from_secs(3600))
        })
        .await;
        t.agent.rotate_ca().unwrap();
        t.agent.activate_prepared_ca().unwrap();
        t.agent.retire_old_cas().unwrap();
        rec.take_until(Duration::from_secs(10), |v| {
            v.counter_total(CA_ROTATIONS) >= 3
        })
        .await
    });
    for phase in ["prepared", "activated", "retired"] {
        assert_eq!(
            values.counter(CA_ROTATIONS, &[(PHASE, phase)]),
            1,
            "{phase}"
        );
    }
    // Activation reissues every SVID: one rotation, reason "CA rotation".
    assert_eq!(values.counter(ROTATIONS, &[(REASON, "CA rotation")]), 1);
    assert_eq!(values.counter(SVIDS_ISSUED, &[]), 2);
}
