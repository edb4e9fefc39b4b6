//! The replicas: in-process bookstore servers on one shared port.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use mtls_jwt::JwksSource;

use crate::{
    BookstoreService, Error, MeshPolicy, Result, Security, ServerHandle, Store,
    faults::FailFirstAttempts,
    identity::{WorkloadIdentities, server_tls},
    server,
};

/// The replicas' addresses: three loopback addresses, one per replica, as a headless
/// Service gives one per pod.
pub const REPLICA_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// Binds every address in `ips` on one common free port (DNS A records carry no port).
pub async fn bind_shared_port(ips: &[Ipv4Addr]) -> Result<(u16, Vec<tokio::net::TcpListener>)> {
    let first_ip = *ips
        .first()
        .ok_or_else(|| Error::Config("no replica address".into()))?;
    let mut last = String::new();
    for _ in 0..100 {
        let first = server::bind(SocketAddr::from((first_ip, 0)), false).await?;
        let port = first
            .local_addr()
            .map_err(|e| Error::io("reading a listener's address", e))?
            .port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match server::bind(SocketAddr::from((*ip, port)), false).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
        if listeners.len() == ips.len() {
            return Ok((port, listeners));
        }
    }
    Err(Error::Config(format!(
        "no port free on all of {ips:?} (last error: {last}); on macOS, add the loopback \
         aliases first: sudo ifconfig lo0 alias 127.0.0.2 (and .3, .4)"
    )))
}

/// In-process bookstore replicas sharing one [`Store`] (stateless replicas over one
/// database): each serves mTLS + JWT on `<ip>:<port>` (one port for all) for proxyless
/// clients, and plaintext on `127.0.0.1:<ephemeral>` for its Envoy sidecar. Each answers
/// with its IP as replica name. They run in demo mode: a call marked with
/// [`crate::faults::FAIL_FIRST_ATTEMPT_HEADER`] fails its first attempt, once across all of
/// them ([`Replicas::faults`]).
pub struct Replicas {
    port: u16,
    pub(super) replicas: Vec<(String, ServerHandle, ServerHandle)>,
    tls: Arc<rustls::ServerConfig>,
    validator: mtls_jwt::Validator,
    policy: MeshPolicy,
    store: Store,
    faults: FailFirstAttempts,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("port", &self.port)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// Starts one replica per address in `ips`.
    pub async fn start(
        ips: &[Ipv4Addr],
        policy: &MeshPolicy,
        ids: &dyn WorkloadIdentities,
        jwks: &str,
        store: Store,
    ) -> Result<Self> {
        let tls = Arc::new(server_tls(ids, policy)?);
        let validator = policy.validator(JwksSource::inline(jwks))?;
        let (port, listeners) = bind_shared_port(ips).await?;
        let mut this = Self {
            port,
            replicas: Vec::new(),
            tls,
            validator,
            policy: policy.clone(),
            store,
            faults: FailFirstAttempts::new(),
        };
        for (ip, listener) in ips.iter().zip(listeners) {
            let plain_listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).await?;
            let replica = this.spawn(&ip.to_string(), listener, plain_listener)?;
            this.replicas.push(replica);
        }
        Ok(this)
    }

    fn spawn(
        &self,
        name: &str,
        listener: tokio::net::TcpListener,
        plain_listener: tokio::net::TcpListener,
    ) -> Result<(String, ServerHandle, ServerHandle)> {
        let service = BookstoreService::new(self.store.clone(), name)?
            .fail_first_attempts(self.faults.clone());
        let mtls = server::spawn(
            listener,
            service.clone(),
            Security::Mtls {
                tls: self.tls.clone(),
                policy: self.policy.method_policy()?,
                jwt: Some((self.validator.clone(), self.policy.jwt_rules()?)),
            },
        )?;
        let plaintext = server::spawn(plain_listener, service, Security::Plaintext)?;
        Ok((name.to_owned(), mtls, plaintext))
    }

    /// Restarts replica `index` as a rolling update does: it shuts down gracefully (stops
    /// accepting, HTTP/2 GOAWAY, calls in flight finish, at most 2 s), stays down for
    /// `down`, and comes back on the same addresses.
    pub async fn restart(&mut self, index: usize, down: Duration) -> Result<()> {
        if index >= self.replicas.len() {
            return Err(Error::Config(format!(
                "no replica {index}: expected 0..{}",
                self.replicas.len()
            )));
        }
        let (name, mtls, plaintext) = self.replicas.remove(index);
        let (mtls_addr, plain_addr) = (mtls.addr(), plaintext.addr());
        let (a, b) = tokio::join!(mtls.stop(), plaintext.stop());
        a?;
        b?;
        tokio::time::sleep(down).await;
        let mut last = None;
        for _ in 0..50 {
            match (
                server::bind(mtls_addr, false).await,
                server::bind(plain_addr, true).await,
            ) {
                (Ok(listener), Ok(plain)) => {
                    let replica = self.spawn(&name, listener, plain)?;
                    self.replicas.insert(index, replica);
                    return Ok(());
                }
                (Err(e), _) | (_, Err(e)) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| Error::Config(format!("cannot rebind {mtls_addr}"))))
    }

    /// The first attempts the replicas failed on purpose (demo mode, shared by all of them
    /// and kept across restarts).
    pub fn faults(&self) -> &FailFirstAttempts {
        &self.faults
    }

    /// The common mTLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The replicas' names (their IPs).
    pub fn names(&self) -> Vec<String> {
        self.replicas.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// The mTLS addresses.
    pub fn mtls_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|(_, m, _)| m.addr()).collect()
    }

    /// The plaintext (loopback) addresses, for sidecars.
    pub fn plaintext_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|(_, _, p)| p.addr()).collect()
    }
}
