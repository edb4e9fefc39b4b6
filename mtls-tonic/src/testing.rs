//! Helpers for your own tests of a [`BalancedChannel`](crate::balance::BalancedChannel) (feature
//! `testing`): a real authoritative DNS server on loopback, in process.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use hickory_proto::rr::{
    LowerName, Name, RData, Record, RecordSet, RecordType, RrKey,
    rdata::{A, SOA, TXT},
};
use hickory_server::{
    Server,
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
};

use crate::{Error, Result};

/// An authoritative DNS server (hickory-server) for one zone, on 127.0.0.1 (UDP and TCP on
/// the same port), whose A records change at run time — a headless Service's DNS for a
/// test, with NXDOMAIN and NODATA on demand. Stops when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), mtls_tonic::Error> {
/// use mtls_tonic::testing::LoopbackDns;
/// let dns = LoopbackDns::start("test").await?;
/// dns.set_a("bookstore.test", &["127.0.0.2".parse().unwrap()], 1).await?;
/// assert!(dns.addr().ip().is_loopback());
/// // A channel resolves through it:
/// // BalancedChannel::builder("bookstore.test:50051", connector).nameserver(dns.addr())
/// dns.set_nodata("bookstore.test").await?; // the name stays, without A records
/// dns.set_a("bookstore.test", &[], 1).await?; // NXDOMAIN
/// # Ok(()) }
/// ```
pub struct LoopbackDns {
    addr: SocketAddr,
    origin: Name,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: AtomicU32,
}

impl std::fmt::Debug for LoopbackDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackDns")
            .field("addr", &self.addr)
            .field("zone", &self.origin.to_string())
            .finish_non_exhaustive()
    }
}

fn name(text: &str) -> Result<Name> {
    let fqdn = if text.ends_with('.') {
        text.to_owned()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&fqdn).map_err(|e| Error::TestDns {
        what: format!("the name {text:?}"),
        reason: e.to_string(),
    })
}

impl LoopbackDns {
    /// Serves `zone` (e.g. `test`) on 127.0.0.1 at a port free for both UDP and TCP. Needs a
    /// tokio runtime.
    pub async fn start(zone: &str) -> Result<Self> {
        Self::start_on(zone, None).await
    }

    /// Like [`LoopbackDns::start`], on `addr` when given (e.g. to bring a stopped server
    /// back on the address a channel knows).
    pub async fn start_on(zone: &str, addr: Option<SocketAddr>) -> Result<Self> {
        let origin = name(zone)?;
        let mut handler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            name(&format!("ns.{origin}"))?,
            name(&format!("admin.{origin}"))?,
            1,
            60,
            60,
            60,
            1,
        );
        handler.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let zone = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let mut server = Server::new(catalog);
        let (udp, tcp) = bind_udp_tcp(addr).await?;
        let addr = udp.local_addr().map_err(|e| Error::TestDns {
            what: "the UDP socket's address".into(),
            reason: e.to_string(),
        })?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Ok(Self {
            addr,
            origin,
            zone,
            server: Some(server),
            serial: AtomicU32::new(1),
        })
    }

    /// The server's address (UDP and TCP), for
    /// [`BalancedChannelBuilder::nameserver`](crate::balance::BalancedChannelBuilder::nameserver).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the A records of `name` with `ips` (TTL `ttl` s). An empty list removes
    /// them: NXDOMAIN if the name has no other records (NODATA at the zone apex).
    pub async fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) -> Result<()> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let name = self::name(name)?;
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if ips.is_empty() {
            records.remove(&key);
            return Ok(());
        }
        let mut set = RecordSet::new(name.clone(), RecordType::A, serial);
        for ip in ips {
            set.insert(
                Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))),
                serial,
            );
        }
        records.insert(key, Arc::new(set));
        Ok(())
    }

    /// Keeps `name` with a TXT record only: A/AAAA queries get NODATA.
    pub async fn set_nodata(&self, name: &str) -> Result<()> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let name = self::name(name)?;
        let mut records = self.zone.records_mut().await;
        records.remove(&RrKey::new(LowerName::new(&name), RecordType::A));
        let mut set = RecordSet::new(name.clone(), RecordType::TXT, serial);
        set.insert(
            Record::from_rdata(name.clone(), 1, RData::TXT(TXT::new(vec!["nodata".into()]))),
            serial,
        );
        records.insert(
            RrKey::new(LowerName::new(&name), RecordType::TXT),
            Arc::new(set),
        );
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

impl Drop for LoopbackDns {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_ref() {
            server.shutdown_token().cancel();
        }
    }
}

/// UDP and TCP on one port: `addr`, or a free port of 127.0.0.1 (resolvers retry over TCP
/// on truncation).
async fn bind_udp_tcp(
    addr: Option<SocketAddr>,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let failed = |what: String| {
        move |e: std::io::Error| Error::TestDns {
            what,
            reason: e.to_string(),
        }
    };
    if let Some(addr) = addr {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(failed(format!("UDP {addr}")))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(failed(format!("TCP {addr}")))?;
        return Ok((udp, tcp));
    }
    let mut last = String::new();
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(failed("UDP 127.0.0.1:0".into()))?;
        let port = udp
            .local_addr()
            .map_err(failed("the UDP socket's address".into()))?
            .port();
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::TestDns {
        what: "a port of 127.0.0.1 free for both UDP and TCP".into(),
        reason: last,
    })
}
