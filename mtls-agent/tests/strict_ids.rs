//! Issue 13 item 3: registration entries and `--trust-domain` are parsed with mtls-core's
//! strict SPIFFE parser (go-spiffe's rules) — refused with the reason, never lower-cased.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mtls_agent::Registration;

fn entry(id: &str) -> String {
    format!("entries:\n  - spiffe_id: \"{id}\"\n    selectors: {{ uid: 1000 }}\n")
}

#[test]
fn registration_entries_refuse_what_go_spiffe_refuses() {
    let ok = Registration::from_yaml(&entry("spiffe://example.org/ns/a/sa/web")).unwrap();
    assert_eq!(
        ok.spiffe_ids()[0].to_string(),
        "spiffe://example.org/ns/a/sa/web"
    );
    for (bad, why) in [
        ("spiffe://Example.org/ns/a", "lower case"),
        ("SPIFFE://example.org/ns/a", "scheme"),
        ("spiffe://example.org/ns/a/", "trailing slash"),
        ("spiffe://example.org/ns/%61", "percent"),
    ] {
        let err = Registration::from_yaml(&entry(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn the_binary_refuses_an_upper_case_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg.yaml");
    std::fs::write(&reg, entry("spiffe://example.org/web")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mtls-agent"))
        .arg("--trust-domain")
        .arg("Example.org")
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .arg("--registration")
        .arg(&reg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the agent started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut guard.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("--trust-domain") && err.contains("lower case"),
        "{err}"
    );
}

/// Stops the agent (by PID) if the test fails while it runs.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
