//! Output for people: a closed pipe ends the command quietly (no panic, no exit 101), a
//! truncated PEM is described in words and names its file, times are RFC 3339, and the
//! renewal fraction's default reads as 2/3 — issue 16's rough edges, each driven through
//! the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};

use support::{mtls, words};

fn issue_leaf(dir: &std::path::Path) {
    assert!(mtls(dir, &words("ca init --out ca")).status.success());
    let out = mtls(
        dir,
        &words("cert issue --ca ca --out leaf --name web --profile server --san web.local"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    issue_leaf(dir.path());
    // The reader is gone before the command writes a byte, as when `| head -1` has
    // already exited: every write meets a closed pipe (EPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_mtls"))
        .current_dir(dir.path())
        .args(["cert", "inspect", "leaf/web.pem"])
        .env("RUST_BACKTRACE", "0")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_truncated_pem_is_described_in_words_and_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    issue_leaf(dir.path());
    let pem = std::fs::read_to_string(dir.path().join("leaf/web.pem")).unwrap();
    std::fs::write(dir.path().join("cut.pem"), &pem[..pem.len() / 2]).unwrap();
    for args in [
        &["cert", "inspect", "cut.pem"][..],
        &["cert", "renew-check", "cut.pem"][..],
        &["cert", "verify", "--ca", "ca/ca.pem", "cut.pem"][..],
    ] {
        let out = mtls(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("cut.pem"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no end line (\"-----END CERTIFICATE-----\"): truncated input"),
            "{args:?}: {stderr}"
        );
        // No Rust Debug artefacts: byte arrays, Option wrappers.
        assert!(!stderr.contains("[45, "), "{args:?}: {stderr}");
        assert!(!stderr.contains("Some("), "{args:?}: {stderr}");
    }
}

#[test]
fn times_are_rfc3339_and_the_fraction_reads_as_a_ratio() {
    let dir = tempfile::tempdir().unwrap();
    issue_leaf(dir.path());
    let out = mtls(dir.path(), &["cert", "inspect", "leaf/web.pem"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("not after:")).unwrap();
    let value = line.trim_start_matches("not after:").trim();
    assert!(
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).is_ok(),
        "{line}"
    );

    let help = mtls(dir.path(), &["cert", "renew-check", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 2/3]"), "{help}");
    assert!(!help.contains("0.6666"), "{help}");
    let out = mtls(dir.path(), &["cert", "renew-check", "leaf/web.pem"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not due; renew at 20"), "{text}");
    assert!(!text.contains("+00:00:00"), "{text}");
    let out = mtls(
        dir.path(),
        &words("cert renew-check --fraction 1/2 leaf/web.pem"),
    );
    assert!(out.status.success());
    let out = mtls(
        dir.path(),
        &words("cert renew-check --fraction 3/2 leaf/web.pem"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("expected a number in (0, 1] or a ratio like 2/3, found \"3/2\""),
        "{stderr}"
    );
}

#[test]
fn an_expired_svid_is_named_by_its_id_with_rfc3339_times() {
    let dir = tempfile::tempdir().unwrap();
    issue_leaf(dir.path());
    let out = mtls(
        dir.path(),
        &words(
            "cert issue --ca ca --out leaf --name svid --profile svid --spiffe-id spiffe://example.org/w --ttl 1s",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = mtls(
        dir.path(),
        &words("cert verify --ca ca/ca.pem leaf/svid.pem"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("chain verification failed for spiffe://example.org/w")
            && stderr.contains("a certificate that expired at 20")
            && stderr.contains("Z (checked at 20"),
        "{stderr}"
    );
    for artefact in ["UnixTime", "CertExpired", "for \"\"", "{ "] {
        assert!(!stderr.contains(artefact), "{artefact}: {stderr}");
    }
}

#[test]
fn bad_input_is_named_before_the_overwrite_check() {
    let dir = tempfile::tempdir().unwrap();
    issue_leaf(dir.path());
    // leaf/web-key.pem exists: a bad SAN or SPIFFE ID is still reported as what it is.
    let out = mtls(
        dir.path(),
        &words(
            "cert issue --ca ca --out leaf --name web --profile svid --spiffe-id spiffe://Upper.Case/x",
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--spiffe-id") && stderr.contains("'U'"),
        "{stderr}"
    );
    assert!(!stderr.contains("refusing to overwrite"), "{stderr}");
    // Good input for an existing key file: the overwrite check speaks.
    let out = mtls(
        dir.path(),
        &words("cert issue --ca ca --out leaf --name web --profile server --san web.local"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
}

#[test]
fn an_svid_without_its_spiffe_id_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        mtls(dir.path(), &words("ca init --out ca"))
            .status
            .success()
    );
    let out = mtls(
        dir.path(),
        &words("cert issue --ca ca --out o --name s --profile svid"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--spiffe-id"), "{stderr}");
    assert!(!dir.path().join("o/s-key.pem").exists());
}
