//! A throwaway mesh PKI and JWT issuer, written to a directory as the files Envoy and
//! `bookstore-server` read.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
use mtls_core::{ClientConfigBuilder, Identity, ServerConfigBuilder, SpiffeId, TrustBundle};
use mtls_jwt::{Algorithm, SigningKey, TokenSpec};

use crate::{Error, INTRUDER_ID, MeshPolicy, Result};

/// One workload's X509-SVID as files: `cert` is the leaf followed by the intermediate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SvidFiles {
    /// The SPIFFE ID in the certificate's URI SAN.
    pub id: SpiffeId,
    /// Leaf + intermediate, PEM.
    pub cert: PathBuf,
    /// The private key, PEM (mode 0600).
    pub key: PathBuf,
}

impl SvidFiles {
    /// Loads the identity from the files.
    pub fn identity(&self) -> Result<Arc<Identity>> {
        Identity::from_pem_files(&self.cert, &self.key)
            .map(Arc::new)
            .map_err(|e| Error::tls(format!("loading the SVID of {}", self.id), e))
    }
}

/// The mesh's PKI in a directory: root and intermediate CA, the bookstore's SVID (with DNS
/// SAN [`MeshPolicy::service_name`]), the client's, an intruder's (same CA, an ID the
/// bookstore does not allow), and an ES256 JWT signing key with its JWKS.
///
/// Files: `bundle.pem` (the root: the trust bundle), `intermediate.pem`,
/// `{bookstore,client,intruder}.pem` + `-key.pem`, `jwks.json`, `jwt-signing-key.pem`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let policy = bookstore::MeshPolicy::bookstore();
/// let pki = bookstore::MeshPki::create(dir.path(), &policy)?;
/// assert_eq!(pki.client().id.to_string(), bookstore::CLIENT_ID);
/// let token = pki.token(&policy.audience)?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MeshPki {
    dir: PathBuf,
    policy: MeshPolicy,
    intermediate: CertificateAuthority,
    bundle: PathBuf,
    server: SvidFiles,
    client: SvidFiles,
    intruder: SvidFiles,
    jwt_key: SigningKey,
    jwks: String,
    jwks_path: PathBuf,
}

impl MeshPki {
    /// Creates a fresh PKI and JWT key for `policy` and writes them into `dir` (created if
    /// needed).
    pub fn create(dir: impl AsRef<Path>, policy: &MeshPolicy) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::file("creating PKI directory", &dir, e))?;
        let root = CertificateAuthority::new_root(&CaParams::new("Bookstore Mesh Root"))
            .map_err(|e| Error::pki("the root CA", e))?;
        let intermediate = root
            .new_intermediate(&CaParams::new("Bookstore Mesh Issuing"))
            .map_err(|e| Error::pki("the intermediate CA", e))?;
        let bundle = dir.join("bundle.pem");
        write(&bundle, &root.cert_pem(), false)?;
        write(
            &dir.join("intermediate.pem"),
            &intermediate.cert_pem(),
            false,
        )?;

        let intruder_id = SpiffeId::new(INTRUDER_ID)
            .map_err(|e| Error::Config(format!("intruder ID {INTRUDER_ID}: {e}")))?;
        let server = issue(
            &intermediate,
            &dir,
            "bookstore",
            LeafParams::svid(policy.server_id.clone()).with_dns_name(policy.service_name.clone()),
            &policy.server_id,
        )?;
        let client_id = policy
            .allowed_clients
            .first()
            .ok_or_else(|| Error::Config("the policy allows no client".into()))?;
        let client = issue(
            &intermediate,
            &dir,
            "client",
            LeafParams::svid(client_id.clone()),
            client_id,
        )?;
        let intruder = issue(
            &intermediate,
            &dir,
            "intruder",
            LeafParams::svid(intruder_id.clone()),
            &intruder_id,
        )?;

        let jwt_key = SigningKey::generate(Algorithm::ES256)
            .map_err(|e| Error::jwt("generating the JWT signing key", e))?;
        let jwks = mtls_jwt::jwks_json([jwt_key.jwk(Some(jwt_key.kid()))]);
        let jwks_path = dir.join("jwks.json");
        write(&jwks_path, &jwks, false)?;
        write(
            &dir.join("jwt-signing-key.pem"),
            &jwt_key.private_pem(),
            true,
        )?;
        Ok(Self {
            dir,
            policy: policy.clone(),
            intermediate,
            bundle,
            server,
            client,
            intruder,
            jwt_key,
            jwks,
            jwks_path,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust bundle (the root certificate), PEM file.
    pub fn bundle_path(&self) -> &Path {
        &self.bundle
    }

    /// The bookstore's SVID.
    pub fn server(&self) -> &SvidFiles {
        &self.server
    }

    /// The allowed client's SVID.
    pub fn client(&self) -> &SvidFiles {
        &self.client
    }

    /// The intruder's SVID: same CA and trust domain, an ID the bookstore refuses.
    pub fn intruder(&self) -> &SvidFiles {
        &self.intruder
    }

    /// The intermediate CA, to issue more SVIDs (e.g. short-lived ones for an agent).
    pub fn issuing_ca(&self) -> &CertificateAuthority {
        &self.intermediate
    }

    /// The JWKS document (the public half of the signing key).
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The JWKS file.
    pub fn jwks_path(&self) -> &Path {
        &self.jwks_path
    }

    /// The trust bundle of the trust domain, as mtls-core wants it.
    pub fn trust(&self) -> Result<Arc<TrustBundle>> {
        let pem = std::fs::read(&self.bundle)
            .map_err(|e| Error::file("reading trust bundle", &self.bundle, e))?;
        TrustBundle::spiffe()
            .with_domain_pem(self.policy.trust_domain.clone(), pem)
            .map(Arc::new)
            .map_err(|e| Error::tls("loading the trust bundle", e))
    }

    /// The bookstore's rustls server configuration: client certificate required, only the
    /// policy's allowed clients accepted in the handshake.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        ServerConfigBuilder::new(self.server.identity()?, self.trust()?)
            .authorize(self.policy.server_authorizer())
            .build()
            .map_err(|e| Error::tls("building the server TLS configuration", e))
    }

    /// A client configuration presenting `svid` and accepting only the bookstore's ID.
    pub fn client_config(&self, svid: &SvidFiles) -> Result<rustls::ClientConfig> {
        ClientConfigBuilder::new(svid.identity()?, self.trust()?)
            .authorize(self.policy.client_authorizer())
            .build()
            .map_err(|e| Error::tls("building the client TLS configuration", e))
    }

    /// A token for the client (`sub` = its SPIFFE ID, `iss` = the policy's issuer) with
    /// audience `audience`.
    pub fn token(&self, audience: &str) -> Result<String> {
        let sub = self.client.id.to_string();
        self.mint(
            &TokenSpec::new(self.policy.token_ttl)
                .issuer(self.policy.issuer.clone())
                .audience(audience)
                .subject(sub)
                .kid(self.jwt_key.kid()),
        )
    }

    /// Mints any token with the mesh's signing key.
    pub fn mint(&self, spec: &TokenSpec) -> Result<String> {
        self.jwt_key
            .mint(spec)
            .map_err(|e| Error::jwt("minting a token", e))
    }
}

fn issue(
    ca: &CertificateAuthority,
    dir: &Path,
    name: &str,
    params: LeafParams,
    id: &SpiffeId,
) -> Result<SvidFiles> {
    let leaf = ca
        .issue(&params)
        .map_err(|e| Error::pki(format!("the SVID of {id}"), e))?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    write(&cert, &leaf.chain_pem(), false)?;
    write(&key, &leaf.key_pem(), true)?;
    Ok(SvidFiles {
        id: id.clone(),
        cert,
        key,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let result = if private {
        // Overwrites: the directory is ours and throwaway.
        mtls_certs::write_private_key(path, contents, true)
    } else {
        mtls_certs::write_file(path, contents)
    };
    result.map_err(|e| Error::pki(format!("writing {}", path.display()), e))
}
