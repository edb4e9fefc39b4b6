//! The README's command blocks marked "runs as written" run as written: each in a fresh
//! temporary directory (holding the cfssl inputs of `mtls-certs/tests/fixtures/cfssl` and a
//! `worker.csr` made by the `openssl` CLI), with our binaries (`mtls`, `bookstore-server`,
//! `bookstore-client`) first on PATH, under `bash -euo pipefail`. The block's processes run
//! in their own process group, which the test kills when the block ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

const MARKER: &str = "<!-- runs as written:";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fenced blocks right after a marker line.
fn marked_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if !line.starts_with(MARKER) {
            continue;
        }
        let (_, fence) = lines.next().expect("a block after the marker");
        assert!(
            fence.starts_with("```sh") || fence.starts_with("```bash"),
            "README.md:{}: the marker must precede a ```sh or ```bash block, found {fence:?}",
            n + 2
        );
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        blocks.push((n + 3, body.join("\n")));
    }
    blocks
}

/// The directory of our binaries, with `mtls` (another package's binary) built if a
/// `cargo test -p bookstore` did not build it.
fn bin_dir() -> PathBuf {
    let dir = support::bin("bookstore-server")
        .parent()
        .unwrap()
        .to_owned();
    if !dir.join("mtls").is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "mtls-cli", "--bin", "mtls"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "building mtls");
    }
    dir
}

fn prepare(dir: &Path) {
    let fixtures = root().join("mtls-certs/tests/fixtures/cfssl");
    for entry in std::fs::read_dir(fixtures).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    support::success_stdout(&support::run_command(
        "openssl req",
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256"])
            .args(["-nodes", "-subj", "/CN=worker", "-keyout", "worker-key.pem"])
            .args([
                "-addext",
                "subjectAltName=URI:spiffe://mesh.internal/ns/shop/sa/worker",
            ])
            .args(["-out", "worker.csr"])
            .current_dir(dir),
    ));
}

#[test]
fn readme_blocks_marked_runnable_run_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = marked_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "expected the marked blocks, found {}",
        blocks.len()
    );
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (line, block) in blocks {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let out = support::run_group_within(
            "README block",
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block])
                .current_dir(dir.path())
                .env("PATH", &path)
                .env_remove("SPIFFE_ENDPOINT_SOCKET"),
            Duration::from_secs(120),
        );
        let (status, stdout, stderr) = (
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            status.success(),
            "README.md:{line}: the block failed ({status}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        println!("README.md:{line}: ok\n{stdout}");
    }
}
