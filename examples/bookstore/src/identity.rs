//! Where the mesh's workloads get their identities: the files of a [`MeshPki`], or an
//! identity agent ([`AgentIdentities`](crate::AgentIdentities): the SPIFFE Workload API for
//! the in-process workloads, SDS for the Envoy sidecars, rotation with no restart).

use std::{fmt, sync::Arc};

use mtls_core::{ClientConfigBuilder, IdentitySource, ServerConfigBuilder, TrustSource};

use crate::{Error, MeshPki, MeshPolicy, Result, envoy::CertSource};

/// The workloads of the example mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Workload {
    /// The bookstore replicas (and their sidecars).
    Bookstore,
    /// The allowed client (and its sidecar).
    Client,
    /// A workload of the trust domain the bookstore does not allow.
    Intruder,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Bookstore => "bookstore",
            Workload::Client => "client",
            Workload::Intruder => "intruder",
        })
    }
}

/// Supplies each workload's identity, in-process (mtls-core sources) and for Envoy.
pub trait WorkloadIdentities: Send + Sync + fmt::Debug + 'static {
    /// The workload's X509-SVID source (rotates if the source does).
    fn identity(&self, workload: Workload) -> Result<Arc<dyn IdentitySource>>;
    /// The trust bundle source.
    fn trust(&self) -> Result<Arc<dyn TrustSource>>;
    /// How the workload's Envoy sidecar gets its certificate and bundle.
    fn envoy_certs(&self, workload: Workload) -> Result<CertSource>;
    /// One line for the mesh's output, e.g. "files in /tmp/... (root + intermediate)".
    fn describe(&self) -> String;

    /// Whether [`rotate_now`](Self::rotate_now) issues new SVIDs (an identity agent does;
    /// files do not). The mesh rotates mid-scenario when it does.
    fn rotates(&self) -> bool {
        false
    }

    /// Issues new SVIDs for every workload now and pushes them to every in-process source
    /// and Envoy; returns the new generation, or `None` when this source cannot rotate.
    fn rotate_now(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The serial (colon-separated hex) of the SVID the issuer currently hands `workload`,
    /// when the source knows its issuer's state (an agent); `None` for plain files.
    fn issued_serial(&self, workload: Workload) -> Option<String> {
        let _ = workload;
        None
    }
}

impl WorkloadIdentities for MeshPki {
    fn identity(&self, workload: Workload) -> Result<Arc<dyn IdentitySource>> {
        let svid = match workload {
            Workload::Bookstore => self.server(),
            Workload::Client => self.client(),
            Workload::Intruder => self.intruder(),
        };
        let identity: Arc<dyn IdentitySource> = Arc::new(svid.identity()?);
        Ok(identity)
    }

    fn trust(&self) -> Result<Arc<dyn TrustSource>> {
        let trust: Arc<dyn TrustSource> = Arc::new(MeshPki::trust(self)?);
        Ok(trust)
    }

    fn envoy_certs(&self, workload: Workload) -> Result<CertSource> {
        let svid = match workload {
            Workload::Bookstore => self.server(),
            Workload::Client => self.client(),
            Workload::Intruder => self.intruder(),
        };
        Ok(CertSource::Files {
            chain: svid.cert.clone(),
            key: svid.key.clone(),
            bundle: self.bundle_path().to_path_buf(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "PEM files in {} (root -> intermediate -> SVIDs)",
            self.dir().display()
        )
    }
}

/// The bookstore's rustls server configuration from `ids`: client certificate required,
/// only `policy`'s allowed clients accepted in the handshake.
pub fn server_tls(
    ids: &dyn WorkloadIdentities,
    policy: &MeshPolicy,
) -> Result<rustls::ServerConfig> {
    ServerConfigBuilder::new(ids.identity(Workload::Bookstore)?, ids.trust()?)
        .authorize(policy.server_authorizer())
        .tls_policy(policy.tls.clone())
        .build()
        .map_err(|e| Error::tls("building the bookstore's TLS configuration", e))
}

/// A client configuration for `workload` that accepts only `policy`'s server ID.
pub fn client_tls(
    ids: &dyn WorkloadIdentities,
    policy: &MeshPolicy,
    workload: Workload,
) -> Result<rustls::ClientConfig> {
    ClientConfigBuilder::new(ids.identity(workload)?, ids.trust()?)
        .authorize(policy.client_authorizer())
        .tls_policy(policy.tls.clone())
        .build()
        .map_err(|e| Error::tls(format!("building the {workload}'s TLS configuration"), e))
}

/// A bookstore binary's identity and trust from the SPIFFE Workload API (its
/// `--workload-api ENDPOINT`): at `endpoint`, or at `$SPIFFE_ENDPOINT_SOCKET` when it is
/// empty. A failure is an [`Error::Tls`] saying it was getting our identity.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = bookstore::identity::workload_api("ftp://agent.invalid")
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("(--workload-api)"), "{err}");
/// # }
/// ```
pub async fn workload_api(endpoint: &str) -> Result<mtls_core::WorkloadApiSource> {
    let mut builder = mtls_core::WorkloadApiSource::builder();
    if !endpoint.is_empty() {
        builder = builder.endpoint(endpoint);
    }
    builder
        .connect()
        .await
        .map_err(|e| Error::tls("getting our identity (--workload-api)", e))
}

/// How long before its certificate expires a bookstore binary warns about it.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long a certificate valid until `not_after` has left at `now`, when that is less than
/// [`EXPIRY_WARNING`] (the binaries then warn; `None` once expired or with more left). Both
/// the server's and the client's warning come from here.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use bookstore::identity::expiring_soon;
/// let now = SystemTime::now();
/// let hour = Duration::from_secs(3600);
/// assert_eq!(expiring_soon(now + hour, now), Some(hour));
/// assert_eq!(expiring_soon(now + 48 * hour, now), None);
/// assert_eq!(expiring_soon(now - hour, now), None);
/// ```
pub fn expiring_soon(
    not_after: std::time::SystemTime,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    not_after
        .duration_since(now)
        .ok()
        .filter(|left| *left < EXPIRY_WARNING)
}
