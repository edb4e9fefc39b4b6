//! tonic parity of the balanced channel: which endpoint served a call (`ServedBy`), and
//! tonic `Endpoint`'s settings on the builder, each shown to take effect against real
//! replicas on loopback.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use mtls_tonic::{LoadPolicy, ServedBy};
use support::fixture::Fixture;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every response names the endpoint that served it, and it is the replica that answered
/// (the replica names itself in `x-replica`): 30 calls over 3 replicas, each seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_the_endpoint_that_served_it() {
    let fixture = Fixture::start(3, 3).await;
    let channel = fixture
        .builder()
        .load_policy(LoadPolicy::RoundRobin)
        .build()
        .unwrap();
    let mut client = HealthClient::new(channel.clone());
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let response = client.check(HealthCheckRequest::default()).await.unwrap();
        let replica = response
            .metadata()
            .get("x-replica")
            .unwrap()
            .to_str()
            .unwrap();
        let ServedBy(addr) = *response.extensions().get::<ServedBy>().unwrap();
        assert_eq!(addr.ip().to_string(), replica);
        assert_eq!(addr.port(), fixture.port);
        *served.entry(replica.to_owned()).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "{served:?}");
}
