//! Client channels into the mesh: proxyless (balanced mTLS) and through the client sidecar.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mtls_tonic::{
    balance::{BalancedChannel, BalancedChannelBuilder, LoadPolicy},
    client::MtlsConnector,
};

use crate::{
    Error, MeshPolicy, Result,
    identity::{Workload, WorkloadIdentities, client_tls},
};

/// A proxyless balanced mTLS channel to `policy.service_name:port`, resolved through `dns`,
/// presenting `workload`'s SVID, round robin over ready replicas.
pub fn proxyless_channel(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    workload: Workload,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannel> {
    proxyless_channel_builder(policy, ids, workload, port, dns)?
        .build()
        .map_err(|e| Error::tonic("building the balanced channel", e))
}

/// The builder behind [`proxyless_channel`], to adjust before `build()` (load policy,
/// timeouts).
pub fn proxyless_channel_builder(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    workload: Workload,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannelBuilder> {
    let connector = MtlsConnector::new(client_tls(ids, policy, workload)?)
        .server_name(&policy.service_name)
        .map_err(|e| Error::tonic("server name", e))?;
    Ok(
        BalancedChannel::builder(format!("{}:{port}", policy.service_name), connector)
            .nameserver(dns)
            .load_policy(LoadPolicy::RoundRobin)
            .ready_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3)),
    )
}

/// The intruder's channel: it gives up after one second without a ready endpoint.
pub(super) fn intruder_channel(
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannel> {
    proxyless_channel_builder(policy, ids, Workload::Intruder, port, dns)?
        .ready_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::tonic("building the intruder's channel", e))
}

/// Waits (up to `timeout`) until `n` endpoints of `channel` are ready.
pub async fn wait_ready(channel: &BalancedChannel, n: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let endpoints = channel.endpoints();
        if endpoints.iter().filter(|e| e.state.is_ready()).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            let states: Vec<String> = endpoints
                .iter()
                .map(|e| format!("{} {:?}", e.addr, e.state))
                .collect();
            return Err(Error::Config(format!(
                "{n} ready endpoints expected within {timeout:?}, have: [{}]; DNS: {:?}",
                states.join(", "),
                channel.resolution()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An h2c channel to the client sidecar.
pub async fn envoy_channel(listen: SocketAddr) -> Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .map_err(|e| Error::Config(format!("sidecar address {listen}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| Error::Config(format!("connecting to the client sidecar on {listen}: {e}")))
}
