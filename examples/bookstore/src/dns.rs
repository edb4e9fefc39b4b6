//! An authoritative DNS server in process (hickory-server) answering one name with the
//! replicas' addresses, on 127.0.0.1 (UDP and TCP, same port) — what a headless Service's
//! DNS is in Kubernetes. Both the proxyless client and the client Envoy resolve through it.

use std::net::{Ipv4Addr, SocketAddr};

use mtls_tonic::testing::LoopbackDns;

use crate::{Error, Result};

/// A DNS server for one name (the zone apex) whose A records can change at run time:
/// mtls-tonic's [`LoopbackDns`] (feature `testing`) serving that name. Stops when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), bookstore::Error> {
/// let dns = bookstore::MeshDns::start("bookstore.local", &["127.0.0.2".parse().unwrap()], 5).await?;
/// assert!(dns.addr().ip().is_loopback());
/// dns.set_addrs(&["127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap()]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MeshDns {
    dns: LoopbackDns,
    name: String,
    ttl: u32,
}

fn dns_error(e: mtls_tonic::Error) -> Error {
    Error::Dns(e.to_string())
}

impl MeshDns {
    /// Serves `name` → `addrs` (A records, TTL `ttl` seconds) on 127.0.0.1 at a free port.
    /// Needs a tokio runtime.
    pub async fn start(name: &str, addrs: &[Ipv4Addr], ttl: u32) -> Result<Self> {
        let name = name.trim_end_matches('.').to_owned();
        let dns = LoopbackDns::start(&name).await.map_err(dns_error)?;
        let dns = Self { dns, name, ttl };
        dns.set_addrs(addrs).await?;
        Ok(dns)
    }

    /// The server's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// The name served, without the trailing dot.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Replaces the A records. An empty list removes them (NODATA).
    pub async fn set_addrs(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        self.dns
            .set_a(&self.name, addrs, self.ttl)
            .await
            .map_err(dns_error)
    }

    /// Stops answering and closes the sockets.
    pub async fn stop(&mut self) {
        self.dns.stop().await;
    }
}
