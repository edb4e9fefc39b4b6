//! Agent mode: which SVIDs each path uses, and a rotation forced between the two halves of
//! a path's scenario — the new serial must be in use (proxyless: what each replica serves
//! in a new handshake and what the client's source holds; Envoy: every sidecar's `/certs`)
//! while every call keeps succeeding.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use mtls_core::PeerIdentity;

use crate::{
    MeshPolicy, Report, Result, Scenario,
    identity::{Workload, WorkloadIdentities, client_tls},
    mesh::{Check, MeshOptions, MeshOutcome, PathKind, Sidecars, checks},
    scenario::CALLS_PER_ROUND,
};

/// A certificate a path showed, and whether it is the one the agent issues now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeenSerial {
    /// Who showed it: `"127.0.0.2 (served)"`, `"client source"`, `"server-sidecar-127.0.0.2"`.
    pub who: String,
    /// Whose SVID it should be.
    pub workload: Workload,
    /// The serial (colon-separated hex), or what went wrong reading it.
    pub serial: std::result::Result<String, String>,
    /// Whether it is the serial the agent currently issues to `workload`.
    pub current: bool,
}

/// A rotation forced in the middle of one path's scenario, and what the path showed after.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rotation {
    /// The path whose scenario it interrupted.
    pub path: PathKind,
    /// The agent's generation after it.
    pub generation: u64,
    /// The bookstore's serial before and after.
    pub bookstore: (String, String),
    /// The client's serial before and after.
    pub client: (String, String),
    /// What the path showed once the new SVIDs had arrived.
    pub seen: Vec<SeenSerial>,
    /// Scenario calls before the rotation (all on the same connections).
    pub calls_before: usize,
    /// Scenario calls after it.
    pub calls_after: usize,
    /// Failed calls after it.
    pub failed_after: usize,
}

impl Rotation {
    /// Whether the path uses the new SVIDs everywhere it was looked at.
    pub fn new_serials_in_use(&self) -> bool {
        !self.seen.is_empty()
            && self.seen.iter().all(|s| s.current)
            && self.bookstore.0 != self.bookstore.1
            && self.client.0 != self.client.1
    }
}

/// Whether two serials are the same number (`0a:1b` = `a1b` = `0A1B`).
pub fn same_serial(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let hex: String = s
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        hex.trim_start_matches('0').to_owned()
    }
    !a.is_empty() && norm(a) == norm(b)
}

/// Envoy's `3c4d5e` as `3c:4d:5e` (padded to whole bytes).
pub(crate) fn colon_hex(hex: &str) -> String {
    let hex = hex.to_ascii_lowercase();
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    padded
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// `3c:4d:5e:6f…`: enough of a serial to tell two apart in a table.
fn short(serial: &str) -> String {
    if serial.len() > 11 {
        format!("{}…", &serial[..11])
    } else {
        serial.to_owned()
    }
}

fn seen(
    ids: &dyn WorkloadIdentities,
    who: String,
    workload: Workload,
    serial: std::result::Result<String, String>,
) -> SeenSerial {
    let current = match (&serial, ids.issued_serial(workload)) {
        (Ok(s), Some(issued)) => same_serial(s, &issued),
        _ => false,
    };
    SeenSerial {
        who,
        workload,
        serial,
        current,
    }
}

/// Proxyless: the SVID each in-process source holds, and the certificate each replica
/// serves in a new handshake (made with the client's current SVID).
pub(crate) async fn proxyless_serials(
    ids: &dyn WorkloadIdentities,
    policy: &MeshPolicy,
    replicas: &[SocketAddr],
) -> Vec<SeenSerial> {
    let mut out = Vec::new();
    for workload in [Workload::Bookstore, Workload::Client, Workload::Intruder] {
        let serial = ids
            .identity(workload)
            .map(|source| source.current().serial().to_string())
            .map_err(|e| e.to_string());
        out.push(seen(ids, format!("{workload} source"), workload, serial));
    }
    let config = client_tls(ids, policy, Workload::Client).map(Arc::new);
    for addr in replicas {
        let serial = match &config {
            Ok(config) => served_serial(config.clone(), *addr, &policy.service_name).await,
            Err(e) => Err(e.to_string()),
        };
        out.push(seen(
            ids,
            format!("{} served", addr.ip()),
            Workload::Bookstore,
            serial,
        ));
    }
    out
}

/// The serial of the certificate `addr` presents in a TLS handshake.
pub(crate) async fn served_serial(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> std::result::Result<String, String> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("server name {server_name}: {e}"))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let peer = PeerIdentity::from_chain(chain).map_err(|e| e.to_string())?;
        peer.serial()
            .map(ToString::to_string)
            .ok_or_else(|| format!("{addr} presented no certificate"))
    };
    tokio::time::timeout(Duration::from_secs(3), handshake)
        .await
        .unwrap_or_else(|_| Err(format!("handshake with {addr} timed out")))
}

/// Envoy: the certificate each sidecar presents, from its admin `/certs`.
pub(crate) async fn envoy_serials(
    ids: &dyn WorkloadIdentities,
    sidecars: &Sidecars,
) -> Vec<SeenSerial> {
    let mut out = Vec::new();
    let all = sidecars
        .servers()
        .iter()
        .map(|s| (s, Workload::Bookstore))
        .chain([(sidecars.client(), Workload::Client)]);
    for (envoy, workload) in all {
        let serial = match envoy.cert_serials().await {
            Ok(serials) => serials
                .first()
                .map(|hex| colon_hex(hex))
                .ok_or_else(|| "no certificate in /certs yet".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        out.push(seen(ids, envoy.name().to_owned(), workload, serial));
    }
    out
}

/// The check that every SVID a path showed is the agent's current one.
pub(crate) fn identity_check(path: PathKind, seen: &[SeenSerial]) -> Check {
    let current = seen.iter().filter(|s| s.current).count();
    let wrong: Vec<String> = seen
        .iter()
        .filter(|s| !s.current)
        .map(|s| match &s.serial {
            Ok(serial) => format!("{} {serial}", s.who),
            Err(e) => format!("{}: {e}", s.who),
        })
        .collect();
    let what = match path {
        PathKind::Proxyless => "sources + replicas",
        PathKind::Envoy => "sidecars' /certs",
    };
    let bookstore = seen
        .iter()
        .find(|s| s.workload == Workload::Bookstore)
        .and_then(|s| s.serial.as_ref().ok())
        .map(|s| short(s))
        .unwrap_or_default();
    Check {
        path,
        name: checks::AGENT_IDENTITIES,
        expected: "every SVID = the agent's current one".to_owned(),
        observed: if wrong.is_empty() {
            format!("{current}/{} {what}; bookstore {bookstore}", seen.len())
        } else {
            format!("not the agent's: {}", wrong.join("; "))
        },
        passed: !seen.is_empty() && wrong.is_empty(),
        status: None,
    }
}

/// Runs `scenario` in two halves with a forced rotation between them when `ids` rotates
/// (else in one go): checks the SVIDs in use before, waits (≤ 10 s) until `observe` shows
/// the new ones everywhere, and records the [`Rotation`] and its check in `outcome`.
pub(crate) async fn run_across_rotation<F, Fut>(
    outcome: &mut MeshOutcome,
    options: &MeshOptions,
    ids: &dyn WorkloadIdentities,
    path: PathKind,
    scenario: &mut Scenario,
    observe: F,
) -> Result<Report>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<SeenSerial>>,
{
    if !ids.rotates() {
        return Ok(scenario.run(options.calls).await);
    }
    outcome.checks.push(identity_check(path, &observe().await));

    let rounds = options.calls.div_ceil(CALLS_PER_ROUND).max(2);
    let first_half = rounds / 2 * CALLS_PER_ROUND;
    let second_half = (rounds - rounds / 2) * CALLS_PER_ROUND;
    let mut report = scenario.run(first_half).await;

    let issued = |w| ids.issued_serial(w).unwrap_or_default();
    let before = (issued(Workload::Bookstore), issued(Workload::Client));
    let generation = ids.rotate_now()?.unwrap_or_default();
    let after = (issued(Workload::Bookstore), issued(Workload::Client));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = observe().await;
        if seen.iter().all(|s| s.current) || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if options.verbose {
        println!(
            "    -- after {} calls, agent.rotate_now(): generation {generation}, bookstore {} -> {}, client {} -> {}; new SVIDs in use: {}/{}",
            report.total(),
            short(&before.0),
            short(&after.0),
            short(&before.1),
            short(&after.1),
            seen.iter().filter(|s| s.current).count(),
            seen.len()
        );
    }

    let later = scenario.run(second_half).await;
    let rotation = Rotation {
        path,
        generation,
        bookstore: (before.0, after.0),
        client: (before.1, after.1),
        seen,
        calls_before: report.total(),
        calls_after: later.total(),
        failed_after: later.total() - later.succeeded(),
    };
    report.extend(later);
    outcome.checks.push(rotation_check(&rotation));
    outcome.rotations.push(rotation);
    Ok(report)
}

fn rotation_check(r: &Rotation) -> Check {
    let in_use = r.seen.iter().filter(|s| s.current).count();
    let what = match r.path {
        PathKind::Proxyless => "in use",
        PathKind::Envoy => "in /certs",
    };
    let passed = r.new_serials_in_use() && r.failed_after == 0 && r.calls_after > 0;
    Check {
        path: r.path,
        name: checks::ROTATION,
        expected: "new serial in use, no failed call".to_owned(),
        observed: format!(
            "gen {}: {} {what} {in_use}/{}; {} after, {} failed",
            r.generation,
            short(&r.bookstore.1),
            r.seen.len(),
            r.calls_after,
            r.failed_after
        ),
        passed,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_as_numbers_whatever_the_spelling() {
        assert!(same_serial("0a:1b:2c", "a1b2c"));
        assert!(same_serial("0A:1B", "0a1b"));
        assert!(!same_serial("0a:1b", "0a:1c"));
        assert!(!same_serial("", ""), "an unknown serial never matches");
        assert!(!same_serial("", "00"));
    }

    fn seen_one(who: &str, serial: std::result::Result<&str, &str>, current: bool) -> SeenSerial {
        SeenSerial {
            who: who.to_owned(),
            workload: Workload::Bookstore,
            serial: serial.map(str::to_owned).map_err(str::to_owned),
            current,
        }
    }

    fn rotation(seen: Vec<SeenSerial>, failed_after: usize) -> Rotation {
        Rotation {
            path: PathKind::Envoy,
            generation: 3,
            bookstore: ("0a:0b".to_owned(), "0c:0d".to_owned()),
            client: ("1a:1b".to_owned(), "1c:1d".to_owned()),
            seen,
            calls_before: 18,
            calls_after: 18,
            failed_after,
        }
    }

    #[test]
    fn rotation_check_needs_the_new_serial_everywhere_and_no_failed_call() {
        let good = rotation(vec![seen_one("server-sidecar", Ok("0c:0d"), true)], 0);
        let check = rotation_check(&good);
        assert!(check.passed, "{check:?}");
        assert_eq!(
            check.observed,
            "gen 3: 0c:0d in /certs 1/1; 18 after, 0 failed"
        );

        let stale = rotation(vec![seen_one("server-sidecar", Ok("0a:0b"), false)], 0);
        let check = rotation_check(&stale);
        assert!(!check.passed && check.observed.contains("0/1"), "{check:?}");

        let failed = rotation(vec![seen_one("server-sidecar", Ok("0c:0d"), true)], 2);
        let check = rotation_check(&failed);
        assert!(
            !check.passed && check.observed.contains("2 failed"),
            "{check:?}"
        );

        let nothing_seen = rotation(Vec::new(), 0);
        assert!(!rotation_check(&nothing_seen).passed);

        let mut not_rotated = good.clone();
        not_rotated.bookstore.1 = not_rotated.bookstore.0.clone();
        assert!(!not_rotated.new_serials_in_use());
    }

    #[test]
    fn identity_check_names_what_is_not_the_agents() {
        let check = identity_check(
            PathKind::Proxyless,
            &[
                seen_one("bookstore source", Ok("0a:0b"), true),
                seen_one("127.0.0.2 served", Ok("99:99"), false),
                seen_one("127.0.0.3 served", Err("handshake timed out"), false),
            ],
        );
        assert!(!check.passed);
        assert_eq!(
            check.observed,
            "not the agent's: 127.0.0.2 served 99:99; 127.0.0.3 served: handshake timed out"
        );
        assert!(!identity_check(PathKind::Envoy, &[]).passed);
        let check = identity_check(
            PathKind::Envoy,
            &[seen_one("server-sidecar", Ok("0a:0b"), true)],
        );
        assert!(check.passed);
        assert_eq!(check.observed, "1/1 sidecars' /certs; bookstore 0a:0b");
    }

    #[test]
    fn envoy_hex_becomes_colon_hex() {
        assert_eq!(colon_hex("3C4d5e"), "3c:4d:5e");
        assert_eq!(colon_hex("a1b"), "0a:1b");
        assert_eq!(colon_hex(""), "");
        assert_eq!(short("3c:4d:5e:6f:70"), "3c:4d:5e:6f…");
        assert_eq!(short("3c:4d"), "3c:4d");
    }
}
