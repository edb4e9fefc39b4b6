//! The mesh's names and policy, defined once: the proxyless server and client, the Envoy
//! configurations and the Kubernetes manifests are all generated from a [`MeshPolicy`].

use std::time::Duration;

use mtls_core::{Authorize, SanMatcher, SanType, SpiffeId, StringMatcher, TlsPolicy, TrustDomain};
use mtls_jwt::{JwksSource, Validator};
use mtls_tonic::{authz::MethodPolicy, jwt::JwtRules};

use crate::{Error, Result};

/// The trust domain of the example mesh.
pub const TRUST_DOMAIN: &str = "bookstore.local";
/// The DNS name clients dial (a headless Service in Kubernetes; the in-process DNS here).
pub const SERVICE_NAME: &str = "bookstore.local";
/// The bookstore replicas' SPIFFE ID.
pub const SERVER_ID: &str = "spiffe://bookstore.local/ns/default/sa/bookstore";
/// The client's SPIFFE ID: the only workload allowed to call the bookstore.
pub const CLIENT_ID: &str = "spiffe://bookstore.local/ns/default/sa/client";
/// A workload of the same trust domain, with a valid certificate from the same CA, that is
/// *not* allowed to call the bookstore.
pub const INTRUDER_ID: &str = "spiffe://bookstore.local/ns/default/sa/intruder";
/// `bookstore-mesh --federation`: the client's own trust domain, federated with
/// [`TRUST_DOMAIN`] (each serves the other its SPIFFE bundle).
pub const CLIENT_TRUST_DOMAIN: &str = "client.local";
/// `--federation`: the client, a workload of [`CLIENT_TRUST_DOMAIN`] — the one foreign ID
/// the bookstore admits ([`MeshPolicy::federated`]).
pub const FEDERATED_CLIENT_ID: &str = "spiffe://client.local/ns/default/sa/client";
/// `--federation`: another workload of [`CLIENT_TRUST_DOMAIN`]: federated (its certificate
/// verifies), but not in the bookstore's policy.
pub const FEDERATED_NEIGHBOUR_ID: &str = "spiffe://client.local/ns/default/sa/reporting";
/// `--federation`: a trust domain nobody federates with.
pub const UNFEDERATED_TRUST_DOMAIN: &str = "intruder.local";
/// `--federation`: a workload of [`UNFEDERATED_TRUST_DOMAIN`] holding a valid SVID of its
/// own domain (the same path as the allowed client's).
pub const UNFEDERATED_ID: &str = "spiffe://intruder.local/ns/default/sa/client";
/// The `iss` of the mesh's tokens.
pub const ISSUER: &str = "https://issuer.bookstore.local";
/// The `aud` the bookstore accepts.
pub const AUDIENCE: &str = "bookstore";
/// The response header naming the replica that answered.
pub const REPLICA_HEADER: &str = "x-bookstore-replica";
/// The response header naming the caller's SPIFFE ID as the replica saw it (its own mTLS
/// peer, or Envoy's `x-forwarded-client-cert`).
pub const CALLER_HEADER: &str = "x-bookstore-caller";
/// The response header with what the replica's own TLS handshake with the caller
/// negotiated (`TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full`; proxyless path only).
pub const TLS_HEADER: &str = "x-bookstore-tls";
/// The gRPC service name of the bookstore.
pub const BOOKSTORE_SERVICE: &str = "endpoints.examples.bookstore.Bookstore";
/// The gRPC health service name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Who may call whom, and with which tokens — the single source of truth of the mesh.
///
/// ```
/// let policy = bookstore::MeshPolicy::bookstore();
/// assert_eq!(policy.server_id.to_string(), bookstore::SERVER_ID);
/// // What the Envoy server sidecar puts in `match_typed_subject_alt_names`:
/// let sans = serde_json::to_value(policy.client_san_matchers())?;
/// assert_eq!(sans[0]["san_type"], "URI");
/// assert_eq!(sans[0]["matcher"]["exact"], bookstore::CLIENT_ID);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MeshPolicy {
    /// The trust domain every workload belongs to.
    pub trust_domain: TrustDomain,
    /// The DNS name of the bookstore service.
    pub service_name: String,
    /// The bookstore's SPIFFE ID (clients accept only this server).
    pub server_id: SpiffeId,
    /// The SPIFFE IDs allowed to call the bookstore.
    pub allowed_clients: Vec<SpiffeId>,
    /// Accepted token issuer.
    pub issuer: String,
    /// Accepted token audience.
    pub audience: String,
    /// Lifetime of the tokens the mesh mints.
    pub token_ttl: Duration,
    /// How many verified tokens the server side remembers (default 100; 0: none).
    ///
    /// Both server paths use it, so they do the same work per request: the proxyless
    /// [`validator`](MeshPolicy::validator) (mtls-jwt caches verified tokens by default) and
    /// the Envoy server sidecar's `jwt_authn` provider as `jwt_cache_config` (Envoy caches
    /// nothing unless that is set).
    pub jwt_cache_size: usize,
    /// TLS versions, key-exchange groups and cipher suites on every hop: the proxyless
    /// server and client configs and the sidecars' `tls_params` (default: hybrid
    /// post-quantum X25519MLKEM768 first, TLS 1.3).
    pub tls: TlsPolicy,
}

impl MeshPolicy {
    /// The example mesh: [`SERVER_ID`] serves, only [`CLIENT_ID`] calls, tokens from
    /// [`ISSUER`] for [`AUDIENCE`].
    pub fn bookstore() -> Self {
        Self {
            trust_domain: parse_td(TRUST_DOMAIN),
            service_name: SERVICE_NAME.to_owned(),
            server_id: parse_id(SERVER_ID),
            allowed_clients: vec![parse_id(CLIENT_ID)],
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            token_ttl: Duration::from_secs(3600),
            jwt_cache_size: 100,
            tls: TlsPolicy::default(),
        }
    }

    /// `bookstore-mesh --federation`: [`MeshPolicy::bookstore`] with one caller allowed, a
    /// workload of another trust domain: [`FEDERATED_CLIENT_ID`] (the handshake authorizer,
    /// the method policy and the Envoy server sidecars' SAN match all admit exactly it).
    ///
    /// ```
    /// use mtls_core::Authorizer;
    /// let policy = bookstore::MeshPolicy::federated();
    /// let admits = |id: &str| policy.server_authorizer().authorize(&id.parse().unwrap());
    /// assert!(admits(bookstore::FEDERATED_CLIENT_ID));
    /// assert!(!admits(bookstore::FEDERATED_NEIGHBOUR_ID));
    /// assert!(!admits(bookstore::CLIENT_ID)); // the bookstore.local client is not it
    /// ```
    pub fn federated() -> Self {
        Self {
            allowed_clients: vec![parse_id(FEDERATED_CLIENT_ID)],
            ..Self::bookstore()
        }
    }

    /// The handshake-level authorizer of the bookstore: one of the allowed clients.
    pub fn server_authorizer(&self) -> Authorize {
        Authorize::one_of(self.allowed_clients.clone())
    }

    /// Per-method policy: health checks from any member of the trust domain, the bookstore
    /// only from the allowed clients.
    pub fn method_policy(&self) -> Result<MethodPolicy> {
        MethodPolicy::deny_by_default()
            .allow(
                &format!("{HEALTH_SERVICE}/*"),
                Authorize::member_of(self.trust_domain.clone()),
            )
            .and_then(|p| p.allow(&format!("{BOOKSTORE_SERVICE}/*"), self.server_authorizer()))
            .map_err(|e| Error::tonic("method policy", e))
    }

    /// Which calls need a token: everything but health checks.
    pub fn jwt_rules(&self) -> Result<JwtRules> {
        JwtRules::require_all()
            .skip(&format!("{HEALTH_SERVICE}/*"))
            .map_err(|e| Error::tonic("JWT rules", e))
    }

    /// A validator for the mesh's tokens over `jwks`, remembering up to
    /// [`jwt_cache_size`](MeshPolicy::jwt_cache_size) verified tokens.
    pub fn validator(&self, jwks: JwksSource) -> Result<Validator> {
        Validator::builder()
            .jwks(jwks)
            .issuer(self.issuer.clone())
            .audience(self.audience.clone())
            .token_cache(self.jwt_cache_size)
            .build()
            .map_err(|e| Error::jwt("JWT validator", e))
    }

    /// The client-side authorizer: the server must be exactly [`MeshPolicy::server_id`].
    pub fn client_authorizer(&self) -> Authorize {
        Authorize::exact(self.server_id.clone())
    }

    /// The allowed clients as Envoy `match_typed_subject_alt_names` entries (URI, exact).
    pub fn client_san_matchers(&self) -> Vec<SanMatcher> {
        self.allowed_clients
            .iter()
            .map(|id| SanMatcher::new(SanType::Uri, StringMatcher::exact(id.to_string())))
            .collect()
    }

    /// The server as an Envoy `match_typed_subject_alt_names` entry (URI, exact).
    pub fn server_san_matchers(&self) -> Vec<SanMatcher> {
        vec![SanMatcher::new(
            SanType::Uri,
            StringMatcher::exact(self.server_id.to_string()),
        )]
    }
}

impl Default for MeshPolicy {
    fn default() -> Self {
        Self::bookstore()
    }
}

/// Parses one of this module's constant IDs (a test proves they parse).
fn parse_id(id: &str) -> SpiffeId {
    #[expect(clippy::expect_used, reason = "constant IDs, checked by a unit test")]
    SpiffeId::new(id).expect("constant SPIFFE ID")
}

fn parse_td(td: &str) -> TrustDomain {
    #[expect(
        clippy::expect_used,
        reason = "constant trust domain, checked by a unit test"
    )]
    TrustDomain::new(td).expect("constant trust domain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_parse_and_policies_build() {
        for id in [
            SERVER_ID,
            CLIENT_ID,
            INTRUDER_ID,
            FEDERATED_CLIENT_ID,
            FEDERATED_NEIGHBOUR_ID,
            UNFEDERATED_ID,
        ] {
            SpiffeId::new(id).unwrap();
        }
        for td in [TRUST_DOMAIN, CLIENT_TRUST_DOMAIN, UNFEDERATED_TRUST_DOMAIN] {
            TrustDomain::new(td).unwrap();
        }
        MeshPolicy::federated().method_policy().unwrap();
        let policy = MeshPolicy::bookstore();
        policy.method_policy().unwrap();
        let rules = policy.jwt_rules().unwrap();
        assert!(!rules.requires_token("/grpc.health.v1.Health/Check"));
        assert!(rules.requires_token("/endpoints.examples.bookstore.Bookstore/ListShelves"));
        use mtls_core::Authorizer;
        assert!(
            policy
                .server_authorizer()
                .authorize(&SpiffeId::new(CLIENT_ID).unwrap())
        );
        assert!(
            !policy
                .server_authorizer()
                .authorize(&SpiffeId::new(INTRUDER_ID).unwrap())
        );
    }
}
