//! Files and sockets a local attacker cannot hijack, against the agent binary (run as root,
//! attackers as other uids): a state or socket directory pre-created by another user makes
//! the agent refuse to start naming the path; a second agent refuses a live socket (and the
//! first keeps serving); a failed start leaves no socket behind; a root-owned file behind a
//! symlink planted at the socket path keeps its mode however often the agent is restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use spiffe::WorkloadApiClient;
use support::*;

/// Runs the agent, which must exit with an error within 20 s (killed otherwise); its stderr.
fn refused(cmd: &mut std::process::Command) -> String {
    let mut agent = ChildGuard::spawn("mtls-agent", cmd);
    let status = agent.wait_for(Duration::from_secs(20));
    let (_, err) = agent.kill_and_output();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the agent started ({status:?}):\n{err}"
    );
    err
}

/// With root, a shared temp dir (see `shared_tmp`) registering our uid as the web
/// workload; without, `None` (the test is skipped, saying so).
fn root_shared_tmp(test: &str) -> Option<tempfile::TempDir> {
    root_or_skip(test).then(|| shared_tmp(&web_for_me()))
}

/// A first agent in `dir` (its `reg.yaml` registering our uid as the web workload), logging
/// to `dir/first.log`, once it serves `socket` (and `sds`, if given).
async fn first_agent(dir: &Path, socket: &Path, sds: Option<&Path>, state: &Path) -> ChildGuard {
    std::fs::write(dir.join("reg.yaml"), web_for_me()).unwrap();
    let log = dir.join("first.log");
    let mut first = ChildGuard::spawn_logging(
        "first mtls-agent",
        &mut agent_binary(dir, socket, sds, state),
        &log,
    );
    wait_until_serving(socket, &mut first, &log).await;
    if let Some(sds) = sds {
        wait_until_serving(sds, &mut first, &log).await;
    }
    first
}

/// The agent at `socket` still serves: a new client gets the web X509-SVID.
async fn assert_serves_web(socket: &Path) {
    let client = WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    let svid = tokio::time::timeout(Duration::from_secs(5), client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WEB);
}

fn mkdir_as(uid: u32, path: &Path) {
    let status = as_uid(uid, "mkdir")
        .arg("-m")
        .arg("0755")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_state_directory_of_another_user_is_refused_naming_the_path() {
    let Some(dir) = root_shared_tmp("foreign state directory") else {
        return;
    };
    let state = dir.path().join("state");
    // The attacker gets there first, with their own CA (any file will do: it must not be read).
    mkdir_as(ATTACKER_UID, &state);
    let planted = "-----BEGIN CERTIFICATE-----\nattacker\n-----END CERTIFICATE-----\n";
    let status = as_uid(ATTACKER_UID, "sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{planted}' > {}/ca.pem",
            state.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let run = dir.path().join("run");
    let err = refused(&mut agent_binary(
        dir.path(),
        &run.join("workload.sock"),
        None,
        &state,
    ));
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("owned by uid {ATTACKER_UID}")),
        "{err}"
    );
    assert!(err.contains("remove it"), "{err}");
    assert!(!run.join("workload.sock").exists());

    // Our own directory, but writable by others: refused too, naming the fix.
    let open = dir.path().join("open-state");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(&mut agent_binary(
        dir.path(),
        &run.join("workload.sock"),
        None,
        &open,
    ));
    assert!(
        err.contains(&open.display().to_string()) && err.contains("chmod go-w"),
        "{err}"
    );
}

#[test]
fn a_socket_directory_of_another_user_is_refused_and_a_failed_start_leaves_no_socket() {
    let Some(dir) = root_shared_tmp("foreign socket directory") else {
        return;
    };
    let state = dir.path().join("state");
    let attacker_run = dir.path().join("attacker-run");
    mkdir_as(ATTACKER_UID, &attacker_run);
    let err = refused(&mut agent_binary(
        dir.path(),
        &attacker_run.join("workload.sock"),
        None,
        &state,
    ));
    assert!(err.contains(&attacker_run.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("owned by uid {ATTACKER_UID}")),
        "{err}"
    );

    // Workload API socket fine, SDS socket in the attacker's directory: the start fails and
    // the Workload API socket it had bound is gone.
    let run = dir.path().join("run");
    let socket = run.join("workload.sock");
    let err = refused(&mut agent_binary(
        dir.path(),
        &socket,
        Some(&attacker_run.join("sds.sock")),
        &state,
    ));
    assert!(err.contains("attacker-run"), "{err}");
    assert!(
        !socket.exists(),
        "a failed start left {} behind",
        socket.display()
    );
    // The directories the agent made itself: state 0700, sockets 0755, whatever the umask.
    for (path, mode) in [(&state, 0o700), (&run, 0o755)] {
        let have = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(have, mode, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_refuses_a_live_socket_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/workload.sock");
    let state = dir.path().join("state");
    let mut first = first_agent(dir.path(), &socket, None, &state).await;

    let err = refused(&mut agent_binary(dir.path(), &socket, None, &state));
    assert!(
        err.contains("workload.sock") && err.contains("served by another process"),
        "{err}"
    );
    assert!(socket.exists(), "the second agent removed the live socket");
    assert_serves_web(&socket).await;
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first agent died"
    );
}

/// The SDS socket too: a second agent (its own Workload API socket) given the SDS socket a
/// live agent serves exits with an error naming it, removes neither that socket nor leaves
/// its own behind; the first keeps serving both, and on SIGTERM removes its own sockets
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_refuses_a_live_sds_socket_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/workload.sock");
    let sds = dir.path().join("run/sds.sock");
    let log = dir.path().join("first.log");
    let state = dir.path().join("state");
    let mut first = first_agent(dir.path(), &socket, Some(&sds), &state).await;

    let other = dir.path().join("run/other.sock");
    let err = refused(&mut agent_binary(
        dir.path(),
        &other,
        Some(&sds),
        &dir.path().join("state2"),
    ));
    assert!(
        err.contains("sds.sock") && err.contains("served by another process"),
        "{err}"
    );
    assert!(sds.exists(), "the second agent removed the live SDS socket");
    assert!(!other.exists(), "the failed second agent left its socket");
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first agent died"
    );
    // Both of the first agent's sockets still answer.
    tokio::net::UnixStream::connect(&sds).await.unwrap();
    assert_serves_web(&socket).await;

    // SIGTERM: the first agent removes what it created and says so.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = first.wait_for(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        !socket.exists() && !sds.exists(),
        "sockets left after SIGTERM"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("stopping on SIGTERM") && said.contains("sds.sock"),
        "{said}"
    );
}

/// The root primitive: the socket directory is the attacker's and the socket path
/// is raced with a symlink to a root-owned 0600 file. The agent refuses the directory every
/// time (so never chmods anything), and the target keeps its mode over 200 restarts.
#[test]
fn a_symlink_raced_onto_the_socket_path_never_changes_its_target() {
    let Some(dir) = root_shared_tmp("symlink chmod race") else {
        return;
    };
    let target = dir.path().join("root-only");
    std::fs::write(&target, "secret").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = dir.path().join("attacker-run");
    mkdir_as(ATTACKER_UID, &run);
    let socket = run.join("workload.sock");
    // The attacker, as their own uid: swap the path between nothing and a symlink to target.
    let script = format!(
        "while :; do rm -f {s}; ln -s {t} {s}.new 2>/dev/null; mv -f {s}.new {s}; done",
        s = socket.display(),
        t = target.display()
    );
    let mut racer = ChildGuard::spawn("racer", as_uid(ATTACKER_UID, "sh").arg("-c").arg(&script));
    let state = dir.path().join("state");
    for attempt in 0..200 {
        let out = agent_binary(dir.path(), &socket, None, &state)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "attempt {attempt}: the agent started"
        );
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "attempt {attempt}: the target's mode changed");
    }
    assert!(
        racer.child.try_wait().unwrap().is_none(),
        "the racer stopped early"
    );
}
