//! An authoritative DNS server (hickory-server, in process) for zone `test.` on loopback,
//! whose A records change at run time.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
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

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: u32,
}

impl DnsServer {
    /// Serves zone `test.` on 127.0.0.1 (UDP and TCP, same port).
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// Like [`DnsServer::start`], on `addr` when given (e.g. to restart a stopped server).
    pub async fn start_on(addr: Option<SocketAddr>) -> Self {
        let origin = Name::from_ascii("test.").unwrap();
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            60,
            60,
            60,
            1,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let mut server = Server::new(catalog);
        // UDP and TCP on the same port: find one free for both.
        let (udp, tcp) = loop {
            if let Some(addr) = addr {
                let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
                let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
                break (udp, tcp);
            }
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Self {
            addr,
            zone,
            server: Some(server),
            serial: 1,
        }
    }

    /// Replaces the A records of `name` (e.g. `bookstore.test.`) with `ips`, TTL `ttl` s.
    /// An empty list removes the name (NXDOMAIN).
    pub async fn set_a(&mut self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        self.serial += 1;
        let name = Name::from_ascii(name).unwrap();
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if ips.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::new(name.clone(), RecordType::A, self.serial);
        for ip in ips {
            set.insert(
                Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))),
                self.serial,
            );
        }
        records.insert(key, Arc::new(set));
    }

    /// Keeps `name` in the zone with a TXT record only: A/AAAA queries get NODATA.
    pub async fn set_nodata(&mut self, name: &str) {
        self.serial += 1;
        let name = Name::from_ascii(name).unwrap();
        let mut records = self.zone.records_mut().await;
        records.remove(&RrKey::new(LowerName::new(&name), RecordType::A));
        let mut set = RecordSet::new(name.clone(), RecordType::TXT, self.serial);
        set.insert(
            Record::from_rdata(name.clone(), 1, RData::TXT(TXT::new(vec!["nodata".into()]))),
            self.serial,
        );
        records.insert(
            RrKey::new(LowerName::new(&name), RecordType::TXT),
            Arc::new(set),
        );
    }

    /// Stops answering (sockets closed).
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), server.shutdown_gracefully()).await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_ref() {
            server.shutdown_token().cancel();
        }
    }
}
