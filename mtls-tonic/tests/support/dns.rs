//! The loopback DNS server for zone `test.`: mtls-tonic's exported
//! [`LoopbackDns`](mtls_tonic::testing::LoopbackDns) (feature `testing`), with the
//! panicking setters a test wants.

use std::net::{Ipv4Addr, SocketAddr};

use mtls_tonic::testing::LoopbackDns;

pub struct DnsServer {
    pub addr: SocketAddr,
    inner: LoopbackDns,
}

impl DnsServer {
    /// Serves zone `test.` on 127.0.0.1 (UDP and TCP, same port).
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// Like [`DnsServer::start`], on `addr` when given (e.g. to restart a stopped server).
    pub async fn start_on(addr: Option<SocketAddr>) -> Self {
        let inner = LoopbackDns::start_on("test.", addr).await.unwrap();
        Self {
            addr: inner.addr(),
            inner,
        }
    }

    /// Replaces the A records of `name` (e.g. `bookstore.test.`) with `ips`, TTL `ttl` s.
    /// An empty list removes the name (NXDOMAIN).
    pub async fn set_a(&mut self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        self.inner.set_a(name, ips, ttl).await.unwrap();
    }

    /// Keeps `name` in the zone with a TXT record only: A/AAAA queries get NODATA.
    pub async fn set_nodata(&mut self, name: &str) {
        self.inner.set_nodata(name).await.unwrap();
    }

    /// Stops answering (sockets closed).
    pub async fn stop(&mut self) {
        self.inner.stop().await;
    }
}
