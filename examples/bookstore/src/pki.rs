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
///
/// Another process reads the same directory with [`MeshPki::open`].
#[derive(Debug)]
pub struct MeshPki {
    dir: PathBuf,
    policy: MeshPolicy,
    /// `None` when opened: the intermediate's key is never written.
    intermediate: Option<CertificateAuthority>,
    bundle: PathBuf,
    server: SvidFiles,
    client: SvidFiles,
    intruder: SvidFiles,
    jwt: JwtIssuer,
}

/// The mesh's JWT signing key and its JWKS (the public half), as JSON and as a file.
#[derive(Debug)]
struct JwtIssuer {
    key: SigningKey,
    jwks: String,
    jwks_path: PathBuf,
}

impl JwtIssuer {
    /// A new ES256 key, written to `dir` (`jwt-signing-key.pem`, mode 0600) with its JWKS
    /// (`jwks.json`).
    fn generate(dir: &Path) -> Result<Self> {
        let key = SigningKey::generate(Algorithm::ES256)
            .map_err(|e| Error::jwt("generating the JWT signing key", e))?;
        let jwks = mtls_jwt::jwks_json([key.jwk(Some(key.kid()))]);
        let jwks_path = dir.join("jwks.json");
        write(&jwks_path, &jwks, false)?;
        write(&dir.join("jwt-signing-key.pem"), &key.private_pem(), true)?;
        Ok(Self {
            key,
            jwks,
            jwks_path,
        })
    }
}

/// The IDs of the PKI's client (`policy`'s first allowed one) and of the intruder.
fn client_and_intruder(policy: &MeshPolicy) -> Result<(&SpiffeId, SpiffeId)> {
    let client = policy
        .allowed_clients
        .first()
        .ok_or_else(|| Error::Config("the policy allows no client".into()))?;
    let intruder = SpiffeId::new(INTRUDER_ID)
        .map_err(|e| Error::Config(format!("intruder ID {INTRUDER_ID}: {e}")))?;
    Ok((client, intruder))
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

        let (client_id, intruder_id) = client_and_intruder(policy)?;
        let server = issue(
            &intermediate,
            &dir,
            "bookstore",
            LeafParams::svid(policy.server_id.clone()).add_dns_name(policy.service_name.clone()),
            &policy.server_id,
        )?;
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

        let jwt = JwtIssuer::generate(&dir)?;
        Ok(Self {
            dir,
            policy: policy.clone(),
            intermediate: Some(intermediate),
            bundle,
            server,
            client,
            intruder,
            jwt,
        })
    }

    /// Opens the PKI that [`MeshPki::create`] wrote into `dir` for `policy` (e.g. in
    /// another process): reads the trust bundle, the three SVIDs, the JWKS and the JWT
    /// signing key. The intermediate CA's key is never written, so an opened PKI has no
    /// [`issuing_ca`](MeshPki::issuing_ca); everything else works as after `create`.
    ///
    /// A missing directory or file is an [`Error::File`] naming the path.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let policy = bookstore::MeshPolicy::bookstore();
    /// let created = bookstore::MeshPki::create(dir.path(), &policy)?;
    /// let opened = bookstore::MeshPki::open(dir.path(), &policy)?;
    /// assert_eq!(opened.jwks_json(), created.jwks_json());
    /// assert_eq!(opened.server().cert, created.server().cert);
    /// opened.server_config()?;
    /// assert!(opened.issuing_ca().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, policy: &MeshPolicy) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let read = |name: &str, what: &str| -> Result<(PathBuf, String)> {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|e| Error::file(format!("reading {what}"), &path, e))
        };
        let svid = |name: &str, id: &SpiffeId| -> Result<SvidFiles> {
            let (cert, _) = read(&format!("{name}.pem"), &format!("the SVID of {id}"))?;
            let (key, _) = read(&format!("{name}-key.pem"), &format!("the key of {id}"))?;
            Ok(SvidFiles {
                id: id.clone(),
                cert,
                key,
            })
        };
        if !dir.is_dir() {
            return Err(Error::file(
                "opening PKI directory",
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        let (bundle, _) = read("bundle.pem", "the trust bundle")?;
        let (client_id, intruder_id) = client_and_intruder(policy)?;
        let server = svid("bookstore", &policy.server_id)?;
        let client = svid("client", client_id)?;
        let intruder = svid("intruder", &intruder_id)?;
        let (jwks_path, jwks) = read("jwks.json", "the JWKS")?;
        let (key_path, key_pem) = read("jwt-signing-key.pem", "the JWT signing key")?;
        let jwt = JwtIssuer {
            key: SigningKey::from_pem(&key_pem).map_err(|e| {
                Error::jwt(
                    format!("loading the JWT signing key {}", key_path.display()),
                    e,
                )
            })?,
            jwks,
            jwks_path,
        };
        Ok(Self {
            dir,
            policy: policy.clone(),
            intermediate: None,
            bundle,
            server,
            client,
            intruder,
            jwt,
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

    /// The intermediate CA, to issue more SVIDs (e.g. short-lived ones for an agent);
    /// `None` for a PKI from [`MeshPki::open`] (the CA's key is never written).
    pub fn issuing_ca(&self) -> Option<&CertificateAuthority> {
        self.intermediate.as_ref()
    }

    /// The JWKS document (the public half of the signing key).
    pub fn jwks_json(&self) -> &str {
        &self.jwt.jwks
    }

    /// The JWKS file.
    pub fn jwks_path(&self) -> &Path {
        &self.jwt.jwks_path
    }

    /// The trust bundle of the trust domain, as mtls-core wants it.
    pub fn trust(&self) -> Result<Arc<TrustBundle>> {
        let pem = std::fs::read(&self.bundle)
            .map_err(|e| Error::file("reading trust bundle", &self.bundle, e))?;
        TrustBundle::spiffe()
            .add_domain_pem(self.policy.trust_domain.clone(), pem)
            .map(Arc::new)
            .map_err(|e| Error::tls("loading the trust bundle", e))
    }

    /// The bookstore's rustls server configuration: client certificate required, only the
    /// policy's allowed clients accepted in the handshake.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        self.server_config_with(&self.policy)
    }

    /// [`MeshPki::server_config`] under another policy (its authorizer and TLS policy).
    pub fn server_config_with(&self, policy: &MeshPolicy) -> Result<rustls::ServerConfig> {
        ServerConfigBuilder::new(self.server.identity()?, self.trust()?)
            .authorize(policy.server_authorizer())
            .tls_policy(policy.tls.clone())
            .build()
            .map_err(|e| Error::tls("building the server TLS configuration", e))
    }

    /// [`MeshPki::client_config`] for the client's SVID under another policy.
    pub fn client_config_with(&self, policy: &MeshPolicy) -> Result<rustls::ClientConfig> {
        self.client_config_for(&self.client, policy)
    }

    /// A client configuration presenting `svid` and accepting only the bookstore's ID.
    pub fn client_config(&self, svid: &SvidFiles) -> Result<rustls::ClientConfig> {
        self.client_config_for(svid, &self.policy)
    }

    /// A client configuration presenting `svid` under `policy`.
    fn client_config_for(
        &self,
        svid: &SvidFiles,
        policy: &MeshPolicy,
    ) -> Result<rustls::ClientConfig> {
        ClientConfigBuilder::new(svid.identity()?, self.trust()?)
            .authorize(policy.client_authorizer())
            .tls_policy(policy.tls.clone())
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
                .kid(self.jwt.key.kid()),
        )
    }

    /// Mints any token with the mesh's signing key.
    pub fn mint(&self, spec: &TokenSpec) -> Result<String> {
        self.jwt
            .key
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
        mtls_certs::files::write_private_key(path, contents, true)
    } else {
        mtls_certs::files::write_file(path, contents)
    };
    result.map_err(|e| Error::pki(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_reads_what_create_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let policy = MeshPolicy::bookstore();
        let created = MeshPki::create(dir.path(), &policy).unwrap();
        let opened = MeshPki::open(dir.path(), &policy).unwrap();
        assert_eq!(opened.client().id, created.client().id);
        assert_eq!(opened.intruder().key, created.intruder().key);
        // A token minted by the opened PKI validates against the created one's JWKS.
        let token = opened.token(&policy.audience).unwrap();
        let validator = policy
            .validator(mtls_jwt::JwksSource::inline(created.jwks_json().to_owned()))
            .unwrap();
        validator.validate_now(&token).unwrap();
        opened.client_config(opened.client()).unwrap();
    }

    #[test]
    fn open_missing_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-mesh");
        let err = MeshPki::open(&missing, &MeshPolicy::bookstore()).unwrap_err();
        assert!(
            matches!(&err, Error::File { path, .. } if path == &missing),
            "{err}"
        );
        assert!(err.to_string().contains("no-such-mesh"), "{err}");
    }

    #[test]
    fn open_missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let policy = MeshPolicy::bookstore();
        MeshPki::create(dir.path(), &policy).unwrap();
        for name in ["bundle.pem", "client-key.pem", "jwt-signing-key.pem"] {
            let path = dir.path().join(name);
            let saved = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            let err = MeshPki::open(dir.path(), &policy).unwrap_err();
            assert!(
                matches!(&err, Error::File { path: p, .. } if p == &path),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
            std::fs::write(&path, saved).unwrap();
        }
    }

    #[test]
    fn open_bad_signing_key_is_a_jwt_error() {
        let dir = tempfile::tempdir().unwrap();
        let policy = MeshPolicy::bookstore();
        MeshPki::create(dir.path(), &policy).unwrap();
        std::fs::write(dir.path().join("jwt-signing-key.pem"), "not a key").unwrap();
        let err = MeshPki::open(dir.path(), &policy).unwrap_err();
        assert!(err.to_string().contains("jwt-signing-key.pem"), "{err}");
    }
}
