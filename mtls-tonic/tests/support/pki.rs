//! Test PKI made at run time with mtls-certs; rustls configs from mtls-core.

use std::sync::Arc;

use mtls_certs::{CaParams, CertificateAuthority, LeafParams, SpiffeId as CertId};
use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, ServerConfigBuilder, TrustBundle, TrustDomain,
};

pub const TRUST_DOMAIN: &str = "example.org";
pub const SERVICE_NAME: &str = "bookstore.test";
pub const SERVER_ID: &str = "spiffe://example.org/ns/default/sa/bookstore";
pub const CLIENT_ID: &str = "spiffe://example.org/ns/default/sa/client";

pub struct Pki {
    pub ca: CertificateAuthority,
    pub intruder_ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: CertificateAuthority::new_root(&CaParams::new("mtls-tonic test root")).unwrap(),
            intruder_ca: CertificateAuthority::new_root(&CaParams::new("intruder root")).unwrap(),
        }
    }

    pub fn root_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// An SVID for `id` (plus DNS SANs) as (chain PEM, key PEM).
    pub fn svid_pem(&self, id: &str, dns: &[&str]) -> (String, String) {
        issue(&self.ca, id, dns)
    }

    pub fn identity(&self, id: &str, dns: &[&str]) -> Arc<Identity> {
        let (chain, key) = self.svid_pem(id, dns);
        Arc::new(Identity::from_pem(chain, key).unwrap())
    }

    pub fn trust(&self) -> Arc<TrustBundle> {
        let td: TrustDomain = TRUST_DOMAIN.parse().unwrap();
        Arc::new(
            TrustBundle::spiffe()
                .add_domain_pem(td, self.root_pem())
                .unwrap(),
        )
    }

    /// The replicas' server config: SVID `SERVER_ID` with DNS SAN `bookstore.test`, client
    /// certificates required, clients authorized by `policy`.
    pub fn server_config(&self, policy: Authorize) -> rustls::ServerConfig {
        ServerConfigBuilder::new(self.identity(SERVER_ID, &[SERVICE_NAME]), self.trust())
            .authorize(policy)
            .build()
            .unwrap()
    }

    pub fn member_policy() -> Authorize {
        Authorize::member_of(TRUST_DOMAIN.parse().unwrap())
    }

    /// A client with SVID `id` that accepts only the server's SPIFFE ID.
    pub fn client_config(&self, id: &str) -> rustls::ClientConfig {
        ClientConfigBuilder::new(self.identity(id, &[]), self.trust())
            .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
            .build()
            .unwrap()
    }

    /// A client whose SVID (same trust domain name!) comes from a CA the server does not trust.
    pub fn intruder_client_config(&self) -> rustls::ClientConfig {
        let (chain, key) = issue(&self.intruder_ca, CLIENT_ID, &[]);
        let identity = Arc::new(Identity::from_pem(chain, key).unwrap());
        ClientConfigBuilder::new(identity, self.trust())
            .authorize(Authorize::exact(SERVER_ID.parse().unwrap()))
            .build()
            .unwrap()
    }
}

fn issue(ca: &CertificateAuthority, id: &str, dns: &[&str]) -> (String, String) {
    let mut params = LeafParams::svid(CertId::new(id).unwrap());
    for name in dns {
        params = params.add_dns_name(*name);
    }
    let leaf = ca.issue(&params).unwrap();
    (leaf.chain_pem(), leaf.key_pem())
}
