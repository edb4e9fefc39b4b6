//! SPIFFE Filesystem Delivery, the spiffe-helper way: one workload's X509-SVID and the trust
//! bundles written as files into a folder (`$SPIFFE_CREDENTIAL_FOLDER`) for programs that
//! cannot speak the Workload API (nginx, an Envoy with file mounts), rewritten on every
//! rotation, optionally signalling a process (`renew_signal`).
//!
//! - [`CREDENTIAL_FILE`] (`credential-bundle.private-key.pem`, mode 0600): the PKCS#8 key,
//!   then the certificate chain, leaf first, without the root;
//! - `<trust-domain>.spiffe-trust-bundle.pem` (mode 0644) per trust domain
//!   ([`trust_bundle_file`]): that domain's X.509 authorities.
//!
//! Every file is written to a temporary file in the same folder, flushed to disk and renamed
//! over the old one, so a reader sees the old file or the new one, never a part of either;
//! the key and its certificate are in one file, so they cannot be seen out of step.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mtls_identity::{SpiffeId, TrustDomain};

use crate::error::{Error, Result};
use crate::issuer::{Issuer, Snapshot};

/// The credential file: PKCS#8 key, then the chain (leaf first, no root).
pub const CREDENTIAL_FILE: &str = "credential-bundle.private-key.pem";

/// The environment variable naming the credential folder.
pub const SPIFFE_CREDENTIAL_FOLDER: &str = "SPIFFE_CREDENTIAL_FOLDER";

/// The trust bundle file of `trust_domain`: `<trust-domain>.spiffe-trust-bundle.pem`.
///
/// ```
/// assert_eq!(mtls_agent::trust_bundle_file(&"example.org".parse()?), "example.org.spiffe-trust-bundle.pem");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn trust_bundle_file(trust_domain: &TrustDomain) -> String {
    format!("{trust_domain}.spiffe-trust-bundle.pem")
}

/// Where and for whom the agent delivers files ([`AgentConfig::deliver`](crate::AgentConfig::deliver)).
///
/// ```
/// let delivery = mtls_agent::Delivery::new("/run/creds", "spiffe://example.org/nginx".parse()?)
///     .renew_signal(1234, "SIGHUP")?;
/// # let _ = delivery;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Delivery {
    pub(crate) dir: PathBuf,
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) renew_signal: Option<(i32, rustix::process::Signal, String)>,
}

impl Delivery {
    /// Deliver the SVID of `spiffe_id` (a registered ID) and the bundles into `dir`.
    pub fn new(dir: impl Into<PathBuf>, spiffe_id: SpiffeId) -> Self {
        Self {
            dir: dir.into(),
            spiffe_id,
            renew_signal: None,
        }
    }

    /// After each delivery, send `signal` (`SIGHUP`, `SIGUSR1`, `SIGUSR2`, `SIGTERM`,
    /// `SIGINT`; spiffe-helper's `renew_signal`) to process `pid`.
    ///
    /// ```
    /// let err = mtls_agent::Delivery::new("/tmp/x", "spiffe://example.org/a".parse()?)
    ///     .renew_signal(1, "SIGKILL").unwrap_err();
    /// assert!(err.to_string().contains("expected SIGHUP, SIGUSR1, SIGUSR2, SIGTERM or SIGINT, saw SIGKILL"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renew_signal(mut self, pid: i32, signal: &str) -> Result<Self> {
        use rustix::process::Signal;
        let name = signal.trim().to_ascii_uppercase();
        let sig = match name.trim_start_matches("SIG") {
            "HUP" => Signal::HUP,
            "USR1" => Signal::USR1,
            "USR2" => Signal::USR2,
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            _ => {
                return Err(Error::Config {
                    reason: format!(
                        "renew_signal: expected SIGHUP, SIGUSR1, SIGUSR2, SIGTERM or SIGINT, saw {signal}"
                    ),
                });
            }
        };
        if pid <= 0 {
            return Err(Error::Config {
                reason: format!("renew_signal: expected a process id above 0, saw {pid}"),
            });
        }
        self.renew_signal = Some((pid, sig, format!("SIG{}", name.trim_start_matches("SIG"))));
        Ok(self)
    }
}

/// Writes `contents` to `dir/name` atomically: a temporary file in `dir` (mode `mode`),
/// flushed, then renamed over `name`.
pub(crate) fn write_atomically(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |source| Error::Io {
        what: "delivered file",
        path: target.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .map_err(io)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Writes the files of one snapshot; `Ok(false)` if the ID has no SVID (not registered).
fn deliver(delivery: &Delivery, snapshot: &Snapshot) -> Result<bool> {
    let Some(svid) = snapshot.svid(&delivery.spiffe_id) else {
        return Ok(false);
    };
    // The bundles first: a reader reacting to the new credential finds the trust for it.
    write_atomically(
        &delivery.dir,
        &trust_bundle_file(&snapshot.trust_domain),
        snapshot.bundle_pem.as_bytes(),
        0o644,
    )?;
    for bundle in snapshot.federated.iter() {
        if !bundle.x509_authorities().is_empty() {
            write_atomically(
                &delivery.dir,
                &format!("{}.spiffe-trust-bundle.pem", bundle.trust_domain()),
                bundle.to_pem().as_bytes(),
                0o644,
            )?;
        }
    }
    let mut credential = svid.key_pem.clone();
    if !credential.ends_with('\n') {
        credential.push('\n');
    }
    credential.push_str(&svid.chain_pem);
    write_atomically(&delivery.dir, CREDENTIAL_FILE, credential.as_bytes(), 0o600)?;
    if let Some((pid, signal, name)) = &delivery.renew_signal {
        let sent = rustix::process::Pid::from_raw(*pid)
            .ok_or(rustix::io::Errno::INVAL)
            .and_then(|p| rustix::process::kill_process(p, *signal));
        match sent {
            Ok(()) => tracing::info!(pid, signal = %name, "renew signal sent"),
            Err(e) => {
                tracing::warn!(pid, signal = %name, error = %e, "cannot send the renew signal")
            }
        }
    }
    Ok(true)
}

/// Delivers the current snapshot and every later one, until the issuer is gone.
pub(crate) async fn delivery_task(issuer: Arc<Issuer>, delivery: Delivery) {
    let mut rx = issuer.subscribe();
    drop(issuer);
    loop {
        let snapshot = rx.borrow_and_update().clone();
        match deliver(&delivery, &snapshot) {
            Ok(true) => {
                tracing::info!(dir = %delivery.dir.display(), spiffe_id = %delivery.spiffe_id,
                generation = snapshot.generation, "credentials delivered")
            }
            Ok(false) => {
                tracing::warn!(dir = %delivery.dir.display(), spiffe_id = %delivery.spiffe_id,
                "no SVID for this SPIFFE ID (not registered): nothing delivered")
            }
            Err(e) => {
                tracing::error!(error = %e, "filesystem delivery failed; will retry on the next rotation")
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Prepares the folder (created 0755 if missing, the agent's own) and writes the first files,
/// so a failure is an error of [`Agent::start`](crate::Agent::start).
pub(crate) fn first_delivery(issuer: &Issuer, delivery: &Delivery) -> Result<()> {
    crate::files::secure_dir(&delivery.dir, 0o755, "credential folder")?;
    if !deliver(delivery, &issuer.current())? {
        return Err(Error::Config {
            reason: format!(
                "filesystem delivery to {}: expected a registered SPIFFE ID, saw {} (no entry grants it)",
                delivery.dir.display(),
                delivery.spiffe_id
            ),
        });
    }
    Ok(())
}
