//! `plain-tonic-mtls`: the "I'll do it myself with tonic" baseline — the same security as
//! `proxyless` built from tonic's own pieces: tonic's TLS on both sides (client certificate
//! required and verified against the mesh CA, `ServerTlsConfig::client_ca_root`), and a
//! hand-written interceptor that checks the caller's SPIFFE ID (the leaf's URI SAN, parsed
//! with x509-parser) against the allowed clients and validates the bearer token with
//! jsonwebtoken (ES256, issuer, audience, expiry, `sub` = the caller's SPIFFE ID), keeping
//! verified tokens in a small map as mtls-jwt's cache and Envoy's `jwt_cache_config` do.
//! The client is tonic's `Channel` (`balance_list` over the replicas) with a client
//! certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Verified tokens kept at most (then the map is cleared: a crude bound a hand-written
/// cache would have).
const CACHE_MAX: usize = 100;

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The hand-written interceptor.
#[derive(Clone)]
pub struct Interceptor {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    allowed: Arc<Vec<String>>,
    /// token → (exp, sub)
    cache: Arc<Mutex<HashMap<String, (u64, String)>>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// From the mesh's JWKS (first key), issuer, audience and allowed client IDs.
    pub fn new(
        jwks_json: &str,
        issuer: &str,
        audience: &str,
        allowed: Vec<String>,
    ) -> Result<Self> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| Error::Pki(format!("JWKS: {e}")))?;
        let jwk = set
            .keys
            .first()
            .ok_or_else(|| Error::Pki("JWKS: expected a key, found none".into()))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| Error::Pki(format!("JWKS key: {e}")))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(Self {
            key: Arc::new(key),
            validation: Arc::new(validation),
            allowed: Arc::new(allowed),
            cache: Arc::default(),
        })
    }

    fn peer_id(request: &Request<()>) -> Option<String> {
        let certs = request.peer_certs()?;
        let (_, leaf) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
        let san = leaf.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some((*uri).to_owned())
            }
            _ => None,
        })
    }

    /// Checks one call.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let peer = Self::peer_id(&request)
            .ok_or_else(|| Status::unauthenticated("no SPIFFE ID in the client certificate"))?;
        if !self.allowed.contains(&peer) {
            return Err(Status::permission_denied(format!("{peer} is not allowed")));
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("expected a bearer token"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(token)
                .filter(|(exp, _)| *exp > now)
                .map(|(_, sub)| *sub == peer)
        };
        let sub_matches = match cached {
            Some(matches) => matches,
            None => {
                let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                    .map_err(|e| Status::unauthenticated(format!("token: {e}")))?;
                let matches = data.claims.sub == peer;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(token.to_owned(), (data.claims.exp, data.claims.sub));
                matches
            }
        };
        if !sub_matches {
            return Err(Status::unauthenticated(
                "the token's sub is not the caller's SPIFFE ID",
            ));
        }
        Ok(request)
    }
}
