//! Which SPIFFE IDs a caller is entitled to: registration entries with selectors on the Unix
//! peer credentials and Envoy's SDS node id.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use spiffe::{SpiffeId, TrustDomain};

use crate::error::{Error, Result};

/// The registration file: a list of entries, in YAML or JSON.
///
/// ```yaml
/// entries:
///   - spiffe_id: spiffe://bookstore.local/web
///     selectors: { uid: 1000 }                 # any process of uid 1000
///   - spiffe_id: spiffe://bookstore.local/bookstore
///     selectors: { uid: 1001, exe: /usr/local/bin/bookstore-server }
///   - spiffe_id: spiffe://bookstore.local/envoy/web
///     selectors: { sds_node_id: web-sidecar }   # Envoy whose node.id is web-sidecar
/// ```
///
/// An entry matches a caller when **all** its selectors match (at least one is required).
/// A caller gets every matching entry's SPIFFE ID, in file order; the first is its default
/// SVID. Entries with `sds_node_id` only match SDS callers (Envoy), since the Workload API
/// has no node id. `sds_node_id` is what the caller *claims*: combine it with `uid` when
/// other local users must not obtain that identity.
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
    /// Path of the calling process's executable (`/proc/<pid>/exe`).
    pub exe: Option<PathBuf>,
    /// Envoy's `node.id` on an SDS stream.
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
    /// Executable path, from `/proc/<pid>/exe`.
    pub exe: Option<PathBuf>,
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
                "{e}; expected `entries: [{{spiffe_id, selectors: {{uid, gid, exe, sds_node_id}}}}]`"
            ))
        })?;
        let mut entries = Vec::with_capacity(shape.entries.len());
        for (i, e) in shape.entries.into_iter().enumerate() {
            // mtls-core's strict parser (go-spiffe's rules): nothing lower-cased or ignored.
            let spiffe_id: SpiffeId = mtls_core::SpiffeId::new(&e.spiffe_id)
                .map(Into::into)
                .map_err(|err| {
                    bad(format!(
                        "entry {i}: spiffe_id {:?} is not a SPIFFE ID: {err}",
                        e.spiffe_id
                    ))
                })?;
            let s = &e.selectors;
            if s.uid.is_none() && s.gid.is_none() && s.exe.is_none() && s.sds_node_id.is_none() {
                return Err(bad(format!(
                    "entry {i} ({spiffe_id}) has no selectors; expected at least one of uid, gid, exe, sds_node_id"
                )));
            }
            entries.push(Entry {
                spiffe_id,
                selectors: e.selectors,
            });
        }
        Ok(Self { entries })
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
    /// Selectors on a uid.
    pub fn uid(uid: u32) -> Self {
        Self {
            uid: Some(uid),
            ..Self::default()
        }
    }

    /// Selectors on an SDS node id.
    pub fn sds_node_id(node: impl Into<String>) -> Self {
        Self {
            sds_node_id: Some(node.into()),
            ..Self::default()
        }
    }

    /// Also require this uid.
    ///
    /// ```
    /// let s = mtls_agent::Selectors::sds_node_id("web-sidecar").with_uid(1000).with_exe("/usr/bin/envoy");
    /// assert_eq!((s.uid, s.exe.as_deref()), (Some(1000), Some(std::path::Path::new("/usr/bin/envoy"))));
    /// ```
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Also require this gid.
    pub fn with_gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Also require this executable path (as `/proc/<pid>/exe` shows it: symlinks resolved).
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Also require this SDS node id.
    pub fn with_sds_node_id(mut self, node: impl Into<String>) -> Self {
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
            || self.sds_node_id.is_some();
        any && eq(self.uid.as_ref(), caller.uid.as_ref())
            && eq(self.gid.as_ref(), caller.gid.as_ref())
            && eq(self.exe.as_ref(), caller.exe.as_ref())
            && eq(self.sds_node_id.as_ref(), caller.sds_node_id.as_ref())
    }
}

impl Entry {
    /// An entry granting `spiffe_id` to callers matching `selectors`.
    pub fn new(spiffe_id: SpiffeId, selectors: Selectors) -> Self {
        Self {
            spiffe_id,
            selectors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
entries:
  - spiffe_id: spiffe://example.org/web
    selectors: { uid: 1000 }
  - spiffe_id: spiffe://example.org/api
    selectors: { uid: 1000, exe: /usr/bin/api }
  - spiffe_id: spiffe://example.org/envoy
    selectors: { sds_node_id: sidecar }
"#;

    #[test]
    fn selectors_and_order() {
        let reg = Registration::from_yaml(FILE).unwrap();
        let web = Caller {
            uid: Some(1000),
            exe: Some("/usr/bin/web".into()),
            ..Caller::default()
        };
        let ids: Vec<String> = reg
            .identities_for(&web)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["spiffe://example.org/web"]);
        let api = Caller {
            exe: Some("/usr/bin/api".into()),
            ..web.clone()
        };
        assert_eq!(reg.identities_for(&api).len(), 2);
        let other = Caller {
            uid: Some(0),
            ..Caller::default()
        };
        assert!(reg.identities_for(&other).is_empty());
        let envoy = Caller {
            sds_node_id: Some("sidecar".into()),
            ..other
        };
        assert_eq!(
            reg.identities_for(&envoy)[0].to_string(),
            "spiffe://example.org/envoy"
        );
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
        let reg = Registration::from_yaml(FILE).unwrap();
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
