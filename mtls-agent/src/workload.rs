//! The SPIFFE Workload API service.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use mtls_identity::SpiffeId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::caller::{Connection, attest_connection};
use crate::conn::ConnInfo;
use crate::issuer::{Issuer, Snapshot};
use crate::limits::Limits;
use crate::logging::{LogBudget, Shown};
use crate::pb::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::pb::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use crate::registration::Caller;

/// The header every Workload API call must carry (SPIFFE Workload API spec, SSRF guard).
pub(crate) const SECURITY_HEADER: &str = "workload.spiffe.io";

static UNMATCHED: LogBudget = LogBudget::new(20);
static VALIDATE_REFUSED: LogBudget = LogBudget::new(20);

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `SpiffeWorkloadAPI` over the agent's issuer.
#[derive(Debug, Clone)]
pub(crate) struct WorkloadApi {
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) limits: Arc<crate::limits::Limits>,
}

fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        Some(v) => Err(Status::invalid_argument(format!(
            "security header {SECURITY_HEADER} is \"{}\"; expected \"true\"",
            crate::logging::shown_bytes(v.as_bytes())
        ))),
        None => Err(Status::invalid_argument(format!(
            "security header missing from request: expected `{SECURITY_HEADER}: true`"
        ))),
    }
}

/// What a caller no longer (or never) entitled to an identity is told (SPIFFE Workload API:
/// PERMISSION_DENIED; the log says why).
pub(crate) fn no_identity() -> Status {
    crate::metrics::caller_refused();
    Status::permission_denied("no identity issued")
}

/// Attests the caller of `connection` against the current registration: its SPIFFE IDs, or
/// why it has none (for the log).
fn entitled(issuer: &Issuer, connection: &Connection) -> Result<(Caller, Vec<SpiffeId>), String> {
    let registration = issuer.registration();
    let caller = attest_connection(connection, &registration, None)?;
    let ids = registration.identities_for(&caller);
    if ids.is_empty() {
        return Err(format!(
            "no registration entry matches the caller ({caller})"
        ));
    }
    Ok((caller, ids))
}

impl WorkloadApi {
    /// Header check, caller attestation, and its SPIFFE IDs (PERMISSION_DENIED if none).
    fn admit<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
    ) -> Result<(Connection, Caller, Vec<SpiffeId>), Status> {
        check_header(request)?;
        let connection = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.peer.clone())
            .unwrap_or_default();
        match entitled(&self.issuer, &connection) {
            Ok((caller, ids)) => {
                tracing::debug!(%caller, rpc, ids = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "caller attested");
                Ok((connection, caller, ids))
            }
            Err(reason) => {
                if let Some(suppressed) = UNMATCHED.allow() {
                    tracing::warn!(rpc, %reason, suppressed, "no identity issued");
                }
                Err(no_identity())
            }
        }
    }
}

fn x509_response(snapshot: &Snapshot, ids: &[SpiffeId]) -> X509svidResponse {
    let svids = ids
        .iter()
        .filter_map(|id| snapshot.svid(id))
        .map(|svid| X509svid {
            spiffe_id: svid.spiffe_id.to_string(),
            x509_svid: svid.chain_der.clone(),
            x509_svid_key: svid.key_pkcs8.clone(),
            bundle: snapshot.bundle_der.clone(),
            hint: String::new(),
        })
        .collect();
    X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: federated_x509(snapshot).collect(),
    }
}

/// Foreign trust domains' X.509 bundles: `spiffe://<td>` → DER certificates concatenated.
fn federated_x509(snapshot: &Snapshot) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    snapshot
        .federated
        .iter()
        .filter(|b| !b.x509_authorities().is_empty())
        .map(|b| {
            (
                format!("spiffe://{}", b.trust_domain()),
                b.x509_authorities()
                    .iter()
                    .flat_map(|c| c.as_ref().to_vec())
                    .collect(),
            )
        })
}

/// Foreign trust domains' JWT bundles: `spiffe://<td>` → JWKS.
fn federated_jwt(snapshot: &Snapshot) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    snapshot
        .federated
        .iter()
        .filter(|b| !b.jwt_authorities().is_empty())
        .map(|b| {
            (
                format!("spiffe://{}", b.trust_domain()),
                b.jwt_jwks_json().into_bytes(),
            )
        })
}

fn td_id(snapshot: &Snapshot) -> String {
    format!("spiffe://{}", snapshot.trust_domain)
}

/// Streams `make(snapshot, ids)` now and after every rotation until the client goes away.
///
/// Each rotation (and registration reload, which rotates) re-attests the caller: the stream
/// follows its current identities, and ends with PERMISSION_DENIED ("no identity issued")
/// when it has none left, when it is no longer the process that connected, or as soon as
/// that process exits — never feeding new SVIDs to whoever holds the socket now.
fn stream_snapshots<T, F>(
    issuer: &Arc<Issuer>,
    what: &'static str,
    connection: Connection,
    (mut caller, mut ids): (Caller, Vec<SpiffeId>),
    make: F,
) -> Streamed<T>
where
    T: Send + 'static,
    F: Fn(&Snapshot, &[SpiffeId]) -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let mut updates = issuer.subscribe();
    let issuer = Arc::clone(issuer);
    tokio::spawn(async move {
        let watched = connection.clone();
        let exited = async move { watched.exited().await };
        tokio::pin!(exited);
        loop {
            let snapshot = updates.borrow_and_update().clone();
            if tx.send(Ok(make(&snapshot, &ids))).await.is_err() {
                break;
            }
            tracing::debug!(%caller, what, generation = snapshot.generation, "sent");
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    match entitled(&issuer, &connection) {
                        Ok((now, now_ids)) => {
                            if now_ids != ids {
                                tracing::info!(caller = %now, what,
                                    ids = ?now_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                                    "stream follows the caller's new identities");
                            }
                            (caller, ids) = (now, now_ids);
                        }
                        Err(reason) => {
                            tracing::warn!(%caller, what, %reason, "stream ended: no identity issued");
                            let _ = tx.send(Err(no_identity())).await;
                            break;
                        }
                    }
                }
                () = &mut exited => {
                    tracing::info!(%caller, what, "stream ended: the process that opened it exited");
                    let _ = tx.send(Err(no_identity())).await;
                    break;
                }
                () = tx.closed() => break,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (connection, caller, ids) = self.admit(&request, "FetchX509SVID")?;
        tracing::info!(%caller, ids = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "FetchX509SVID stream opened");
        Ok(Response::new(stream_snapshots(
            &self.issuer,
            "X509-SVIDs",
            connection,
            (caller, ids),
            x509_response,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let (connection, caller, ids) = self.admit(&request, "FetchX509Bundles")?;
        Ok(Response::new(stream_snapshots(
            &self.issuer,
            "X.509 bundles",
            connection,
            (caller, ids),
            |s, _| X509BundlesResponse {
                crl: Vec::new(),
                bundles: [(td_id(s), s.bundle_der.clone())]
                    .into_iter()
                    .chain(federated_x509(s))
                    .collect(),
            },
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let (_, caller, ids) = self.admit(&request, "FetchJWTSVID")?;
        let req = request.into_inner();
        check_audiences(&req.audience, &self.limits)?;
        let wanted: Vec<SpiffeId> = if req.spiffe_id.is_empty() {
            ids
        } else {
            // Strictly, as configuration is parsed: `SPIFFE://Web.Example.org/w` is refused,
            // not lower-cased into a registered ID.
            let id = SpiffeId::new(&req.spiffe_id).map_err(|e| {
                Status::invalid_argument(format!(
                    "requested spiffe_id {:?} is not a SPIFFE ID: {e}",
                    Shown(&req.spiffe_id)
                ))
            })?;
            if !ids.contains(&id) {
                return Err(Status::permission_denied(format!(
                    "the caller ({caller}) is not entitled to {id}; entitled: {}",
                    ids.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            vec![id]
        };
        let mut svids = Vec::with_capacity(wanted.len());
        for id in wanted {
            let token = self
                .issuer
                .mint_jwt(&id, &req.audience)
                .map_err(|e| Status::internal(format!("minting a JWT-SVID for {id}: {e}")))?;
            svids.push(Jwtsvid {
                spiffe_id: id.to_string(),
                svid: token,
                hint: String::new(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let (connection, caller, ids) = self.admit(&request, "FetchJWTBundles")?;
        Ok(Response::new(stream_snapshots(
            &self.issuer,
            "JWT bundles",
            connection,
            (caller, ids),
            |s, _| JwtBundlesResponse {
                bundles: [(td_id(s), s.jwks.clone().into_bytes())]
                    .into_iter()
                    .chain(federated_jwt(s))
                    .collect(),
            },
        )))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        // Validation needs no identity of the caller (a verifier may have none), only the
        // security header.
        check_header(&request)?;
        let req = request.into_inner();
        check_audiences(std::slice::from_ref(&req.audience), &self.limits)?;
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let validator = self
            .issuer
            .validator(&req.audience)
            .map_err(|e| Status::internal(e.to_string()))?;
        let refused = |reason: &dyn std::fmt::Display| {
            if let Some(suppressed) = VALIDATE_REFUSED.allow() {
                tracing::info!(audience = %Shown(&req.audience), error = %reason, suppressed,
                    "ValidateJWTSVID refused a token");
            }
        };
        let claims = validator.validate_now(&req.svid).map_err(|e| {
            refused(&e);
            Status::invalid_argument(e.envoy_message())
        })?;
        // Validation is keyed by trust domain (as SPIRE's is): we hold the bundle of our own
        // trust domain only, so a subject in any other is refused even when our key signed it.
        let spiffe_id = match claims.spiffe_id() {
            Some(id) if id.trust_domain() == self.issuer.trust_domain() => id.to_string(),
            Some(id) => {
                refused(&format_args!(
                    "subject {} is outside trust domain {}",
                    Shown(&id.to_string()),
                    self.issuer.trust_domain()
                ));
                return Err(Status::invalid_argument(
                    "token subject is not in a trust domain this agent validates",
                ));
            }
            None => {
                refused(&"subject is not a SPIFFE ID");
                return Err(Status::invalid_argument("token subject is not a SPIFFE ID"));
            }
        };
        let fields = claims
            .as_map()
            .iter()
            .map(|(k, v)| (k.clone(), json_to_prost(v)))
            .collect();
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(prost_types::Struct { fields }),
        }))
    }
}

/// Audiences of a JWT-SVID request: at least one, at most [`Limits::max_audiences`], each
/// non-empty and at most [`Limits::max_audience_len`] bytes.
fn check_audiences(audiences: &[String], limits: &Limits) -> Result<(), Status> {
    if audiences.is_empty() {
        return Err(Status::invalid_argument(
            "audience must be specified: expected at least one audience",
        ));
    }
    if audiences.len() > limits.max_audiences {
        return Err(Status::invalid_argument(format!(
            "{} audiences requested; expected at most {}",
            audiences.len(),
            limits.max_audiences
        )));
    }
    for (i, audience) in audiences.iter().enumerate() {
        if audience.is_empty() {
            return Err(Status::invalid_argument(format!(
                "audience {} is empty; expected a non-empty audience",
                i + 1
            )));
        }
        if audience.len() > limits.max_audience_len {
            return Err(Status::invalid_argument(format!(
                "audience {} is {} bytes; expected at most {}",
                i + 1,
                audience.len(),
                limits.max_audience_len
            )));
        }
    }
    Ok(())
}

fn json_to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_prost).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_prost(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_bounded_and_non_empty() {
        let limits = Limits::default();
        let ok = vec!["bookstore".to_owned(); limits.max_audiences];
        check_audiences(&ok, &limits).unwrap();
        for (audiences, expected) in [
            (vec![], "expected at least one audience"),
            (vec![String::new()], "audience 1 is empty"),
            (vec!["a".to_owned(), String::new()], "audience 2 is empty"),
            (
                vec!["a".repeat(513)],
                "audience 1 is 513 bytes; expected at most 512",
            ),
            (
                vec!["a".to_owned(); 17],
                "17 audiences requested; expected at most 16",
            ),
        ] {
            let status = check_audiences(&audiences, &limits).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(expected), "{}", status.message());
        }
    }
}
