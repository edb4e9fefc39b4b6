//! Envoy v3 bootstrap documents (JSON, which Envoy reads as YAML's subset).

use std::{net::SocketAddr, path::PathBuf};

use serde_json::{Value, json};

use crate::MeshPolicy;

/// The HTTP connection manager's stat prefix on the client sidecar.
pub const STAT_PREFIX_OUTBOUND: &str = "bookstore_outbound";
/// The HTTP connection manager's stat prefix on the server sidecars.
pub const STAT_PREFIX_INBOUND: &str = "bookstore_inbound";

/// Where an Envoy gets its certificate, key and trust bundle.
///
/// ```
/// use bookstore::envoy::{CertSource, ClientSidecar};
/// let certs = CertSource::Sds {
///     socket: "/run/mtls-agent/sds.sock".into(),
///     node_id: "web-sidecar".into(),
///     certificate: bookstore::CLIENT_ID.into(),
///     validation: "spiffe://bookstore.local".into(),
/// };
/// let bootstrap = ClientSidecar::new("127.0.0.1:10000".parse()?, 8443, certs)
///     .bootstrap(&bookstore::MeshPolicy::bookstore());
/// assert_eq!(bootstrap["node"]["id"], "web-sidecar"); // the agent selects by node id
/// let clusters = &bootstrap["static_resources"]["clusters"];
/// let tls = &clusters[0]["transport_socket"]["typed_config"]["common_tls_context"];
/// assert_eq!(tls["tls_certificate_sds_secret_configs"][0]["name"], bookstore::CLIENT_ID);
/// // The CA comes over SDS; the SAN policy stays in the bootstrap, merged by Envoy.
/// let validation = &tls["combined_validation_context"];
/// assert_eq!(validation["validation_context_sds_secret_config"]["name"], "spiffe://bookstore.local");
/// assert_eq!(
///     validation["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
///     bookstore::SERVER_ID,
/// );
/// assert_eq!(clusters[1]["name"], bookstore::envoy::SDS_CLUSTER);
/// let address = &clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
/// assert_eq!(address["pipe"]["path"], "/run/mtls-agent/sds.sock");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CertSource {
    /// PEM files (Envoy reads them at start; Kubernetes mounts them from Secrets).
    Files {
        /// Leaf + intermediates.
        chain: PathBuf,
        /// Private key.
        key: PathBuf,
        /// Trust bundle (CA certificates).
        bundle: PathBuf,
    },
    /// Envoy's Secret Discovery Service on a Unix socket (mtls-agent's `--sds-socket`, or a
    /// SPIRE agent's): the certificate and the trust bundle are pushed, and every rotation
    /// reaches Envoy with no restart. The agent selects the identity by Envoy's `node.id`,
    /// so the bootstrap's node id becomes [`node_id`](CertSource::Sds::node_id).
    Sds {
        /// The SDS server's Unix socket.
        socket: PathBuf,
        /// Envoy's `node.id`, registered with the agent for this workload's sidecars.
        node_id: String,
        /// The `tls_certificate` secret: the workload's SPIFFE ID (SPIRE's naming).
        certificate: String,
        /// The `validation_context` secret: the trust-domain ID (`spiffe://bookstore.local`).
        validation: String,
    },
}

/// The name of the bootstrap cluster that reaches the SDS socket.
pub const SDS_CLUSTER: &str = "sds_agent";

impl CertSource {
    /// The `common_tls_context` for this source: our certificate, ALPN `h2`, a
    /// validation context with the bundle and `match_typed_subject_alt_names` = `sans`, and
    /// `tls_params` rendered from `tls` (so the sidecar runs the proxyless peers' policy).
    ///
    /// ```
    /// use bookstore::envoy::CertSource;
    /// let certs = CertSource::Files { chain: "c.pem".into(), key: "k.pem".into(), bundle: "b.pem".into() };
    /// let tls = certs.common_tls_context(&[], &mtls_core::TlsPolicy::classical());
    /// assert_eq!(tls["tls_params"]["ecdh_curves"], serde_json::json!(["X25519", "P-256", "P-384"]));
    /// assert_eq!(tls["tls_params"]["tls_maximum_protocol_version"], "TLSv1_3");
    /// ```
    pub fn common_tls_context(
        &self,
        sans: &[mtls_core::SanMatcher],
        tls: &mtls_core::TlsPolicy,
    ) -> Value {
        let mut context = self.common_tls_context_without_params(sans);
        context["tls_params"] = json!(tls.envoy_tls_params());
        context
    }

    fn common_tls_context_without_params(&self, sans: &[mtls_core::SanMatcher]) -> Value {
        match self {
            CertSource::Files { chain, key, bundle } => json!({
                // gRPC clients need h2 negotiated ("missing selected ALPN property" otherwise).
                "alpn_protocols": ["h2"],
                "tls_certificates": [{
                    "certificate_chain": { "filename": chain },
                    "private_key": { "filename": key },
                }],
                "validation_context": {
                    "trusted_ca": { "filename": bundle },
                    "match_typed_subject_alt_names": sans,
                },
            }),
            CertSource::Sds {
                certificate,
                validation,
                ..
            } => json!({
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [
                    { "name": certificate, "sds_config": sds_config() },
                ],
                // The SDS validation context carries only the CA; the SAN policy stays in
                // the bootstrap: Envoy merges the two (a bare `validation_context_sds_secret_config`
                // would drop `match_typed_subject_alt_names` and accept any SVID of the CA).
                "combined_validation_context": {
                    "default_validation_context": { "match_typed_subject_alt_names": sans },
                    "validation_context_sds_secret_config": { "name": validation, "sds_config": sds_config() },
                },
            }),
        }
    }

    /// The bootstrap's `node`: `default_id` unless the agent selects by node id (SDS).
    fn node(&self, default_id: String, cluster: &str) -> Value {
        let id = match self {
            CertSource::Sds { node_id, .. } => node_id.clone(),
            CertSource::Files { .. } => default_id,
        };
        json!({ "id": id, "cluster": cluster })
    }

    /// The static cluster reaching the SDS socket (HTTP/2 over a `pipe` address), if any.
    fn sds_cluster(&self) -> Option<Value> {
        match self {
            CertSource::Files { .. } => None,
            CertSource::Sds { socket, .. } => Some(json!({
                "name": SDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": http2_upstream(),
                "load_assignment": {
                    "cluster_name": SDS_CLUSTER,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "pipe": { "path": socket },
                    }}}]}],
                },
            })),
        }
    }
}

/// How a TLS context asks for an SDS secret: gRPC to [`SDS_CLUSTER`]. Without
/// `initial_fetch_timeout`, Envoy started before its SDS server waits ~15 s; the retry
/// policy brings the stream back quickly when the agent restarts.
fn sds_config() -> Value {
    json!({
        "resource_api_version": "V3",
        "initial_fetch_timeout": "5s",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": {
                "cluster_name": SDS_CLUSTER,
                "retry_policy": {
                    "retry_back_off": { "base_interval": "0.05s", "max_interval": "1s" },
                    "num_retries": 10,
                },
            }}],
        },
    })
}

/// Where a server sidecar's `jwt_authn` gets the JWKS.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum JwksRef {
    /// The document itself, inline in the bootstrap.
    Inline(String),
    /// A file Envoy reads at start (a mounted ConfigMap in Kubernetes).
    File(PathBuf),
}

impl JwksRef {
    fn local_jwks(&self) -> Value {
        match self {
            JwksRef::Inline(json) => json!({ "inline_string": json }),
            JwksRef::File(path) => json!({ "filename": path }),
        }
    }
}

impl From<String> for JwksRef {
    fn from(json: String) -> Self {
        JwksRef::Inline(json)
    }
}

impl From<&str> for JwksRef {
    fn from(json: &str) -> Self {
        JwksRef::Inline(json.to_owned())
    }
}

/// The client-side sidecar: plaintext HTTP/2 in, mTLS to every address DNS gives for the
/// service (strict DNS, round robin).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientSidecar {
    /// Where the application connects (plaintext).
    pub listen: SocketAddr,
    /// The server sidecars' port (DNS A records carry no port).
    pub upstream_port: u16,
    /// The DNS server to resolve [`MeshPolicy::service_name`] with; `None`: the system's.
    pub dns: Option<SocketAddr>,
    /// How often to re-resolve (seconds; the records' TTL is respected too).
    pub dns_refresh_secs: u64,
    /// Our SVID and the trust bundle.
    pub certs: CertSource,
    /// Admin interface address (port 0: ephemeral, see `--admin-address-path`).
    pub admin: SocketAddr,
    /// Retries of a call answered UNAVAILABLE (gRPC status 14), as the route's
    /// `retry_policy: {retry_on: "unavailable", num_retries}` with Envoy's default
    /// back-off (25 ms base, 250 ms max), each retry preferring a host the call has not
    /// tried (`previous_hosts`); 0 (the default): no retry policy. With a retry policy the
    /// cluster's circuit breaker allows any number of retries in flight, as Istio configures
    /// its sidecars (every threshold at its maximum unless a DestinationRule says otherwise):
    /// Envoy's default `max_retries` of 3 would refuse retries under more than 3 concurrent
    /// failing calls, and the balanced channel has no such cap (gRFC A6 throttling off).
    pub unavailable_retries: u32,
}

impl ClientSidecar {
    /// A client sidecar with loopback defaults: admin on `127.0.0.1:0`, system DNS,
    /// refresh every 5 s, no retry policy.
    pub fn new(listen: SocketAddr, upstream_port: u16, certs: CertSource) -> Self {
        Self {
            listen,
            upstream_port,
            dns: None,
            dns_refresh_secs: 5,
            certs,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            unavailable_retries: 0,
        }
    }

    /// The bootstrap for `policy`.
    ///
    /// ```
    /// use bookstore::envoy::{CertSource, ClientSidecar};
    /// let certs = CertSource::Files { chain: "c.pem".into(), key: "k.pem".into(), bundle: "b.pem".into() };
    /// let mut sidecar = ClientSidecar::new("127.0.0.1:10000".parse()?, 8443, certs);
    /// sidecar.dns = Some("127.0.0.1:5353".parse()?);
    /// sidecar.unavailable_retries = 2;
    /// let bootstrap = sidecar.bootstrap(&bookstore::MeshPolicy::bookstore());
    /// let tls = &bootstrap["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
    /// assert_eq!(
    ///     tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
    ///     bookstore::SERVER_ID,
    /// );
    /// let hcm = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    /// let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    /// assert_eq!(route["retry_policy"]["retry_on"], "unavailable");
    /// assert_eq!(route["retry_policy"]["num_retries"], 2);
    /// let breakers = &bootstrap["static_resources"]["clusters"][0]["circuit_breakers"];
    /// assert_eq!(breakers["thresholds"][0]["max_retries"], u32::MAX);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bootstrap(&self, policy: &MeshPolicy) -> Value {
        let mut dns_cluster = json!({
            "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster",
            "dns_refresh_rate": format!("{}s", self.dns_refresh_secs.max(1)),
            "respect_dns_ttl": true,
            // c-ares would also ask for AAAA (and resolve `localhost` to ::1).
            "dns_lookup_family": "V4_ONLY",
            "all_addresses_in_single_endpoint": false,
        });
        if let Some(dns) = self.dns {
            dns_cluster["typed_dns_resolver_config"] = json!({
                "name": "envoy.network.dns_resolver.cares",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                    "resolvers": [socket_address(dns)],
                    "use_resolvers_as_fallback": false,
                    "dns_resolver_options": { "no_default_search_domain": true },
                },
            });
        }
        let retry_policy = (self.unavailable_retries > 0).then(|| {
            json!({
                "retry_policy": {
                    "retry_on": "unavailable",
                    "num_retries": self.unavailable_retries,
                    // A retry prefers another host, as the balanced channel's does.
                    "retry_host_predicate": [{
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
                        },
                    }],
                    "host_selection_retry_max_attempts": 3,
                },
            })
        });
        let mut bootstrap = json!({
            "node": self.certs.node("bookstore-client-sidecar".to_owned(), "bookstore-client"),
            "admin": { "address": socket_address(self.admin) },
            "static_resources": {
                "listeners": [{
                    "name": STAT_PREFIX_OUTBOUND,
                    "address": socket_address(self.listen),
                    "filter_chains": [{
                        "filters": [http_connection_manager(STAT_PREFIX_OUTBOUND, "bookstore", vec![router()], None, retry_policy)],
                    }],
                }],
                "clusters": [{
                    "name": "bookstore",
                    "connect_timeout": "2s",
                    // STRICT_DNS semantics (every address an endpoint) through the DnsCluster
                    // extension: Cluster.dns_refresh_rate & co. are deprecated in Envoy 1.40.
                    "cluster_type": { "name": "envoy.clusters.dns", "typed_config": dns_cluster },
                    "lb_policy": "ROUND_ROBIN",
                    "load_assignment": {
                        "cluster_name": "bookstore",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                            "address": policy.service_name,
                            "port_value": self.upstream_port,
                        }}}}]}],
                    },
                    "typed_extension_protocol_options": http2_upstream(),
                    "transport_socket": tls_socket("UpstreamTlsContext", json!({
                        "sni": policy.service_name,
                        "common_tls_context": self.certs.common_tls_context(&policy.server_san_matchers(), &policy.tls),
                    })),
                }],
            },
        });
        if self.unavailable_retries > 0 {
            bootstrap["static_resources"]["clusters"][0]["circuit_breakers"] = json!({
                "thresholds": [{ "priority": "DEFAULT", "max_retries": u32::MAX }],
            });
        }
        with_sds_cluster(bootstrap, &self.certs)
    }
}

/// A server-side sidecar in front of one replica: mTLS in (client certificate required,
/// SAN one of the allowed clients), JWT checked, caller's SPIFFE ID forwarded in
/// `x-forwarded-client-cert`, plaintext HTTP/2 to the replica.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerSidecar {
    /// Where clients (their sidecars) connect: the replica's address in DNS.
    pub listen: SocketAddr,
    /// The replica's plaintext (loopback) address.
    pub upstream: SocketAddr,
    /// The JWKS to validate tokens with.
    pub jwks: JwksRef,
    /// Our SVID and the trust bundle.
    pub certs: CertSource,
    /// Admin interface address (port 0: ephemeral).
    pub admin: SocketAddr,
}

impl ServerSidecar {
    /// A server sidecar with the admin interface on `127.0.0.1:0`.
    pub fn new(
        listen: SocketAddr,
        upstream: SocketAddr,
        jwks: impl Into<JwksRef>,
        certs: CertSource,
    ) -> Self {
        Self {
            listen,
            upstream,
            jwks: jwks.into(),
            certs,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// The bootstrap for `policy`.
    ///
    /// ```
    /// use bookstore::envoy::{CertSource, ServerSidecar};
    /// let certs = CertSource::Files { chain: "c.pem".into(), key: "k.pem".into(), bundle: "b.pem".into() };
    /// let sidecar = ServerSidecar::new("127.0.0.2:8443".parse()?, "127.0.0.1:8080".parse()?, "{\"keys\":[]}", certs);
    /// let bootstrap = sidecar.bootstrap(&bookstore::MeshPolicy::bookstore());
    /// let chain = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0];
    /// assert_eq!(chain["transport_socket"]["typed_config"]["require_client_certificate"], true);
    /// let hcm = &chain["filters"][0]["typed_config"];
    /// let jwt = &hcm["http_filters"][0]["typed_config"]["providers"]["bookstore"];
    /// assert_eq!(jwt["audiences"][0], bookstore::AUDIENCE);
    /// // Verified tokens are cached, as by the proxyless side's validator.
    /// assert_eq!(jwt["jwt_cache_config"]["jwt_cache_size"], 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The `jwt_authn` provider gets `jwt_cache_config` of
    /// [`MeshPolicy::jwt_cache_size`] entries (left out when 0: Envoy then caches nothing),
    /// so the sidecar and mtls-jwt's validator do the same work per request.
    pub fn bootstrap(&self, policy: &MeshPolicy) -> Value {
        let mut jwt_authn = json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    "bookstore": {
                        "issuer": policy.issuer,
                        "audiences": [policy.audience],
                        "local_jwks": self.jwks.local_jwks(),
                        "forward": true,
                    },
                },
                "rules": [
                    // Health checks need no token (as JwtRules::skip on the proxyless side).
                    { "match": { "prefix": format!("/{}/", crate::HEALTH_SERVICE) } },
                    { "match": { "prefix": "/" }, "requires": { "provider_name": "bookstore" } },
                ],
            },
        });
        if policy.jwt_cache_size > 0 {
            jwt_authn["typed_config"]["providers"]["bookstore"]["jwt_cache_config"] =
                json!({ "jwt_cache_size": policy.jwt_cache_size });
        }
        let xfcc = json!({
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": { "uri": true },
        });
        let bootstrap = json!({
            "node": self.certs.node(format!("bookstore-sidecar-{}", self.listen), "bookstore"),
            "admin": { "address": socket_address(self.admin) },
            "static_resources": {
                "listeners": [{
                    "name": STAT_PREFIX_INBOUND,
                    "address": socket_address(self.listen),
                    "filter_chains": [{
                        "transport_socket": tls_socket("DownstreamTlsContext", json!({
                            "require_client_certificate": true,
                            "common_tls_context": self.certs.common_tls_context(&policy.client_san_matchers(), &policy.tls),
                        })),
                        "filters": [http_connection_manager(STAT_PREFIX_INBOUND, "replica", vec![jwt_authn, router()], Some(xfcc), None)],
                    }],
                }],
                "clusters": [{
                    "name": "replica",
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "load_assignment": {
                        "cluster_name": "replica",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(self.upstream) } }] }],
                    },
                    "typed_extension_protocol_options": http2_upstream(),
                }],
            },
        });
        with_sds_cluster(bootstrap, &self.certs)
    }
}

/// Adds the SDS cluster to a bootstrap whose certificates come over SDS.
fn with_sds_cluster(mut bootstrap: Value, certs: &CertSource) -> Value {
    if let (Some(cluster), Some(clusters)) = (
        certs.sds_cluster(),
        bootstrap["static_resources"]["clusters"].as_array_mut(),
    ) {
        clusters.push(cluster);
    }
    bootstrap
}

/// Envoy's TLS transport socket: a `context` (`UpstreamTlsContext` or
/// `DownstreamTlsContext`) with `fields`.
fn tls_socket(context: &str, fields: Value) -> Value {
    let mut typed = json!({
        "@type": format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{context}"),
    });
    if let (Value::Object(typed), Value::Object(fields)) = (&mut typed, fields) {
        typed.extend(fields);
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": typed })
}

pub(crate) fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
    })
}

fn http2_upstream() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} },
        },
    })
}

fn http_connection_manager(
    stat_prefix: &str,
    cluster: &str,
    filters: Vec<Value>,
    extra: Option<Value>,
    route_extra: Option<Value>,
) -> Value {
    let mut route = json!({ "cluster": cluster, "timeout": "15s" });
    if let (Some(Value::Object(extra)), Some(object)) = (route_extra, route.as_object_mut()) {
        object.extend(extra);
    }
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": "local",
            "virtual_hosts": [{
                "name": cluster,
                "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "route": route }],
            }],
        },
        "http_filters": filters,
    });
    if let (Some(Value::Object(extra)), Some(object)) = (extra, hcm.as_object_mut()) {
        object.extend(extra);
    }
    json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm })
}
