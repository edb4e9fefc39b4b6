//! Envoy's Secret Discovery Service (`envoy.service.secret.v3`), named as SPIRE names
//! secrets: a SPIFFE ID (or `default`) is a `tls_certificate`; a trust-domain ID
//! (`spiffe://example.org`, ours or a federated one's) and `ROOTCA` (ours) are a
//! `validation_context` with that domain's roots as `trusted_ca`; `ALL` is, as in SPIRE,
//! every trust domain's bundle — ours and the federated ones — in Envoy's SPIFFE
//! certificate validator (`envoy.tls.cert_validator.spiffe`), which verifies a peer
//! against the bundle of its own SPIFFE ID's trust domain only (bundles are never merged
//! into one `trusted_ca`).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use mtls_identity::SpiffeId;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::caller::{Connection, attest_connection};
use crate::conn::ConnInfo;
use crate::issuer::{Issuer, Snapshot};
use crate::limits::Limits;
use crate::logging::{LogBudget, Shown};
use crate::pb::envoy::config::core::v3::{DataSource, TypedExtensionConfig, data_source};
use crate::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config,
};
use crate::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use crate::registration::Caller;

/// The type URL of an SDS resource.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The name of Envoy's SPIFFE certificate validator.
const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
/// The type URL of its configuration.
const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

/// The longest SDS resource name that can name anything (a SPIFFE ID is at most 2048 bytes).
const MAX_RESOURCE_NAME: usize = 2048;

static REFUSED: LogBudget = LogBudget::new(20);
static NACKED: LogBudget = LogBudget::new(20);

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// SDS over the agent's issuer.
#[derive(Debug, Clone)]
pub(crate) struct Sds {
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) limits: Arc<crate::limits::Limits>,
}

fn inline(bytes: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            bytes.as_bytes().to_vec(),
        )),
    })
}

/// The secret called `name` for a caller entitled to `ids`.
fn resolve(name: &str, snapshot: &Snapshot, ids: &[SpiffeId]) -> Result<Secret, Status> {
    let td_id = format!("spiffe://{}", snapshot.trust_domain);
    if name == "ALL" {
        return Ok(Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(all_bundles(snapshot))),
        });
    }
    if name == "ROOTCA" || name == td_id {
        return Ok(Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(&snapshot.bundle_pem),
                    custom_validator_config: None,
                },
            )),
        });
    }
    // A federated trust domain's validation context, named as SPIRE names it.
    if let Some(bundle) = name
        .strip_prefix("spiffe://")
        .and_then(|td| {
            snapshot
                .federated
                .iter()
                .find(|b| b.trust_domain().as_str() == td)
        })
        .filter(|b| !b.x509_authorities().is_empty())
    {
        return Ok(Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(&bundle.to_pem()),
                    custom_validator_config: None,
                },
            )),
        });
    }
    // A SPIFFE ID the caller is not entitled to gets the same answer whether or not it is
    // registered: the peer never learns which identities exist.
    let id = if name == "default" {
        ids.first().cloned()
    } else {
        // Strict parsing (no lower-casing): a name is served only in its canonical form.
        SpiffeId::new(name).ok().filter(|id| ids.contains(id))
    };
    let svid = id.as_ref().and_then(|id| snapshot.svid(id)).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown SDS secret name \"{}\": expected \"default\", one of the caller's SPIFFE IDs [{}], \
             the trust domain ID {td_id:?}, \"ROOTCA\" or \"ALL\"",
            Shown(name),
            list(ids)
        ))
    })?;
    Ok(Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&svid.chain_pem),
            private_key: inline(&svid.key_pem),
        })),
    })
}

/// SPIRE's `ALL`: every trust domain's bundle (ours first, then the federated ones with
/// X.509 authorities, by name) in the SPIFFE certificate validator.
fn all_bundles(snapshot: &Snapshot) -> CertificateValidationContext {
    let domain = |name: String, pem: &str| spiffe_cert_validator_config::TrustDomain {
        name,
        trust_bundle: inline(pem),
    };
    let trust_domains = std::iter::once(domain(
        snapshot.trust_domain.to_string(),
        &snapshot.bundle_pem,
    ))
    .chain(
        snapshot
            .federated
            .iter()
            .filter(|b| !b.x509_authorities().is_empty())
            .map(|b| domain(b.trust_domain().to_string(), &b.to_pem())),
    )
    .collect();
    CertificateValidationContext {
        trusted_ca: None,
        custom_validator_config: Some(TypedExtensionConfig {
            name: SPIFFE_VALIDATOR.to_owned(),
            typed_config: Some(prost_types::Any {
                type_url: SPIFFE_VALIDATOR_TYPE_URL.to_owned(),
                value: SpiffeCertValidatorConfig { trust_domains }.encode_to_vec(),
            }),
        }),
    }
}

/// The requested resource names, duplicates merged (first occurrence kept), at most
/// [`Limits::max_sds_resource_names`] of them, each at most 2048 bytes.
fn requested_names(names: Vec<String>, limits: &Limits) -> Result<Vec<String>, Status> {
    let mut unique: Vec<String> = Vec::new();
    for name in names {
        if name.len() > MAX_RESOURCE_NAME {
            return Err(Status::invalid_argument(format!(
                "SDS resource name of {} bytes; expected at most {MAX_RESOURCE_NAME}",
                name.len()
            )));
        }
        if !unique.contains(&name) {
            if unique.len() == limits.max_sds_resource_names {
                return Err(Status::invalid_argument(format!(
                    "more than {} distinct SDS resource names requested; expected at most {}",
                    limits.max_sds_resource_names, limits.max_sds_resource_names
                )));
            }
            unique.push(name);
        }
    }
    Ok(unique)
}

/// Names for a log line: escaped and bounded.
fn shown_names(names: &[String]) -> Vec<Shown<'_>> {
    names.iter().map(|n| Shown(n)).collect()
}

fn list(ids: &[SpiffeId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sds {
    /// The response for `names`, or the status that refuses them.
    ///
    /// The caller is attested afresh each time (see caller.rs): secrets go only to the
    /// process that connected, while it lives, as its registration stands now.
    fn respond(
        &self,
        connection: &Connection,
        node: Option<String>,
        names: &[String],
        nonce: u64,
        snapshot: Arc<Snapshot>,
    ) -> Result<(DiscoveryResponse, Arc<Snapshot>, Caller), Status> {
        let registration = self.issuer.registration();
        let caller = attest_connection(connection, &registration, node).map_err(|reason| {
            if let Some(suppressed) = REFUSED.allow() {
                tracing::warn!(%reason, names = ?shown_names(names), suppressed, "SDS: no identity issued");
            }
            crate::workload::no_identity()
        })?;
        let caller = &caller;
        let ids = registration.identities_for(caller);
        if ids.is_empty() {
            return Err(Status::permission_denied(format!(
                "no identity issued: no registration entry matches the SDS caller ({caller})"
            )));
        }
        let mut resources = Vec::with_capacity(names.len());
        for name in names {
            let secret = resolve(name, &snapshot, &ids)?;
            resources.push(prost_types::Any {
                type_url: SECRET_TYPE_URL.to_owned(),
                value: secret.encode_to_vec(),
            });
        }
        Ok((
            DiscoveryResponse {
                version_info: snapshot.generation.to_string(),
                resources,
                canary: false,
                type_url: SECRET_TYPE_URL.to_owned(),
                nonce: nonce.to_string(),
                control_plane: None,
            },
            snapshot,
            caller.clone(),
        ))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = Streamed<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Streamed<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not implemented: use the state-of-the-world StreamSecrets (Envoy's default for SDS)",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let connection = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.peer.clone())
            .unwrap_or_default();
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let sds = self.clone();
        tokio::spawn(async move {
            let mut updates = sds.issuer.subscribe();
            let watched = connection.clone();
            let exited = async move { watched.exited().await };
            tokio::pin!(exited);
            let mut node: Option<String> = None;
            let mut names: Vec<String> = Vec::new();
            let mut sent: Option<u64> = None;
            let mut nonce = 0u64;
            loop {
                let push = tokio::select! {
                    msg = requests.next() => match msg {
                        Some(Ok(req)) => {
                            if node.is_none() {
                                node = req.node.as_ref().map(|n| n.id.clone()).filter(|id| !id.is_empty());
                            }
                            let requested = match requested_names(req.resource_names, &sds.limits) {
                                Ok(requested) => requested,
                                Err(status) => {
                                    if let Some(suppressed) = REFUSED.allow() {
                                        tracing::warn!(node = %Shown(node.as_deref().unwrap_or("")), error = %status.message(), suppressed, "SDS request refused");
                                    }
                                    let _ = tx.send(Err(status)).await;
                                    break;
                                }
                            };
                            if let Some(err) = &req.error_detail
                                && let Some(suppressed) = NACKED.allow()
                            {
                                tracing::warn!(node = %Shown(node.as_deref().unwrap_or("")), names = ?shown_names(&requested), nonce = %Shown(&req.response_nonce),
                                    code = err.code, message = %Shown(&err.message), suppressed,
                                    "Envoy rejected (NACK) an SDS response");
                            }
                            let changed = requested != names;
                            names = requested;
                            let current = sds.issuer.current().generation;
                            // First request, new names, or a version Envoy does not have yet.
                            changed || sent.is_none() || req.version_info != current.to_string()
                                && req.error_detail.is_none()
                        }
                        Some(Err(e)) => {
                            tracing::debug!(node = %Shown(node.as_deref().unwrap_or("")), error = %e, "SDS stream ended with an error");
                            break;
                        }
                        None => break,
                    },
                    // A rotation or a registration reload: re-attested and re-resolved below.
                    changed = updates.changed() => {
                        if changed.is_err() { break }
                        !names.is_empty()
                    }
                    () = &mut exited => {
                                tracing::info!(node = %Shown(node.as_deref().unwrap_or("")), names = ?shown_names(&names),
                            "SDS stream ended: the process that opened it exited");
                        let _ = tx.send(Err(crate::workload::no_identity())).await;
                        break;
                    }
                    () = tx.closed() => break,
                };
                if !push {
                    continue;
                }
                nonce += 1;
                // Mark this snapshot seen *before* answering from it, so a rotation that
                // lands meanwhile is pushed next.
                let snapshot = updates.borrow_and_update().clone();
                match sds.respond(&connection, node.clone(), &names, nonce, snapshot) {
                    Ok((response, snapshot, caller)) => {
                        tracing::info!(%caller, names = ?shown_names(&names), version = %response.version_info,
                            serials = ?names.iter().filter_map(|n| n.parse::<SpiffeId>().ok())
                                .filter_map(|id| snapshot.svid(&id).map(|s| s.serial_hex.clone())).collect::<Vec<_>>(),
                            "SDS secrets sent");
                        sent = Some(snapshot.generation);
                        if tx.send(Ok(response)).await.is_err() {
                            break;
                        }
                    }
                    Err(status) => {
                        if let Some(suppressed) = REFUSED.allow() {
                            tracing::warn!(node = %Shown(node.as_deref().unwrap_or("")), names = ?shown_names(&names), error = %status.message(), suppressed,
                                "SDS request refused");
                        }
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let node = request
            .get_ref()
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .filter(|id| !id.is_empty());
        let connection = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.peer.clone())
            .unwrap_or_default();
        let names = requested_names(request.into_inner().resource_names, &self.limits)?;
        let (response, _, caller) =
            self.respond(&connection, node, &names, 0, self.issuer.current())?;
        tracing::info!(%caller, names = ?shown_names(&names), version = %response.version_info, "SDS secrets fetched");
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_deduplicated_and_bounded() {
        let limits = Limits::default();
        // 650k "ALL": one name.
        let names = requested_names(vec!["ALL".to_owned(); 650_000], &limits).unwrap();
        assert_eq!(names, ["ALL"]);
        let names = requested_names(
            vec!["default".into(), "ALL".into(), "default".into()],
            &limits,
        )
        .unwrap();
        assert_eq!(names, ["default", "ALL"]);
        let many: Vec<String> = (0..=limits.max_sds_resource_names)
            .map(|i| format!("n{i}"))
            .collect();
        let status = requested_names(many, &limits).unwrap_err();
        assert!(
            status
                .message()
                .contains("more than 32 distinct SDS resource names"),
            "{}",
            status.message()
        );
        let status = requested_names(vec!["x".repeat(4096)], &limits).unwrap_err();
        assert!(
            status
                .message()
                .contains("4096 bytes; expected at most 2048")
        );
    }
}
