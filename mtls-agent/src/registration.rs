//! Which SPIFFE IDs a caller is entitled to: registration entries with selectors on the Unix
//! peer credentials and Envoy's SDS node id.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mtls_identity::{SpiffeId, TrustDomain};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The registration file: a list of entries, in YAML or JSON.
///
/// ```yaml
/// entries:
///   - spiffe_id: spiffe://bookstore.local/web
///     selectors: { uid: 1000 }                 # any process of uid 1000
///   - spiffe_id: spiffe://bookstore.local/bookstore
///     selectors: { uid: 1001, exe: /usr/local/bin/bookstore-server }
///   - spiffe_id: spiffe://bookstore.local/envoy/web   # the Envoy of uid 1002 whose node.id
///     selectors: { uid: 1002, sds_node_id: web-sidecar }   # is web-sidecar
///   - spiffe_id: spiffe://bookstore.local/tool
///     selectors: { sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 }
/// ```
///
/// An entry matches a caller when **all** its selectors match (at least one is required).
/// A caller gets every matching entry's SPIFFE ID, in file order; the first is its default
/// SVID. Entries with `sds_node_id` only match SDS callers (Envoy), since the Workload API
/// has no node id.
///
/// `uid`, `gid`, `exe` and `sha256` are attested by the kernel; `sds_node_id` is only what
/// the caller *claims*, so an entry with no other selector would hand its key to any local
/// process: it is refused at load unless the entry says `insecure: true` (then the agent
/// logs a warning at every load).
///
/// `exe` is resolved (symlinks followed) when the registration is loaded and compared by
/// device and inode, not by name: a caller matches when `/proc/<pid>/exe` *is* that file —
/// a bind mount over the path in another mount namespace, or a copy elsewhere, does not.
/// An `exe` that does not exist at load is kept (it may be installed later) with a warning.
/// `sha256` (hex) matches an executable by content, wherever it lies.
///
/// ```
/// let reg = mtls_agent::Registration::from_yaml(r#"
/// entries:
///   - spiffe_id: spiffe://example.org/web
///     selectors: { uid: 1000 }
/// "#)?;
/// let caller = mtls_agent::Caller { uid: Some(1000), ..Default::default() };
/// assert_eq!(reg.identities_for(&caller).len(), 1);
/// # Ok::<(), mtls_agent::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    entries: Vec<Entry>,
}

/// One registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The identity granted.
    pub spiffe_id: SpiffeId,
    /// Who gets it.
    pub selectors: Selectors,
    /// Accept selectors that attest nothing (only `sds_node_id`, which any local process
    /// can claim). Off by default; see [`Registration`].
    pub insecure: bool,
}

/// Selectors of an [`Entry`]; every one that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Selectors {
    /// Unix user id of the calling process (SO_PEERCRED).
    pub uid: Option<u32>,
    /// Unix group id of the calling process.
    pub gid: Option<u32>,
    /// The calling process's executable: this file (device and inode of the path, symlinks
    /// resolved at load), as `/proc/<pid>/exe` shows it.
    pub exe: Option<PathBuf>,
    /// SHA-256 of the calling process's executable, lowercase hex.
    pub sha256: Option<String>,
    /// Envoy's `node.id` on an SDS stream (claimed by the caller, not attested).
    pub sds_node_id: Option<String>,
}

/// What the agent knows about a caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Unix user id (peer credentials).
    pub uid: Option<u32>,
    /// Unix group id.
    pub gid: Option<u32>,
    /// Process id.
    pub pid: Option<i32>,
    /// Executable path, from `/proc/<pid>/exe` (for logs; `exe` selectors compare
    /// [`exe_file`](Self::exe_file)).
    pub exe: Option<PathBuf>,
    /// Device and inode of the executable (`stat` of `/proc/<pid>/exe`).
    pub exe_file: Option<(u64, u64)>,
    /// SHA-256 of the executable, lowercase hex (computed only when an entry selects on it).
    pub exe_sha256: Option<String>,
    /// Envoy node id (SDS only).
    pub sds_node_id: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
        write!(
            f,
            "uid={} gid={} pid={} exe={}",
            opt(self.uid.map(|v| v.to_string())),
            opt(self.gid.map(|v| v.to_string())),
            opt(self.pid.map(|v| v.to_string())),
            // Paths and node ids are the caller's to choose: escaped and bounded, so that a
            // newline in an exe path cannot forge a log line.
            opt(self
                .exe
                .as_ref()
                .map(|p| crate::logging::Shown(&p.to_string_lossy()).to_string())),
        )?;
        if let Some(node) = &self.sds_node_id {
            write!(f, " sds_node_id={}", crate::logging::Shown(node))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    entries: Vec<EntryShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryShape {
    spiffe_id: String,
    #[serde(default)]
    selectors: Selectors,
    #[serde(default)]
    insecure: bool,
}

impl Registration {
    /// Entries given in code.
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }

    /// Parses YAML (or JSON, which is YAML).
    ///
    /// ```
    /// let err = mtls_agent::Registration::from_yaml("entries:\n  - spiffe_id: spiffe://example.org/web\n").unwrap_err();
    /// assert!(err.to_string().contains("no selectors"), "{err}");
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<inline>"))
    }

    /// Reads and parses a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "reading the registration file",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Registration {
            path: path.to_owned(),
            reason,
        };
        let shape: FileShape = serde_yaml_ng::from_str(text).map_err(|e| {
            bad(format!(
                "{e}; expected `entries: [{{spiffe_id, selectors: {{uid, gid, exe, sha256, sds_node_id}}, insecure}}]`"
            ))
        })?;
        let mut entries = Vec::with_capacity(shape.entries.len());
        for (i, e) in shape.entries.into_iter().enumerate() {
            // the family's strict parser (go-spiffe's rules): nothing lower-cased or ignored.
            let spiffe_id: SpiffeId = SpiffeId::new(&e.spiffe_id).map_err(|err| {
                bad(format!(
                    "entry {i}: spiffe_id {:?} is not a SPIFFE ID: {err}",
                    e.spiffe_id
                ))
            })?;
            entries.push(Entry {
                spiffe_id,
                selectors: e.selectors,
                insecure: e.insecure,
            });
        }
        let mut registration = Self { entries };
        registration.prepare().map_err(bad)?;
        Ok(registration)
    }

    /// Checks every entry (selectors given, attested, well-formed), resolves `exe` paths
    /// and warns about entries that cannot match. Done at every load, including for
    /// entries given in code (by [`Agent::start`](crate::Agent::start)).
    pub(crate) fn prepare(&mut self) -> std::result::Result<(), String> {
        for (i, e) in self.entries.iter_mut().enumerate() {
            let id = &e.spiffe_id;
            let s = &mut e.selectors;
            if s.uid.is_none()
                && s.gid.is_none()
                && s.exe.is_none()
                && s.sha256.is_none()
                && s.sds_node_id.is_none()
            {
                return Err(format!(
                    "entry {i} ({id}) has no selectors; expected at least one of uid, gid, exe, sha256, sds_node_id"
                ));
            }
            if let Some(hash) = &mut s.sha256 {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "entry {i} ({id}): sha256 {hash:?} is not a SHA-256; expected 64 hex digits (`sha256sum <binary>`)"
                    ));
                }
                hash.make_ascii_lowercase();
            }
            let attested =
                s.uid.is_some() || s.gid.is_some() || s.exe.is_some() || s.sha256.is_some();
            if !attested {
                if !e.insecure {
                    return Err(format!(
                        "entry {i} ({id}) selects only on sds_node_id, which any local process can claim, \
                         so any local user would get this identity's private key; expected also uid \
                         (and optionally exe or sha256) of the Envoy, or `insecure: true` on the entry \
                         to accept that"
                    ));
                }
                tracing::warn!(entry = i, spiffe_id = %id,
                    "INSECURE registration entry: only sds_node_id, which any local process can claim; \
                     every local user can obtain this identity and its private key");
            }
            if let Some(exe) = &mut s.exe {
                match std::fs::canonicalize(&*exe) {
                    Ok(real) => {
                        if real != *exe {
                            tracing::info!(entry = i, spiffe_id = %id, exe = %exe.display(),
                                resolved = %real.display(), "exe selector: symlinks resolved");
                        }
                        *exe = real;
                    }
                    Err(err) => tracing::warn!(entry = i, spiffe_id = %id, exe = %exe.display(),
                        error = %err, "exe selector names no file: this entry cannot match until it exists"),
                }
            }
        }
        Ok(())
    }

    /// Whether any entry selects on the executable's SHA-256 (which then is computed).
    pub(crate) fn wants_sha256(&self) -> bool {
        self.entries.iter().any(|e| e.selectors.sha256.is_some())
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Every distinct SPIFFE ID registered (the agent keeps an SVID for each).
    pub fn spiffe_ids(&self) -> Vec<SpiffeId> {
        let mut out: Vec<SpiffeId> = Vec::new();
        for e in &self.entries {
            if !out.contains(&e.spiffe_id) {
                out.push(e.spiffe_id.clone());
            }
        }
        out
    }

    /// Checks that every entry is in `trust_domain` (the CA only signs for it).
    pub fn check_trust_domain(&self, trust_domain: &TrustDomain) -> Result<()> {
        for e in &self.entries {
            if e.spiffe_id.trust_domain() != trust_domain {
                return Err(Error::Config {
                    reason: format!(
                        "registration entry {} is in trust domain {}; expected {trust_domain}",
                        e.spiffe_id,
                        e.spiffe_id.trust_domain()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The SPIFFE IDs `caller` is entitled to, first = default, without duplicates.
    pub fn identities_for(&self, caller: &Caller) -> Vec<SpiffeId> {
        let mut out: Vec<SpiffeId> = Vec::new();
        for e in &self.entries {
            if e.selectors.matches(caller) && !out.contains(&e.spiffe_id) {
                out.push(e.spiffe_id.clone());
            }
        }
        out
    }
}

impl Selectors {
    /// Requires this uid (`Selectors::default()` matches no caller; each setter adds a
    /// requirement, and a caller must meet them all).
    ///
    /// ```
    /// let s = mtls_agent::Selectors::default().sds_node_id("web-sidecar").uid(1000).exe("/usr/bin/envoy");
    /// assert_eq!((s.uid, s.exe.as_deref()), (Some(1000), Some(std::path::Path::new("/usr/bin/envoy"))));
    /// ```
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Requires this gid.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Requires this executable (symlinks are resolved when the agent loads the entry;
    /// the caller's `/proc/<pid>/exe` must be this very file).
    pub fn exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Requires an executable with this SHA-256 (hex, as `sha256sum` prints it).
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }

    /// Requires this SDS node id.
    pub fn sds_node_id(mut self, node: impl Into<String>) -> Self {
        self.sds_node_id = Some(node.into());
        self
    }

    fn matches(&self, caller: &Caller) -> bool {
        fn eq<T: PartialEq>(want: Option<&T>, have: Option<&T>) -> bool {
            want.is_none_or(|w| have == Some(w))
        }
        let any = self.uid.is_some()
            || self.gid.is_some()
            || self.exe.is_some()
            || self.sha256.is_some()
            || self.sds_node_id.is_some();
        any && eq(self.uid.as_ref(), caller.uid.as_ref())
            && eq(self.gid.as_ref(), caller.gid.as_ref())
            && self.exe.as_ref().is_none_or(|want| {
                // The file the path names now (an upgraded binary matches new processes).
                let now = std::fs::metadata(want).ok().map(|m| (m.dev(), m.ino()));
                now.is_some() && caller.exe_file == now
            })
            && eq(self.sha256.as_ref(), caller.exe_sha256.as_ref())
            && eq(self.sds_node_id.as_ref(), caller.sds_node_id.as_ref())
    }
}

impl Entry {
    /// An entry granting `spiffe_id` to callers matching `selectors`.
    pub fn new(spiffe_id: SpiffeId, selectors: Selectors) -> Self {
        Self {
            spiffe_id,
            selectors,
            insecure: false,
        }
    }

    /// Accepts selectors that attest nothing (only `sds_node_id`): every local user can
    /// then obtain this identity. For throwaway demos only; the agent warns at every load.
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_id(path: &Path) -> Option<(u64, u64)> {
        let m = std::fs::metadata(path).unwrap();
        Some((m.dev(), m.ino()))
    }

    fn registration(api_exe: &Path) -> Registration {
        Registration::from_yaml(&format!(
            r#"
entries:
  - spiffe_id: spiffe://example.org/web
    selectors: {{ uid: 1000 }}
  - spiffe_id: spiffe://example.org/api
    selectors: {{ uid: 1000, exe: {} }}
  - spiffe_id: spiffe://example.org/envoy
    selectors: {{ uid: 1001, sds_node_id: sidecar }}
"#,
            api_exe.display()
        ))
        .unwrap()
    }

    #[test]
    fn selectors_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (api_exe, web_exe) = (dir.path().join("api"), dir.path().join("web"));
        std::fs::write(&api_exe, "api").unwrap();
        std::fs::write(&web_exe, "web").unwrap();
        let reg = registration(&api_exe);
        let web = Caller {
            uid: Some(1000),
            exe: Some(web_exe.clone()),
            exe_file: file_id(&web_exe),
            ..Caller::default()
        };
        let ids: Vec<String> = reg
            .identities_for(&web)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["spiffe://example.org/web"]);
        let api = Caller {
            exe: Some(api_exe.clone()),
            exe_file: file_id(&api_exe),
            ..web.clone()
        };
        assert_eq!(reg.identities_for(&api).len(), 2);
        // The path alone (a bind mount over it elsewhere) is not the file.
        let spoof = Caller {
            exe: Some(api_exe.clone()),
            ..web.clone()
        };
        assert_eq!(reg.identities_for(&spoof).len(), 1);
        let other = Caller {
            uid: Some(0),
            ..Caller::default()
        };
        assert!(reg.identities_for(&other).is_empty());
        let claimed = Caller {
            sds_node_id: Some("sidecar".into()),
            ..other
        };
        assert!(reg.identities_for(&claimed).is_empty());
        let envoy = Caller {
            uid: Some(1001),
            ..claimed
        };
        assert_eq!(
            reg.identities_for(&envoy)[0].to_string(),
            "spiffe://example.org/envoy"
        );
    }

    #[test]
    fn exe_symlinks_are_resolved_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, "bin").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let reg = registration(&link);
        let exe = reg.entries()[1].selectors.exe.clone().unwrap();
        assert_eq!(exe, std::fs::canonicalize(&real).unwrap());
    }

    #[test]
    fn claimed_node_ids_alone_are_refused_unless_insecure() {
        let only_node =
            "entries:\n  - spiffe_id: spiffe://x/envoy\n    selectors: {sds_node_id: web}\n";
        let err = Registration::from_yaml(only_node).unwrap_err().to_string();
        assert!(err.contains("any local process can claim"), "{err}");
        assert!(err.contains("expected also uid"), "{err}");
        let insecure = format!("{only_node}    insecure: true\n");
        assert!(Registration::from_yaml(&insecure).unwrap().entries()[0].insecure);
        let mut code = Registration::new([Entry::new(
            "spiffe://x/envoy".parse().unwrap(),
            Selectors::default().sds_node_id("web"),
        )]);
        assert!(code.prepare().is_err());
    }

    #[test]
    fn sha256_selectors_are_checked_and_normalized() {
        let hash = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let reg = Registration::from_yaml(&format!(
            "entries:\n  - spiffe_id: spiffe://x/tool\n    selectors: {{sha256: {hash}}}\n"
        ))
        .unwrap();
        assert!(reg.wants_sha256());
        let caller = Caller {
            exe_sha256: Some(hash.to_ascii_lowercase()),
            ..Caller::default()
        };
        assert_eq!(reg.identities_for(&caller).len(), 1);
        let err = Registration::from_yaml(
            "entries:\n  - spiffe_id: spiffe://x/tool\n    selectors: {sha256: abc}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }

    #[test]
    fn bad_files_are_explained() {
        let err = Registration::from_yaml(
            "entries:\n  - spiffe_id: http://x/y\n    selectors: {uid: 1}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a SPIFFE ID"), "{err}");
        let err = Registration::from_yaml(
            "entries:\n  - spiffe_id: spiffe://x/y\n    selectors: {pid: 1}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("pid"), "{err}");
        let err = Registration::from_yaml("nope: 1").unwrap_err();
        assert!(err.to_string().contains("expected `entries"), "{err}");
    }

    #[test]
    fn trust_domain_is_checked() {
        let reg = registration(Path::new("/nonexistent"));
        assert!(
            reg.check_trust_domain(&"example.org".parse().unwrap())
                .is_ok()
        );
        let err = reg
            .check_trust_domain(&"other.org".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("expected other.org"), "{err}");
    }
}
