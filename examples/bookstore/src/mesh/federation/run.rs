//! [`run_federated`]: the federation scenario on both paths, then the CA rotation under
//! calls on both at once.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use mtls_core::{TrustDomain, TrustSource};
use mtls_tonic::{
    balance::{BalancedChannel, LoadPolicy},
    client::MtlsConnector,
};

use super::super::*;
use super::super::{assess::*, print::*};
use super::{BookstoreCaller, FederatedDomains, rotation};
use crate::{
    Error, MeshDns, MeshPki, MeshPolicy, Result, Scenario, Store, envoy::EnvoyProcess,
    identity::WorkloadIdentities, scenario::boxed,
};

/// Runs the federation scenario ([`super`]) with `domains`' identities: `tokens` mints the
/// bearer tokens (its JWKS is `jwks`); Envoy configs and logs go into `dir`. Like
/// [`run_with`](super::super::run_with), nothing it starts outlives it.
pub async fn run_federated(
    options: &MeshOptions,
    policy: &MeshPolicy,
    domains: &FederatedDomains,
    jwks: &str,
    tokens: &MeshPki,
    dir: &Path,
) -> Result<MeshOutcome> {
    let mut outcome = MeshOutcome {
        stats: refusal_stats(),
        ..MeshOutcome::default()
    };
    let (envoy, install_failed) = super::super::run::choose_envoy(options)?;
    say!(options, "==> identities: {}", domains.describe());
    say!(
        options,
        "    bookstore {}  client {} (admitted)  neighbour {} (federated, not admitted)  unfederated {}",
        policy.server_id,
        domains.caller_id(BookstoreCaller::Client),
        domains.caller_id(BookstoreCaller::Neighbour),
        domains.caller_id(BookstoreCaller::Unfederated),
    );
    let dns = MeshDns::start(&policy.service_name, &REPLICA_IPS, 5).await?;
    let replicas = Replicas::start(&REPLICA_IPS, policy, domains, jwks, Store::seeded()).await?;
    say!(
        options,
        "==> DNS on {}; 3 replicas (SVIDs from bookstore.local's agent; trust: bookstore.local + client.local) on {}",
        dns.addr(),
        super::super::run::listed(&replicas.mtls_addrs())
    );
    let token = tokens.token(&policy.audience)?;
    let client_id = domains.caller_id(BookstoreCaller::Client).to_string();
    let names = replicas.names();
    let judge = PathJudge::new(options, policy, &client_id, &names);

    // ---- proxyless ----------------------------------------------------------------------
    say!(
        options,
        "\n==> proxyless: {client_id} -> {}:{} (its SVID and trust from client.local's agent)",
        policy.service_name,
        replicas.port()
    );
    let channel = caller_channel(
        domains,
        policy,
        BookstoreCaller::Client,
        replicas.port(),
        dns.addr(),
    )?;
    wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(10)).await?;
    let report = Scenario::new(boxed(channel.clone()), Some(token.clone()))
        .run(options.calls)
        .await;
    record_path(&mut outcome, &judge, report, None).await?;
    outcome
        .checks
        .push(proxyless_federation_check(domains, policy));
    for caller in [BookstoreCaller::Neighbour, BookstoreCaller::Unfederated] {
        let before = our_refusals(caller);
        let result = probe(domains, policy, caller, replicas.port(), dns.addr(), &token).await;
        let counted = before.zip(our_refusals(caller));
        set_stat(&mut outcome.stats, caller, PathKind::Proxyless, counted);
        outcome.checks.push(refusal_check(
            PathKind::Proxyless,
            caller,
            result,
            counted,
            &our_metric(caller),
        ));
    }
    print_checks(options, &outcome, PathKind::Proxyless);

    // ---- Envoy --------------------------------------------------------------------------
    let sidecars = match envoy {
        None => {
            let reason = super::super::run::envoy_skip_reason(options, install_failed.as_deref());
            say!(options, "\n==> Envoy path skipped: {reason}");
            outcome.envoy_skipped = Some(reason);
            None
        }
        Some(envoy) => {
            say!(options, "\n==> Envoy path: {}", envoy.display());
            let sidecars =
                Sidecars::start(&envoy, dir, policy, domains, jwks, &replicas, dns.addr()).await?;
            say!(
                options,
                "    client sidecar on {} (SDS from client.local's agent, validation context spiffe://{}); \
                 server sidecars on port {} (SDS from bookstore.local's agent, validation context spiffe://{})",
                sidecars.client_listen(),
                policy.trust_domain,
                sidecars.port(),
                domains.caller_id(BookstoreCaller::Client).trust_domain(),
            );
            let channel = envoy_channel(sidecars.client_listen()).await?;
            let report = Scenario::new(boxed(channel), Some(token.clone()))
                .run(options.calls)
                .await;
            record_path(&mut outcome, &judge, report, Some(&sidecars)).await?;
            outcome
                .checks
                .push(envoy_federation_check(domains, policy, &sidecars).await);
            // The two callers dial the server sidecars directly, with their own SVIDs.
            for caller in [BookstoreCaller::Neighbour, BookstoreCaller::Unfederated] {
                let stat = envoy_stat(caller);
                let before = sum_counter(sidecars.servers(), stat).await;
                let result =
                    probe(domains, policy, caller, sidecars.port(), dns.addr(), &token).await;
                let after = sum_counter(sidecars.servers(), stat).await;
                set_stat(
                    &mut outcome.stats,
                    caller,
                    PathKind::Envoy,
                    before.zip(after),
                );
                outcome.checks.push(refusal_check(
                    PathKind::Envoy,
                    caller,
                    result,
                    before.zip(after),
                    stat,
                ));
            }
            print_checks(options, &outcome, PathKind::Envoy);
            Some(sidecars)
        }
    };

    // ---- CA rotation in bookstore.local, calls running on both paths ---------------------
    say!(
        options,
        "\n==> CA rotation in {} while calls run on both paths (refresh hint {:?})",
        policy.trust_domain,
        domains.refresh_hint()
    );
    let envoy_path = match &sidecars {
        Some(s) => Some((s, envoy_channel(s.client_listen()).await?)),
        None => None,
    };
    let ca_rotation = rotation::rotate_under_calls(
        options,
        domains,
        policy,
        boxed(channel),
        envoy_path.as_ref().map(|(s, c)| (*s, boxed(c.clone()))),
        &replicas.mtls_addrs(),
        &token,
        || {
            caller_channel(
                domains,
                policy,
                BookstoreCaller::Client,
                replicas.port(),
                dns.addr(),
            )
        },
    )
    .await?;
    outcome.checks.push(ca_rotation.check(PathKind::Proxyless));
    if envoy_path.is_some() {
        outcome.checks.push(ca_rotation.check(PathKind::Envoy));
    }
    say!(options, "{}", ca_rotation.describe());
    outcome.ca_rotation = Some(ca_rotation);
    drop(envoy_path);
    drop(sidecars);
    drop(replicas);
    drop(dns);
    Ok(outcome)
}

/// A balanced mTLS channel to the bookstore for `caller` (its own SVID and trust; see
/// [`FederatedDomains::caller_tls`]), through the mesh's DNS.
fn caller_channel(
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    caller: BookstoreCaller,
    port: u16,
    dns: SocketAddr,
) -> Result<BalancedChannel> {
    let connector = MtlsConnector::new(domains.caller_tls(caller)?)
        .server_name(&policy.service_name)
        .map_err(|e| Error::tonic("server name", e))?;
    // A refused caller gives up after a second without a ready endpoint.
    let ready = match caller {
        BookstoreCaller::Client => Duration::from_secs(3),
        BookstoreCaller::Neighbour | BookstoreCaller::Unfederated => Duration::from_secs(1),
    };
    BalancedChannel::builder(format!("{}:{port}", policy.service_name), connector)
        .nameserver(dns)
        .load_policy(LoadPolicy::RoundRobin)
        .ready_timeout(ready)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| Error::tonic(format!("building the {caller}'s channel"), e))
}

/// One call by `caller` to `port` (the replicas or the server sidecars).
async fn probe(
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    caller: BookstoreCaller,
    port: u16,
    dns: SocketAddr,
    token: &str,
) -> std::result::Result<Option<String>, tonic::Status> {
    let channel = caller_channel(domains, policy, caller, port, dns)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    Scenario::new(boxed(channel), Some(token.to_owned()))
        .probe()
        .await
}

/// Our server handshakes refused for the reason `caller` should be refused for.
fn our_refusals(caller: BookstoreCaller) -> Option<u64> {
    let name = mtls_core::metrics::SERVER_TLS_HANDSHAKES;
    let label = mtls_core::metrics::HANDSHAKE_RESULT;
    match caller {
        BookstoreCaller::Neighbour => Some(
            crate::metrics::counter(name, &[(label, "authorizer_denied")])?
                + crate::metrics::counter(name, &[(label, "san_mismatch")])?,
        ),
        BookstoreCaller::Unfederated => crate::metrics::counter(name, &[(label, "unknown_ca")]),
        BookstoreCaller::Client => None,
    }
}

/// The name of [`our_refusals`]' figure, as Prometheus prints it.
fn our_metric(caller: BookstoreCaller) -> String {
    let result = match caller {
        BookstoreCaller::Neighbour => "authorizer_denied",
        _ => "unknown_ca",
    };
    format!(
        "{}{{{}=\"{result}\"}}",
        mtls_core::metrics::SERVER_TLS_HANDSHAKES.replace('.', "_"),
        mtls_core::metrics::HANDSHAKE_RESULT.replace('.', "_"),
    )
}

/// Stats row: handshakes refused for a SPIFFE ID the policy does not admit.
pub(super) const STAT_NOT_ADMITTED: &str = "handshakes refused: SPIFFE ID not admitted";
/// Stats row: handshakes refused for a certificate of an unknown CA (unfederated domain).
pub(super) const STAT_UNKNOWN_CA: &str = "handshakes refused: unknown CA";

/// The side-by-side rows of the federation scenario: each refusal, counted by reason.
fn refusal_stats() -> Vec<StatRow> {
    vec![
        StatRow {
            event: STAT_NOT_ADMITTED,
            proxyless: (
                "grpc_server_tls_handshakes{authorizer_denied|san_mismatch}",
                None,
            ),
            envoy: ("ssl.fail_verify_san", None),
        },
        StatRow {
            event: STAT_UNKNOWN_CA,
            proxyless: ("grpc_server_tls_handshakes{unknown_ca}", None),
            envoy: ("ssl.fail_verify_error", None),
        },
    ]
}

/// Fills `caller`'s refusal row for `path` with the change of its figure.
fn set_stat(
    rows: &mut [StatRow],
    caller: BookstoreCaller,
    path: PathKind,
    counted: Option<(u64, u64)>,
) {
    let event = match caller {
        BookstoreCaller::Neighbour => STAT_NOT_ADMITTED,
        _ => STAT_UNKNOWN_CA,
    };
    let value = counted.map(|(before, after)| after.saturating_sub(before));
    if let Some(row) = rows.iter_mut().find(|r| r.event == event) {
        match path {
            PathKind::Proxyless => row.proxyless.1 = value,
            PathKind::Envoy => row.envoy.1 = value,
        }
    }
}

/// The server sidecars' stat for the reason `caller` should be refused for.
fn envoy_stat(caller: BookstoreCaller) -> &'static str {
    match caller {
        BookstoreCaller::Neighbour => "ssl.fail_verify_san",
        _ => "ssl.fail_verify_error",
    }
}

async fn sum_counter(envoys: &[EnvoyProcess], suffix: &str) -> Option<u64> {
    let mut sum = 0;
    for envoy in envoys {
        sum += envoy.counter(suffix).await.ok()?;
    }
    Some(sum)
}

/// The check that `caller` was refused in the handshake, and the refusal counted for the
/// right reason (`counted`: before and after, when the figure could be read).
fn refusal_check(
    path: PathKind,
    caller: BookstoreCaller,
    result: std::result::Result<Option<String>, tonic::Status>,
    counted: Option<(u64, u64)>,
    metric: &str,
) -> Check {
    let (name, why) = match caller {
        BookstoreCaller::Neighbour => (checks::NEIGHBOUR, "SPIFFE ID not admitted"),
        _ => (checks::UNFEDERATED, "unknown CA"),
    };
    let mut expected = format!("handshake refused ({why})");
    if path == PathKind::Envoy || counted.is_some() {
        expected.push_str(&format!("; {} rises", short_metric(metric)));
    }
    // Through Envoy the figure must be read; proxyless only with a metrics recorder.
    let counted_ok = match (path, counted) {
        (_, Some((before, after))) => after > before,
        (PathKind::Envoy, None) => false,
        (_, None) => true,
    };
    // The server's figure for the reason proves the refusal, whatever the caller saw: in
    // TLS 1.3 the client's handshake ends before the server checks its certificate, and
    // the server's alert may be lost to the closed connection ("connection closed before
    // HTTP/2 SETTINGS"). Without the figure, the caller must have seen the alert.
    let rose = counted.is_some_and(|(before, after)| after > before);
    let counted_text = counted
        .map(|(b, a)| format!(" ({metric} {b} -> {a})"))
        .unwrap_or_default();
    handshake_refusal(
        path,
        name,
        expected,
        result,
        &counted_text,
        counted_ok,
        rose,
    )
}

/// Proxyless: the client's source trusts `bookstore.local` with exactly the roots
/// bookstore.local's agent publishes, and the replicas' source trusts `client.local` with
/// client.local's — each fetched from the other's bundle endpoint.
fn proxyless_federation_check(domains: &FederatedDomains, policy: &MeshPolicy) -> Check {
    let client_td = domains
        .caller_id(BookstoreCaller::Client)
        .trust_domain()
        .clone();
    let sides = [
        (
            "client",
            domains.caller_source(BookstoreCaller::Client).current(),
            &policy.trust_domain,
            domains.bookstore_agent(),
            domains.client_agent(),
        ),
        (
            "replicas",
            domains
                .trust()
                .map(|t| t.current())
                .unwrap_or_else(|_| Arc::new(mtls_core::TrustBundle::spiffe())),
            &client_td,
            domains.client_agent(),
            domains.bookstore_agent(),
        ),
    ];
    let mut observed = Vec::new();
    let mut passed = true;
    for (who, trust, foreign, owner, fetcher) in sides {
        let want = bundle_roots(&owner.bundle_pem());
        let have = trust.roots(Some(foreign)).to_vec();
        let sequence = fetcher
            .federated_bundles()
            .get(foreign)
            .and_then(|b| b.sequence());
        let ok = !want.is_empty() && have == want && sequence.is_some();
        passed &= ok;
        observed.push(format!(
            "{who} trust {foreign}: {} root{} ({}), sequence {}",
            have.len(),
            if have.len() == 1 { "" } else { "s" },
            if have == want {
                "its agent's"
            } else {
                "NOT its agent's"
            },
            sequence.map_or("none (not fetched)".to_owned(), |s| s.to_string()),
        ));
    }
    Check {
        path: PathKind::Proxyless,
        name: checks::FEDERATION,
        expected: "each side trusts the other's CA, fetched from its bundle endpoint".to_owned(),
        observed: observed.join("; "),
        passed,
        status: None,
    }
}

/// Envoy: the client sidecar's validation context holds bookstore.local's root, each server
/// sidecar's holds client.local's (admin `/certs`, pushed over SDS).
async fn envoy_federation_check(
    domains: &FederatedDomains,
    policy: &MeshPolicy,
    sidecars: &Sidecars,
) -> Check {
    let client_td = domains
        .caller_id(BookstoreCaller::Client)
        .trust_domain()
        .clone();
    let mut observed = Vec::new();
    let mut passed = true;
    let sides = std::iter::once((
        sidecars.client(),
        &policy.trust_domain,
        domains.bookstore_agent(),
    ))
    .chain(
        sidecars
            .servers()
            .iter()
            .map(|s| (s, &client_td, domains.client_agent())),
    );
    for (envoy, foreign, owner) in sides {
        let want = root_serials(&owner.bundle_pem());
        match ca_serials(envoy).await {
            Ok(have) => {
                let ok =
                    !want.is_empty() && want.iter().all(|w| have.iter().any(|h| same_serial(h, w)));
                passed &= ok;
                if envoy.name() == sidecars.client().name() || !ok {
                    observed.push(format!(
                        "{} validates with {}'s root{}",
                        envoy.name(),
                        foreign,
                        if ok { "" } else { ": NOT in its /certs" }
                    ));
                }
            }
            Err(e) => {
                passed = false;
                observed.push(format!("{}: {e}", envoy.name()));
            }
        }
    }
    if passed {
        observed.push(format!(
            "{} server sidecars with {client_td}'s",
            sidecars.servers().len()
        ));
    }
    Check {
        path: PathKind::Envoy,
        name: checks::FEDERATION,
        expected: "each sidecar validates with the other domain's CA (SDS spiffe://<domain>)"
            .to_owned(),
        observed: observed.join("; "),
        passed,
        status: None,
    }
}

/// The certificates of a PEM bundle, DER.
pub(super) fn bundle_roots(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    mtls_certs::parse_certificates_pem(pem).unwrap_or_default()
}

/// The serials (colon hex) of a PEM bundle's certificates.
pub(super) fn root_serials(pem: &str) -> Vec<String> {
    serials_of(&bundle_roots(pem))
}

/// The serials (colon hex) of DER certificates.
pub(super) fn serials_of(certs: &[rustls::pki_types::CertificateDer<'static>]) -> Vec<String> {
    certs
        .iter()
        .filter_map(|der| mtls_certs::inspect(der).ok())
        .map(|s| s.serial.to_string())
        .collect()
}

/// The serials of the CA certificates in `envoy`'s validation contexts (admin `/certs`).
pub(super) async fn ca_serials(envoy: &EnvoyProcess) -> Result<Vec<String>> {
    let (status, body) = envoy.admin_get("/certs").await?;
    let certs: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
        Error::envoy(
            envoy.name(),
            format!("admin /certs (status {status}): {e}; expected JSON"),
        )
    })?;
    Ok(certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|context| context["ca_cert"].as_array())
        .flatten()
        .filter_map(|ca| ca["serial_number"].as_str().map(str::to_owned))
        .collect())
}

/// `grpc_server_tls_handshakes{grpc_tls_handshake_result="unknown_ca"}` as `unknown_ca`;
/// Envoy's `ssl.fail_verify_error` as it is.
fn short_metric(metric: &str) -> &str {
    metric
        .split_once("=\"")
        .and_then(|(_, v)| v.strip_suffix("\"}"))
        .unwrap_or(metric)
}

/// Whether `trust` holds every one of `roots` for `td`.
pub(super) fn trusts_all(
    trust: &dyn TrustSource,
    td: &TrustDomain,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> bool {
    let current = trust.current();
    let have = current.roots(Some(td));
    !roots.is_empty() && roots.iter().all(|r| have.contains(r))
}
