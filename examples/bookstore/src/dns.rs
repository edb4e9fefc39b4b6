//! An authoritative DNS server in process (hickory-server) answering one name with the
//! replicas' addresses, on 127.0.0.1 (UDP and TCP, same port) — what a headless Service's
//! DNS is in Kubernetes. Both the proxyless client and the client Envoy resolve through it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::rr::{
    LowerName, Name, RData, Record, RecordSet, RecordType, RrKey,
    rdata::{A, SOA},
};
use hickory_server::{
    Server,
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
};

use crate::{Error, Result};

/// A DNS server for one name (the zone apex) whose A records can change at run time.
/// Stops when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), bookstore::Error> {
/// let dns = bookstore::MeshDns::start("bookstore.local", &["127.0.0.2".parse().unwrap()], 5).await?;
/// assert!(dns.addr().ip().is_loopback());
/// dns.set_addrs(&["127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap()]).await?;
/// # Ok(()) }
/// ```
pub struct MeshDns {
    addr: SocketAddr,
    name: Name,
    ttl: u32,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for MeshDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshDns")
            .field("addr", &self.addr)
            .field("name", &self.name.to_string())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MeshDns {
    /// Serves `name` → `addrs` (A records, TTL `ttl` seconds) on 127.0.0.1 at a free port.
    /// Needs a tokio runtime.
    pub async fn start(name: &str, addrs: &[Ipv4Addr], ttl: u32) -> Result<Self> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let origin =
            Name::from_ascii(&fqdn).map_err(|e| Error::Dns(format!("name {name:?}: {e}")))?;
        let mname = Name::from_ascii(format!("ns.{fqdn}"))
            .map_err(|e| Error::Dns(format!("name ns.{fqdn}: {e}")))?;
        let rname = Name::from_ascii(format!("admin.{fqdn}"))
            .map_err(|e| Error::Dns(format!("name admin.{fqdn}: {e}")))?;
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(mname, rname, 1, 60, 60, 60, ttl);
        zone.upsert_mut(Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let mut server = Server::new(catalog);
        let (udp, tcp) = bind_udp_tcp().await?;
        let addr = udp
            .local_addr()
            .map_err(|e| Error::Dns(format!("local address: {e}")))?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        let dns = Self {
            addr,
            name: origin,
            ttl,
            zone,
            server: Some(server),
            serial: 1.into(),
        };
        dns.set_addrs(addrs).await?;
        Ok(dns)
    }

    /// The server's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name served, without the trailing dot.
    pub fn name(&self) -> String {
        self.name.to_string().trim_end_matches('.').to_owned()
    }

    /// Replaces the A records. An empty list removes them (NODATA).
    pub async fn set_addrs(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let key = RrKey::new(LowerName::new(&self.name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if addrs.is_empty() {
            records.remove(&key);
            return Ok(());
        }
        let mut set = RecordSet::new(self.name.clone(), RecordType::A, serial);
        for ip in addrs {
            set.insert(
                Record::from_rdata(self.name.clone(), self.ttl, RData::A(A(*ip))),
                serial,
            );
        }
        records.insert(key, Arc::new(set));
        Ok(())
    }

    /// Stops answering and closes the sockets.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), server.shutdown_gracefully()).await;
        }
    }
}

impl Drop for MeshDns {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_ref() {
            server.shutdown_token().cancel();
        }
    }
}

/// UDP and TCP on one port of 127.0.0.1 (c-ares and hickory retry over TCP on truncation).
async fn bind_udp_tcp() -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = String::new();
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Dns(format!("binding UDP on 127.0.0.1: {e}")))?;
        let port = udp
            .local_addr()
            .map_err(|e| Error::Dns(format!("local address: {e}")))?
            .port();
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::Dns(format!(
        "no port of 127.0.0.1 free for both UDP and TCP ({last})"
    )))
}
