//! Unary calls per second: `BalancedChannel` over 3 mTLS replicas (DNS from an in-process
//! hickory server) vs a plain tonic `Channel` to one replica through the same `MtlsConnector`,
//! plus `BalancedChannel` over that one replica (the balancer's own overhead).
//!
//! `cargo bench -p mtls-tonic --bench balanced -- --measurement-time 5`
// A bench may panic on a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mtls_tonic::{balance::BalancedChannel, client::MtlsConnector};
use support::{
    dns::DnsServer,
    pki::{CLIENT_ID, Pki, SERVICE_NAME},
    replica::{Replica, bind_shared_port},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const CONCURRENCY: usize = 32;
const CALLS_PER_BATCH: usize = 512;

async fn batch<T>(client: &HealthClient<T>)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::Future: Send,
{
    let mut tasks = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..CALLS_PER_BATCH / CONCURRENCY {
                client.check(HealthCheckRequest::default()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new();
    let config = Arc::new(pki.server_config(Pki::member_policy()));
    let ips: Vec<Ipv4Addr> = (2..5).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let (port, listeners) = bind_shared_port(&ips);
    let _replicas: Vec<Replica> = listeners
        .into_iter()
        .map(|l| Replica::start(l, config.clone()))
        .collect();
    let (dns, balanced, single, plain) = rt.block_on(async {
        let mut dns = DnsServer::start().await;
        dns.set_a("bookstore.test.", &ips, 30).await;
        dns.set_a("one.test.", &ips[..1], 30).await;
        let connector = || {
            MtlsConnector::new(pki.client_config(CLIENT_ID))
                .server_name(SERVICE_NAME)
                .unwrap()
        };
        let balanced = BalancedChannel::builder(format!("bookstore.test:{port}"), connector())
            .nameserver(dns.addr)
            .build()
            .unwrap();
        let single = BalancedChannel::builder(format!("one.test:{port}"), connector())
            .nameserver(dns.addr)
            .build()
            .unwrap();
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{}:{port}", ips[0]))
            .unwrap()
            .connect_with_connector(connector())
            .await
            .unwrap();
        // Warm up: every endpoint connected.
        for _ in 0..3 {
            batch(&HealthClient::new(balanced.clone())).await;
            batch(&HealthClient::new(single.clone())).await;
            batch(&HealthClient::new(plain.clone())).await;
        }
        (dns, balanced, single, plain)
    });

    let mut group = c.benchmark_group("unary_calls");
    group.throughput(Throughput::Elements(CALLS_PER_BATCH as u64));
    group.sample_size(10);
    let mut run =
        |name: &str,
         f: &dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            f().await;
                        }
                        start.elapsed()
                    })
                })
            });
        };
    let client = HealthClient::new(balanced.clone());
    run("balanced_channel_3_replicas", &|| {
        let client = client.clone();
        Box::pin(async move { batch(&client).await })
    });
    let client = HealthClient::new(single.clone());
    run("balanced_channel_1_replica", &|| {
        let client = client.clone();
        Box::pin(async move { batch(&client).await })
    });
    let client = HealthClient::new(plain.clone());
    run("tonic_channel_1_replica", &|| {
        let client = client.clone();
        Box::pin(async move { batch(&client).await })
    });
    group.finish();

    // Interleaved rounds, so drifting machine load hits both sides alike: the ratio the
    // acceptance criterion asks for (balanced over 3 replicas / plain channel to one).
    let (balanced_client, plain_client) = (
        HealthClient::new(balanced.clone()),
        HealthClient::new(plain.clone()),
    );
    let (mut t_balanced, mut t_plain) = (Duration::ZERO, Duration::ZERO);
    rt.block_on(async {
        for _ in 0..20 {
            let start = Instant::now();
            batch(&balanced_client).await;
            t_balanced += start.elapsed();
            let start = Instant::now();
            batch(&plain_client).await;
            t_plain += start.elapsed();
        }
    });
    let rate = |t: Duration| (20 * CALLS_PER_BATCH) as f64 / t.as_secs_f64();
    eprintln!(
        "interleaved: balanced(3 replicas) {:.0} calls/s, tonic Channel(1 replica) {:.0} calls/s, ratio {:.3}",
        rate(t_balanced),
        rate(t_plain),
        rate(t_balanced) / rate(t_plain)
    );
    drop(dns);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
