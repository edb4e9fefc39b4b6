//! BalancedChannel through everyday operations, against a real DNS server on loopback and
//! real mTLS tonic replicas on 127.0.0.2..: fail-fast and wait-for-ready like gRPC, empty DNS
//! answers, graceful shutdowns (rolling restarts) and server-side connection recycling.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mtls_core::{Authorize, ClientConfigBuilder, IdentityHandle, ServerConfigBuilder};
use mtls_tonic::{
    balance::{BalancedChannel, ChannelState, DnsTimeout, ResolutionState, WaitForReady},
    client::MtlsConnector,
    server::ConnectionAge,
};
use support::{
    fixture::{
        Fixture, NAME, TTL, assert_fails_for_no_records, assert_no_failed_call, assert_ready, call,
        finish, finish_without, ip, load, ready_count,
    },
    pki::{CLIENT_ID, Pki},
    replica::Replica,
    wait_until,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn check(
    channel: &BalancedChannel,
    request: tonic::Request<HealthCheckRequest>,
) -> Result<String, tonic::Status> {
    let response = HealthClient::new(channel.clone()).check(request).await?;
    Ok(support::meta(&response, "x-replica"))
}

/// A DNS server naming `ips` and a channel with the default timings to them (on `port`)
/// through `client`, once every one of them is ready: the server (keep it alive) and the
/// channel.
async fn named_and_ready(
    ips: &[Ipv4Addr],
    port: u16,
    client: rustls::ClientConfig,
) -> (support::dns::DnsServer, BalancedChannel) {
    let mut dns = support::dns::DnsServer::start().await;
    dns.set_a(NAME, ips, TTL).await;
    let channel =
        BalancedChannel::builder(format!("bookstore.test:{port}"), MtlsConnector::new(client))
            .nameserver(dns.addr)
            .build()
            .unwrap();
    assert_ready(&channel, ips.len(), Duration::from_secs(5)).await;
    (dns, channel)
}

/// Asserts that `status` names every one of `addrs` and says they refused.
fn assert_names_refusals(status: &tonic::Status, addrs: &[std::net::SocketAddr]) {
    let message = status.message();
    for addr in addrs {
        assert!(
            message.contains(&addr.to_string()),
            "expected {addr} named, saw {message:?}"
        );
    }
    assert!(
        message.to_lowercase().contains("refused"),
        "expected \"refused\", saw {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refusing_fails_fast_and_wait_for_ready_waits() {
    let mut fx = Fixture::start(3, 3).await;
    let addrs: Vec<_> = fx.replicas.values().map(|r| r.addr).collect();
    for replica in fx.replicas.values_mut() {
        replica.kill();
    }
    // A new channel: its first call fails as soon as the first attempts have failed.
    let channel = fx.channel();
    let started = Instant::now();
    let status = call(&channel, "").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(took <= Duration::from_secs(1), "first call took {took:?}");
    assert_names_refusals(&status, &addrs);
    assert_eq!(channel.state(), ChannelState::TransientFailure);
    // Later calls fail at once.
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let status = call(&channel, "").await.unwrap_err();
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("waited 0.0s"),
            "{}",
            status.message()
        );
    }
    took.sort();
    assert!(
        took[10] <= Duration::from_millis(10),
        "median {:?}",
        took[10]
    );
    assert!(
        took[19] <= Duration::from_millis(200),
        "worst {:?}",
        took[19]
    );

    // A call with a deadline and wait-for-ready: DEADLINE_EXCEEDED naming every endpoint.
    let mut request = WaitForReady::on(tonic::Request::new(HealthCheckRequest::default()));
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = check(&channel, request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_names_refusals(&status, &addrs);
    assert!(
        status.message().contains("waiting for a ready endpoint"),
        "{}",
        status.message()
    );

    // Wait-for-ready on one call: it waits and succeeds when a replica comes back.
    let waiter = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut request = WaitForReady::on(tonic::Request::new(HealthCheckRequest::default()));
            request.set_timeout(Duration::from_secs(10));
            check(&channel, request).await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiter.is_finished(),
        "the wait-for-ready call did not wait"
    );
    let back = ip(3);
    fx.replicas.insert(
        back,
        Replica::restart(
            addrs.iter().copied().find(|a| a.ip() == back).unwrap(),
            fx.config.clone(),
        ),
    );
    let served_by = tokio::time::timeout(Duration::from_secs(8), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(served_by, back.to_string());
}

/// A new channel to the replicas on `port` named by `dns` (default 10 s ready timeout),
/// dialing with `config`: its first call must fail UNAVAILABLE within 1 s (a refusal ends
/// the call, not the ready timeout). The channel and the status.
async fn refused_first_call(
    port: u16,
    dns: std::net::SocketAddr,
    config: rustls::ClientConfig,
    context: &str,
) -> (BalancedChannel, tonic::Status) {
    let channel =
        BalancedChannel::builder(format!("bookstore.test:{port}"), MtlsConnector::new(config))
            .nameserver(dns)
            .dns_timeout(DnsTimeout::new(Duration::from_millis(300), 1))
            .build()
            .unwrap();
    let started = Instant::now();
    let status = call(&channel, "").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{context}: {status:?}");
    assert!(took <= Duration::from_secs(1), "{context} took {took:?}");
    (channel, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_id_fails_fast_naming_presented_and_expected() {
    let fx = Fixture::start(3, 3).await;
    let expected = "spiffe://example.org/ns/default/sa/inventory";
    let config = ClientConfigBuilder::new(fx.pki.identity(CLIENT_ID, &[]), fx.pki.trust())
        .authorize(Authorize::exact(expected.parse().unwrap()))
        .build()
        .unwrap();
    let (channel, status) = refused_first_call(fx.port, fx.dns.addr, config, "").await;
    assert!(status.message().contains(expected), "{}", status.message());
    assert!(
        channel
            .endpoints()
            .iter()
            .all(|e| matches!(e.state, mtls_tonic::balance::EndpointState::Refused { .. })),
        "{channel:?}"
    );
    assert!(
        status.message().contains(support::pki::SERVER_ID),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_by_handshake_time_authorization_fails_fast_with_the_alert_every_time() {
    support::init_tracing();
    let pki = Pki::new();
    // The replicas authorize at the handshake: only CLIENT_ID may connect.
    let config = Arc::new(pki.server_config(Authorize::exact(CLIENT_ID.parse().unwrap())));
    let ips: Vec<Ipv4Addr> = (2..5).map(ip).collect();
    let (port, listeners) = support::replica::bind_shared_port(&ips);
    let _replicas: Vec<Replica> = listeners
        .into_iter()
        .map(|l| Replica::start(l, config.clone()))
        .collect();
    let mut dns = support::dns::DnsServer::start().await;
    dns.set_a(NAME, &ips, TTL).await;
    let intruder = "spiffe://example.org/ns/default/sa/intruder";
    for run in 0..20 {
        // A new channel each run, with the default 10 s ready timeout: the refusal must end
        // the call, not the timeout.
        let context = format!("run {run}");
        let (channel, status) =
            refused_first_call(port, dns.addr, pki.client_config(intruder), &context).await;
        let message = status.message();
        assert!(
            message.contains("refused") && message.contains("received fatal alert"),
            "run {run}: {message}"
        );
        for endpoint in channel.endpoints() {
            assert!(
                matches!(&endpoint.state, mtls_tonic::balance::EndpointState::Refused { reason }
                    if reason.contains("the server refused the mTLS session: received fatal alert")),
                "run {run}: {endpoint}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dns_answers_lose_no_call_then_a_smaller_set_drains_the_rest() {
    let (mut fx, channel, (outcomes, stop, handles)) =
        Fixture::under_load("slow:10", Duration::from_millis(300)).await;
    fx.dns.set_a(NAME, &[], TTL).await; // NXDOMAIN
    let empty = wait_until(Duration::from_secs(3), || {
        matches!(channel.resolution(), ResolutionState::NoRecords { .. })
    })
    .await;
    assert!(empty, "{channel:?}");
    assert!(
        channel
            .endpoints()
            .iter()
            .all(|e| e.not_in_dns_since.is_some()),
        "{channel:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fx.dns.set_nodata(NAME).await; // NODATA
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ready_count(&channel), 3, "{channel:?}");
    fx.dns.set_a(NAME, &[ip(2), ip(3)], TTL).await;
    let dropped = wait_until(Duration::from_secs(5), || {
        let endpoints = channel.endpoints();
        endpoints.len() == 2
            && endpoints
                .iter()
                .all(|e| e.addr.ip() != ip(4) && e.not_in_dns_since.is_none())
    })
    .await;
    assert!(dropped, "{channel:?}");
    finish_without(
        (outcomes, stop, handles),
        &ip(4).to_string(),
        Duration::from_millis(300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_empty_answer_drops_everything() {
    let (_fx, channel) = Fixture::strict_then_empty(2).await;
    assert!(
        wait_until(Duration::from_secs(3), || channel.endpoints().is_empty()).await,
        "{channel:?}"
    );
    assert_fails_for_no_records(&channel).await;
}

/// `workers` callers run while each replica in turn shuts down gracefully (GOAWAY, drain)
/// and comes back on the same address, `rounds` times over the three replicas.
async fn rolling_restarts(rounds: usize) -> (usize, Vec<String>) {
    let (mut fx, channel, (outcomes, stop, handles)) =
        Fixture::under_load("slow:5", Duration::from_millis(300)).await;
    let ips: Vec<Ipv4Addr> = (2..5).map(ip).collect();
    for _ in 0..rounds {
        for victim in &ips {
            let replica = fx.replicas.get_mut(victim).unwrap();
            let addr = replica.addr;
            replica.shutdown_gracefully();
            tokio::time::sleep(Duration::from_millis(200)).await;
            fx.replicas
                .insert(*victim, Replica::restart(addr, fx.config.clone()));
            let back = wait_until(Duration::from_secs(5), || ready_count(&channel) == 3).await;
            assert!(back, "{victim} did not come back: {channel:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| format!("{:?}: {}", o.result, o.message))
        .collect();
    (outcomes.len(), failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_graceful_shutdowns_under_load_lose_no_call() {
    let (calls, failed) = rolling_restarts(2).await;
    assert!(
        failed.is_empty(),
        "{} of {calls} calls failed: {failed:?}",
        failed.len()
    );
    assert!(calls > 500, "only {calls} calls");
    eprintln!("rolling restarts: {calls} calls, 0 failed");
}

/// How the replicas recycle connections.
#[derive(Clone, Copy)]
enum Recycler {
    /// `ServerOptions::max_connection_age` (our GOAWAY, jittered per connection).
    Ours,
    /// tonic's own `Server::max_connection_age` (hyper's graceful shutdown of the connection).
    Tonic,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_every_two_seconds_while_identities_rotate_loses_no_call() {
    recycling_while_identities_rotate(Recycler::Ours).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_recycling_every_two_seconds_while_identities_rotate_loses_no_call() {
    recycling_while_identities_rotate(Recycler::Tonic).await;
}

/// 8 callers while the replicas recycle every connection at 2 s and both SVIDs rotate.
async fn recycling_while_identities_rotate(recycler: Recycler) {
    support::init_tracing();
    let pki = Pki::new();
    let ips: Vec<Ipv4Addr> = (2..5).map(ip).collect();
    let (port, listeners) = support::replica::bind_shared_port(&ips);
    let server_svid = |pki: &Pki| {
        let (chain, key) = pki.svid_pem(support::pki::SERVER_ID, &[support::pki::SERVICE_NAME]);
        mtls_core::Identity::from_pem(chain, key).unwrap()
    };
    let client_svid = |pki: &Pki| {
        let (chain, key) = pki.svid_pem(CLIENT_ID, &[]);
        mtls_core::Identity::from_pem(chain, key).unwrap()
    };
    let server_identity = IdentityHandle::new(server_svid(&pki));
    let client_identity = IdentityHandle::new(client_svid(&pki));
    let server_config = Arc::new(
        ServerConfigBuilder::new(server_identity.clone(), pki.trust())
            .authorize(Pki::member_policy())
            .build()
            .unwrap(),
    );
    let _replicas: Vec<Replica> = listeners
        .into_iter()
        .map(|l| match recycler {
            Recycler::Ours => Replica::start_with_options(
                l,
                server_config.clone(),
                mtls_tonic::server::ServerOptions::default().max_connection_age(Some(
                    ConnectionAge::new(Duration::from_secs(2), Duration::from_secs(10)),
                )),
                |server| server,
            ),
            Recycler::Tonic => Replica::start_with(l, server_config.clone(), |server| {
                server.max_connection_age(Duration::from_secs(2))
            }),
        })
        .collect();
    let client_config = ClientConfigBuilder::new(client_identity.clone(), pki.trust())
        .authorize(Authorize::exact(support::pki::SERVER_ID.parse().unwrap()))
        .build()
        .unwrap();
    let (_dns, channel) = named_and_ready(&ips, port, client_config).await;
    // Callers note which replica saw which client certificate.
    let seen = Arc::new(Mutex::new(
        Vec::<(Instant, Result<(String, String), String>)>::new(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (channel, seen, stopped) = (channel.clone(), seen.clone(), stopped.clone());
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    let request = tonic::Request::new(HealthCheckRequest {
                        service: "slow:5".into(),
                    });
                    let outcome = match HealthClient::new(channel.clone()).check(request).await {
                        Ok(response) => {
                            let get = |k: &str| {
                                response
                                    .metadata()
                                    .get(k)
                                    .unwrap()
                                    .to_str()
                                    .unwrap()
                                    .to_owned()
                            };
                            Ok((get("x-replica"), get("x-peer-serial")))
                        }
                        Err(status) => Err(format!("{status:?}")),
                    };
                    seen.lock().unwrap().push((Instant::now(), outcome));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server_identity.rotate(server_svid(&pki));
    let new_client = client_svid(&pki);
    let new_serial = new_client.serial().to_string();
    client_identity.rotate(new_client);
    let rotated = Instant::now();
    let everywhere = wait_until(Duration::from_secs(8), || {
        let seen = seen.lock().unwrap();
        let replicas: std::collections::HashSet<&str> = seen
            .iter()
            .filter(|(at, _)| *at > rotated)
            .filter_map(|(_, o)| o.as_ref().ok())
            .filter(|(_, serial)| *serial == new_serial)
            .map(|(replica, _)| replica.as_str())
            .collect();
        replicas.len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let failed: Vec<_> = seen.iter().filter_map(|(_, o)| o.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        everywhere,
        "the new client certificate did not reach every replica: {channel:?}"
    );
    eprintln!("recycling + rotation: {} calls, 0 failed", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_recycling_sends_goaway_at_age_and_closes_after_grace() {
    support::init_tracing();
    let pki = Pki::new();
    let (port, mut listeners) = support::replica::bind_shared_port(&[ip(2)]);
    let config = Arc::new(pki.server_config(Pki::member_policy()));
    // Younger than 1 s: a GOAWAY is never an endpoint failure, whatever the age.
    let options = mtls_tonic::server::ServerOptions::default().max_connection_age(Some(
        ConnectionAge::new(Duration::from_millis(600), Duration::from_millis(500)),
    ));
    let age = options.max_connection_age.unwrap().age;
    let apply = options.clone();
    let _replica =
        Replica::start_with_options(listeners.remove(0), config, options, move |server| {
            apply.apply(server)
        });
    let (_dns, channel) = named_and_ready(&[ip(2)], port, pki.client_config(CLIENT_ID)).await;
    // A call longer than age + grace on the first connection is cut at the end of the grace.
    let long = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (call(&channel, "slow:6000").await, started.elapsed())
        })
    };
    // Short calls keep succeeding across the GOAWAY and the reconnect.
    let (outcomes, stop, handles) = load(&channel, 8, "slow:5");
    // Connections younger than 1 s get GOAWAY: the endpoint is never counted as failed.
    let failures = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                for endpoint in channel.endpoints() {
                    if matches!(
                        endpoint.state,
                        mtls_tonic::balance::EndpointState::TransientFailure { .. }
                    ) {
                        seen.push(endpoint.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let (result, took) = tokio::time::timeout(Duration::from_secs(8), long)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "a call outliving age + grace was not cut");
    assert!(
        took < age + Duration::from_millis(500) + Duration::from_secs(2),
        "cut after {took:?}"
    );
    let failures = failures.await.unwrap();
    assert!(
        failures.is_empty(),
        "endpoint failed after GOAWAY: {failures:?}"
    );
    finish(stop, handles).await;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_no_failed_call(&outcomes, 100);
}

/// One replica recycling every connection at `age` while 8 callers run for 4 s: every call
/// succeeds (the channel reconnects at once after each GOAWAY, whatever the connection's
/// age, and re-dispatches what the GOAWAY refused), and the connections really were
/// recycled (the replica saw many client ports).
async fn single_replica_recycling(recycler: Recycler, age: Duration) {
    support::init_tracing();
    let pki = Pki::new();
    let (port, mut listeners) = support::replica::bind_shared_port(&[ip(2)]);
    let config = Arc::new(pki.server_config(Pki::member_policy()));
    let listener = listeners.remove(0);
    let _replica = match recycler {
        Recycler::Ours => Replica::start_with_options(
            listener,
            config,
            mtls_tonic::server::ServerOptions::default()
                .max_connection_age(Some(ConnectionAge::new(age, Duration::from_secs(10)))),
            |server| server,
        ),
        Recycler::Tonic => Replica::start_with(listener, config, move |server| {
            server.max_connection_age(age)
        }),
    };
    let (_dns, channel) = named_and_ready(&[ip(2)], port, pki.client_config(CLIENT_ID)).await;
    let ports = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run_for = Duration::from_secs(4);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (channel, ports, failed, calls) = (
                channel.clone(),
                ports.clone(),
                failed.clone(),
                calls.clone(),
            );
            tokio::spawn(async move {
                let until = Instant::now() + run_for;
                while Instant::now() < until {
                    let request = tonic::Request::new(HealthCheckRequest {
                        service: "slow:2".into(),
                    });
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match HealthClient::new(channel.clone()).check(request).await {
                        Ok(response) => {
                            let port = response.metadata().get("x-peer-port").unwrap();
                            ports
                                .lock()
                                .unwrap()
                                .insert(port.to_str().unwrap().to_owned());
                        }
                        Err(status) => failed.lock().unwrap().push(format!("{status:?}")),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .unwrap()
            .unwrap();
    }
    let calls = calls.load(std::sync::atomic::Ordering::Relaxed);
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "age {age:?}: {} of {calls} calls failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(calls > 200, "age {age:?}: only {calls} calls");
    // At least half the recycles the run should have seen (4 s / age, ±10 % jitter).
    let connections = ports.lock().unwrap().len();
    let expected = (run_for.as_secs_f64() / age.as_secs_f64() / 2.0) as usize;
    assert!(
        connections >= expected.max(2),
        "age {age:?}: only {connections} connections served calls"
    );
    eprintln!(
        "single replica recycling at {age:?}: {calls} calls over {connections} connections, 0 failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_recycling_every_second_loses_no_call() {
    single_replica_recycling(Recycler::Ours, Duration::from_secs(1)).await;
    single_replica_recycling(Recycler::Tonic, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_recycling_every_300_ms_loses_no_call() {
    single_replica_recycling(Recycler::Ours, Duration::from_millis(300)).await;
    single_replica_recycling(Recycler::Tonic, Duration::from_millis(300)).await;
}
