//! Turning what each path saw into [`Check`]s.

use tonic::Code;

use super::print::print_report;
use super::*;
use crate::{MeshPolicy, Report, Result, Scenario};

/// What a run's path reports are judged against: its options and policy, the caller's
/// SPIFFE ID and the replicas' names (the calls are shared among them).
pub(super) struct PathJudge<'a> {
    pub(super) options: &'a MeshOptions,
    pub(super) policy: &'a MeshPolicy,
    pub(super) client: &'a str,
    pub(super) replicas: &'a [String],
}

impl<'a> PathJudge<'a> {
    pub(super) fn new(
        options: &'a MeshOptions,
        policy: &'a MeshPolicy,
        client: &'a str,
        replicas: &'a [String],
    ) -> Self {
        Self {
            options,
            policy,
            client,
            replicas,
        }
    }
}

/// Prints a path's report, adds its scenario and TLS checks, and keeps it in `outcome`:
/// the proxyless path's when `sidecars` is `None`, else the Envoy path's (its TLS check
/// read from the sidecars' curve counters).
pub(super) async fn record_path(
    outcome: &mut MeshOutcome,
    judge: &PathJudge<'_>,
    report: Report,
    sidecars: Option<&Sidecars>,
) -> Result<()> {
    let PathJudge {
        options,
        policy,
        client,
        replicas,
    } = *judge;
    let path = match sidecars {
        None => PathKind::Proxyless,
        Some(_) => PathKind::Envoy,
    };
    print_report(options, &report);
    scenario_checks(outcome, path, &report, replicas, options.min_share, client);
    match sidecars {
        None => {
            outcome.checks.push(proxyless_tls_check(policy, &report));
            outcome.proxyless = Some(report);
        }
        Some(sidecars) => {
            outcome.envoy = Some(report);
            let (client_curves, server_curves) = sidecars.curves().await?;
            outcome
                .checks
                .push(envoy_tls_check(policy, &client_curves, &server_curves));
        }
    }
    Ok(())
}

pub(super) fn scenario_checks(
    outcome: &mut MeshOutcome,
    path: PathKind,
    report: &Report,
    replicas: &[String],
    min_share: f64,
    client: &str,
) {
    let failed: Vec<String> = report.failures().take(3).map(ToString::to_string).collect();
    outcome.checks.push(Check {
        path,
        name: checks::SCENARIO,
        expected: "every call succeeds".to_owned(),
        observed: if failed.is_empty() {
            format!("{}/{} ok", report.succeeded(), report.total())
        } else {
            format!(
                "{}/{} ok; {}",
                report.succeeded(),
                report.total(),
                failed.join("; ")
            )
        },
        passed: report.total() > 0 && report.succeeded() == report.total(),
        status: None,
    });
    let shares: Vec<(String, f64)> = replicas
        .iter()
        .map(|r| (r.clone(), report.share(r)))
        .collect();
    outcome.checks.push(Check {
        path,
        name: checks::BALANCE,
        expected: format!(
            "each of {} replicas >= {:.0}%",
            replicas.len(),
            min_share * 100.0
        ),
        observed: shares
            .iter()
            .map(|(r, s)| format!("{r} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        passed: shares.iter().all(|(_, s)| *s >= min_share),
        status: None,
    });
    let how = match path {
        PathKind::Proxyless => "mTLS peer",
        PathKind::Envoy => "x-forwarded-client-cert",
    };
    outcome.checks.push(Check {
        path,
        name: checks::CALLER,
        expected: format!("the client's SPIFFE ID, via {how}"),
        observed: if report.callers.is_empty() {
            "no caller reported".to_owned()
        } else {
            report
                .callers
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        },
        passed: report.callers.len() == 1 && report.callers.contains(client),
        status: None,
    });
}

/// What every hop should negotiate under the mesh's TLS policy: its first group, with one
/// ClientHello (both ends run the same policy).
pub(super) fn expected_tls(policy: &MeshPolicy) -> String {
    match policy.tls.groups.first() {
        Some(group) => format!("{group}, one ClientHello ({})", policy.tls.summary()),
        None => "no group (invalid policy)".to_owned(),
    }
}

pub(super) fn proxyless_tls_check(policy: &MeshPolicy, report: &Report) -> Check {
    let group = policy.tls.groups.first().map(|g| g.envoy_name());
    // "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full", as the replicas saw it.
    let as_expected = |seen: &String| {
        let words: Vec<&str> = seen.split_whitespace().collect();
        words.get(2).copied() == group && seen.ends_with(" full")
    };
    Check {
        path: PathKind::Proxyless,
        name: checks::TLS,
        expected: expected_tls(policy),
        observed: if report.tls.is_empty() {
            "no replica reported its handshake".to_owned()
        } else {
            report.tls.iter().cloned().collect::<Vec<_>>().join("; ")
        },
        passed: !report.tls.is_empty() && report.tls.iter().all(as_expected),
        status: None,
    }
}

pub(super) fn envoy_tls_check(
    policy: &MeshPolicy,
    client: &[(String, u64)],
    servers: &[(String, u64)],
) -> Check {
    let group = policy.tls.groups.first().map(|g| g.envoy_name());
    let text = |curves: &[(String, u64)]| {
        curves
            .iter()
            .map(|(g, n)| format!("{g}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let only_expected = |curves: &[(String, u64)]| {
        !curves.is_empty() && curves.iter().all(|(g, _)| Some(g.as_str()) == group)
    };
    Check {
        path: PathKind::Envoy,
        name: checks::TLS,
        expected: expected_tls(policy),
        observed: format!(
            "ssl.curves: client sidecar upstream {}, server sidecars {}",
            text(client),
            text(servers)
        ),
        passed: only_expected(client) && only_expected(servers),
        status: None,
    }
}

pub(super) fn intruder_check(
    path: PathKind,
    result: std::result::Result<Option<String>, tonic::Status>,
    san: Option<(u64, u64)>,
) -> Check {
    let mut expected = "handshake refused".to_owned();
    if san.is_some() {
        expected.push_str(", ssl.fail_verify_san rises");
    }
    let san_ok = san.is_none_or(|(before, after)| after > before);
    // The server's figure for the reason proves the refusal, whatever the caller saw (as
    // on the --federation path): in TLS 1.3 the client's handshake ends before the server
    // checks its certificate, and Envoy's alert may be lost to the closed connection
    // ("connection closed before HTTP/2 SETTINGS"). Without the figure (the proxyless
    // path), the caller must have seen the alert.
    let san_rose = san.is_some_and(|(before, after)| after > before);
    let san_text = san
        .map(|(b, a)| format!(" (ssl.fail_verify_san {b} -> {a})"))
        .unwrap_or_default();
    handshake_refusal(
        path,
        checks::INTRUDER,
        expected,
        result,
        &san_text,
        san_ok,
        san_rose,
    )
}

/// The verdict on one call that a handshake must refuse: failed if it was answered; passed
/// if it failed `Unavailable` with `counted_ok` and either the endpoints' `refused (<TLS
/// alert>)` or the server's figure having `rose`. `counted_text` (the figure's before and
/// after, or empty) is added to what was observed.
pub(super) fn handshake_refusal(
    path: PathKind,
    name: &'static str,
    expected: String,
    result: std::result::Result<Option<String>, tonic::Status>,
    counted_text: &str,
    counted_ok: bool,
    rose: bool,
) -> Check {
    match result {
        Ok(replica) => Check {
            path,
            name,
            expected,
            observed: format!(
                "call answered by {}{counted_text}",
                replica.as_deref().unwrap_or("?")
            ),
            passed: false,
            status: None,
        },
        Err(status) => {
            // The channel names each endpoint's state: every replica (or sidecar) refused
            // the certificate in the handshake (`refused (<TLS alert>)`, told apart from a
            // dead endpoint's `transient failure`), so no call was ever sent.
            let message = status.message();
            let refused = message.matches("refused (").count();
            let reason = message
                .split_once("refused (")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map_or(message, |(reason, _)| reason);
            let observed = if status.code() == Code::Unavailable && refused > 0 {
                format!("{refused} endpoints refused it{counted_text}: {reason}")
            } else {
                format!("{:?}{counted_text}: {message}", status.code())
            };
            Check {
                path,
                name,
                expected,
                observed,
                passed: status.code() == Code::Unavailable && counted_ok && (refused > 0 || rose),
                status: Some((status.code(), message.to_owned())),
            }
        }
    }
}

/// The refusal check `which` ([`checks::NO_TOKEN`] or [`checks::WRONG_AUDIENCE`]): one
/// call through `channel`.
pub(super) async fn refusal_checks(
    outcome: &mut MeshOutcome,
    path: PathKind,
    channel: crate::scenario::BoxChannel,
    wrong_audience: &str,
    which: &'static str,
) {
    let cases = [
        (
            checks::NO_TOKEN,
            None,
            Code::Unauthenticated,
            "Jwt is missing",
        ),
        (
            checks::WRONG_AUDIENCE,
            Some(wrong_audience.to_owned()),
            Code::PermissionDenied,
            "Audiences in Jwt are not allowed",
        ),
    ];
    // A refused caller is told Envoy's failure name and what it presented, never the
    // audience the bookstore expects (the log has it): no "expected", no quoted audience.
    let leaks_policy =
        |text: &str| text.contains("expected") || text.contains(&format!("{:?}", crate::AUDIENCE));
    for (name, token, code, message) in cases.into_iter().filter(|c| c.0 == which) {
        let result = Scenario::new(channel.clone(), token).probe().await;
        let expected = format!("{code:?}: {message}, no policy told");
        let check = match result {
            Ok(replica) => Check {
                path,
                name,
                expected,
                observed: format!("call answered by {}", replica.as_deref().unwrap_or("?")),
                passed: false,
                status: None,
            },
            Err(status) => Check {
                path,
                name,
                expected,
                observed: format!("{:?}: {}", status.code(), status.message()),
                passed: status.code() == code
                    && status.message().starts_with(message)
                    && !leaks_policy(status.message()),
                status: Some((status.code(), status.message().to_owned())),
            },
        };
        outcome.checks.push(check);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the caller saw when Envoy's TLS 1.3 alert was lost to the closed connection.
    fn lost_alert() -> std::result::Result<Option<String>, tonic::Status> {
        Err(tonic::Status::unavailable(
            "no ready endpoint for bookstore.local (waited 2.0s): 10.0.0.1:443 transient failure (connection closed before HTTP/2 SETTINGS)",
        ))
    }

    #[test]
    fn a_lost_alert_is_a_refusal_when_the_san_figure_rose() {
        assert!(intruder_check(PathKind::Envoy, lost_alert(), Some((2, 5))).passed);
        // The figure did not rise: not proven refused for the right reason.
        assert!(!intruder_check(PathKind::Envoy, lost_alert(), Some((2, 2))).passed);
        // No figure (the proxyless path): the caller must have seen the alert.
        assert!(!intruder_check(PathKind::Proxyless, lost_alert(), None).passed);
    }

    #[test]
    fn a_seen_alert_still_needs_the_figure_to_rise() {
        let seen = || {
            Err(tonic::Status::unavailable(
                "no ready endpoint for bookstore.local: 10.0.0.1:443 refused (CertificateUnknown)",
            ))
        };
        assert!(intruder_check(PathKind::Proxyless, seen(), None).passed);
        assert!(intruder_check(PathKind::Envoy, seen(), Some((0, 3))).passed);
        assert!(!intruder_check(PathKind::Envoy, seen(), Some((3, 3))).passed);
        let answered = intruder_check(PathKind::Envoy, Ok(Some("r1".into())), Some((0, 3)));
        assert!(!answered.passed, "{answered:?}");
    }
}
