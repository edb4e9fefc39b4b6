//! The Envoy sidecars: one per replica, and the client's.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use super::*;
use crate::{
    Error, MeshPolicy, Result,
    envoy::{ClientSidecar, EnvoyProcess, ServerSidecar},
    identity::{Workload, WorkloadIdentities},
    server,
};

/// The Envoy side of the mesh: one server sidecar per replica on `<replica ip>:<port>`, and
/// the client sidecar on `127.0.0.1:<port>` (its route retries UNAVAILABLE answers, as the
/// proxyless channel's retry policy). Every Envoy is killed when this is dropped.
#[derive(Debug)]
pub struct Sidecars {
    port: u16,
    client_listen: SocketAddr,
    servers: Vec<EnvoyProcess>,
    client: EnvoyProcess,
}

impl Sidecars {
    /// Starts the sidecars with `envoy`, writing configs and logs into `dir`.
    pub async fn start(
        envoy: &Path,
        dir: &Path,
        policy: &MeshPolicy,
        ids: &dyn WorkloadIdentities,
        jwks: &str,
        replicas: &Replicas,
        dns: SocketAddr,
    ) -> Result<Self> {
        let ips: Vec<Ipv4Addr> = replicas
            .mtls_addrs()
            .iter()
            .filter_map(|a| match a.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        // A common free port on every replica address; released just before Envoy binds it.
        let (port, probe) = bind_shared_port(&ips).await?;
        drop(probe);
        let server_certs = ids.envoy_certs(Workload::Bookstore)?;
        let mut servers = Vec::new();
        for (ip, upstream) in ips.iter().zip(replicas.plaintext_addrs()) {
            let sidecar = ServerSidecar::new(
                SocketAddr::from((*ip, port)),
                upstream,
                jwks.to_owned(),
                server_certs.clone(),
            );
            let name = format!("server-sidecar-{ip}");
            servers.push(EnvoyProcess::start(envoy, &name, &sidecar.bootstrap(policy), dir).await?);
        }
        let client_listen = {
            let l = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).await?;
            l.local_addr()
                .map_err(|e| Error::io("reading a listener's address", e))?
        };
        let mut sidecar =
            ClientSidecar::new(client_listen, port, ids.envoy_certs(Workload::Client)?);
        sidecar.dns = Some(dns);
        sidecar.dns_refresh_secs = 2;
        // The proxyless channel's policy: UNAVAILABLE, the same number of attempts.
        sidecar.unavailable_retries = super::retries::RETRY_ATTEMPTS - 1;
        let client =
            EnvoyProcess::start(envoy, "client-sidecar", &sidecar.bootstrap(policy), dir).await?;
        let sidecars = Self {
            port,
            client_listen,
            servers,
            client,
        };
        sidecars
            .wait_hosts(ips.len(), Duration::from_secs(10))
            .await?;
        Ok(sidecars)
    }

    /// The server sidecars' common port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the application connects (plaintext HTTP/2).
    pub fn client_listen(&self) -> SocketAddr {
        self.client_listen
    }

    /// The client sidecar.
    pub fn client(&self) -> &EnvoyProcess {
        &self.client
    }

    /// The server sidecars, in replica order.
    pub fn servers(&self) -> &[EnvoyProcess] {
        &self.servers
    }

    /// Waits until the client sidecar's `bookstore` cluster has `n` hosts (from DNS).
    pub async fn wait_hosts(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let hosts = self.client.cluster_hosts("bookstore").await?;
            if hosts.len() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::envoy(
                    self.client.name(),
                    format!("cluster bookstore has hosts {hosts:?}, {n} expected from DNS"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many handshakes used each key-exchange group: the client sidecar's upstream
    /// (`cluster.bookstore.ssl.curves.*`) and the server sidecars' listeners (summed).
    pub async fn curves(&self) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>)> {
        let client = self
            .client
            .stats()
            .await?
            .into_iter()
            .filter_map(|(name, n)| {
                let group = name.strip_prefix("cluster.bookstore.ssl.curves.")?;
                (n > 0).then(|| (group.to_owned(), n))
            })
            .collect();
        let mut servers: Vec<(String, u64)> = Vec::new();
        for server in &self.servers {
            for (name, n) in server.stats().await? {
                let Some((_, group)) = name.split_once(".ssl.curves.") else {
                    continue;
                };
                if !name.starts_with("listener.") || n == 0 {
                    continue;
                }
                match servers.iter_mut().find(|(g, _)| g == group) {
                    Some((_, sum)) => *sum += n,
                    None => servers.push((group.to_owned(), n)),
                }
            }
        }
        Ok((client, servers))
    }

    /// `http.<prefix>.jwt_authn.denied` summed over the server sidecars (their JWT filter).
    pub async fn jwt_denied(&self) -> Result<u64> {
        let mut sum = 0;
        for server in &self.servers {
            sum += server.counter("jwt_authn.denied").await?;
        }
        Ok(sum)
    }

    /// `cluster.<name>.upstream_cx_close_notify` (upstream connections the server closed
    /// with a GOAWAY) summed over the server sidecars: what a replica's graceful shutdown
    /// sends to its sidecar.
    pub async fn upstream_close_notify(&self) -> Result<u64> {
        let mut sum = 0;
        for server in &self.servers {
            sum += server.counter("upstream_cx_close_notify").await?;
        }
        Ok(sum)
    }

    /// The client sidecar's `cluster.bookstore.upstream_rq_retry`: retries its route's
    /// retry policy made (UNAVAILABLE answers retried).
    pub async fn upstream_rq_retry(&self) -> Result<u64> {
        self.client
            .counter("cluster.bookstore.upstream_rq_retry")
            .await
    }

    /// The client sidecar's `cluster.bookstore.upstream_rq_retry_success`: retries that
    /// were answered successfully.
    pub async fn upstream_rq_retry_success(&self) -> Result<u64> {
        self.client
            .counter("cluster.bookstore.upstream_rq_retry_success")
            .await
    }

    /// The client sidecar's `cluster.bookstore.upstream_rq_retry_overflow`: retries its
    /// circuit breaker refused (0 with the mesh's uncapped `max_retries`; Envoy's default
    /// is 3 in flight per cluster).
    pub async fn upstream_rq_retry_overflow(&self) -> Result<u64> {
        self.client
            .counter("cluster.bookstore.upstream_rq_retry_overflow")
            .await
    }

    /// `ssl.fail_verify_san` summed over the server sidecars.
    pub async fn fail_verify_san(&self) -> Result<u64> {
        let mut sum = 0;
        for server in &self.servers {
            sum += server.counter("ssl.fail_verify_san").await?;
        }
        Ok(sum)
    }
}
