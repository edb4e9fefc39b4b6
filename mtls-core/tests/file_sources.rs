//! The bad-state rules of the watched file sources: a leaf outside its validity window or
//! of a foreign CA is refused at start and, dropped in later, keeps the last good identity
//! with exactly one WARN (not one per poll tick); unreadable files are warned about once
//! per state, with an INFO when the source is good again; an issuer change is warned about.
//!
//! Log lines are captured by a process-wide subscriber and told apart by each test's
//! temporary directory, which every line of the sources names.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mtls_certs::{LeafParams, SpiffeId};
use mtls_core::{Error, FileIdentitySource, FileTrustSource, IdentitySource, TrustBundle};
use support::Pki;
use time::OffsetDateTime;

const ID: &str = "spiffe://example.org/ns/prod/sa/api";
/// A poll interval that never fires during a test: the test calls `reload()` as the ticks.
const NEVER: Duration = Duration::from_secs(3600);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        capture
    })
}

/// The captured lines at `level` ("WARN", "INFO") that mention `dir`.
fn lines(dir: &Path, level: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    let dir = dir.display().to_string();
    text.lines()
        .filter(|l| l.contains(&dir) && l.split_whitespace().nth(1) == Some(level))
        .map(str::to_owned)
        .collect()
}

struct Files {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn new() -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("ca.pem"),
        );
        Self { dir, cert, key, ca }
    }

    fn write(&self, leaf: &mtls_certs::Credential) {
        std::fs::write(&self.cert, leaf.chain_pem()).unwrap();
        std::fs::write(&self.key, leaf.key_pem()).unwrap();
    }

    fn warns(&self) -> Vec<String> {
        lines(self.dir.path(), "WARN")
    }

    fn infos(&self) -> Vec<String> {
        lines(self.dir.path(), "INFO")
    }
}

fn svid_params() -> LeafParams {
    LeafParams::svid(SpiffeId::new(ID).unwrap())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Calls `reload` like `n` poll ticks, each refused.
fn ticks_refused(source: &FileIdentitySource, n: usize) -> Error {
    let mut last = None;
    for _ in 0..n {
        last = Some(source.reload().unwrap_err());
    }
    last.unwrap()
}

#[test]
fn an_expired_leaf_is_refused_at_start_with_the_file_and_its_not_after() {
    let pki = Pki::new();
    let files = Files::new();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (nb, na) = (now - time::Duration::days(2), now - time::Duration::days(1));
    files.write(&pki.int.issue(&svid_params().valid_between(nb, na)).unwrap());
    let err = FileIdentitySource::watch(&files.cert, &files.key, NEVER).unwrap_err();
    assert!(matches!(err, Error::IdentityExpired { .. }), "{err}");
    let text = err.to_string();
    for part in [
        files.cert.display().to_string(),
        format!("expired at {}", rfc3339(na)),
        ID.to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
    assert!(!err.is_peer_rejection());

    // Not yet valid: refused too.
    let later = now + time::Duration::hours(1);
    files.write(
        &pki.int
            .issue(&svid_params().valid_between(later, later + time::Duration::hours(1)))
            .unwrap(),
    );
    let err = FileIdentitySource::open(&files.cert, &files.key).unwrap_err();
    assert!(matches!(err, Error::IdentityNotYetValid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("not valid before {}", rfc3339(later))),
        "{err}"
    );
}

#[test]
fn an_expired_leaf_dropped_in_keeps_the_last_good_identity_with_one_warn() {
    let pki = Pki::new();
    let files = Files::new();
    files.write(&pki.int.issue(&svid_params()).unwrap());
    let source = FileIdentitySource::watch(&files.cert, &files.key, NEVER).unwrap();
    let good = source.current().serial().to_string();

    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let na = now - time::Duration::hours(1);
    let expired = pki
        .int
        .issue(&svid_params().valid_between(now - time::Duration::hours(2), na))
        .unwrap();
    // In place, certificate first: a tick between the two writes sees the expired leaf with
    // the old key, the next ones the complete pair; one bad state, one WARN.
    std::fs::write(&files.cert, expired.chain_pem()).unwrap();
    let err = source.reload().unwrap_err();
    assert!(matches!(err, Error::IdentityExpired { .. }), "{err}");
    std::fs::write(&files.key, expired.key_pem()).unwrap();
    let err = ticks_refused(&source, 20);
    assert!(matches!(err, Error::IdentityExpired { .. }), "{err}");
    assert_eq!(
        source.current().serial().to_string(),
        good,
        "the last good identity stays"
    );

    let warns = files.warns();
    assert_eq!(warns.len(), 1, "exactly one WARN: {warns:#?}");
    assert!(
        warns[0].contains(&format!("expired at {}", rfc3339(na)))
            && warns[0].contains("keeping the last good value"),
        "{}",
        warns[0]
    );

    // A good pair again: installed, and an INFO says the source is good again.
    files.write(&pki.int.issue(&svid_params()).unwrap());
    assert!(source.reload().unwrap());
    assert_ne!(source.current().serial().to_string(), good);
    assert!(
        files.infos().iter().any(|l| l.contains("good again")),
        "{:#?}",
        files.infos()
    );
    assert_eq!(files.warns().len(), 1, "{:#?}", files.warns());
}

#[test]
fn a_foreign_ca_leaf_is_refused_and_installed_once_the_trust_has_its_ca() {
    let pki = Pki::new();
    let files = Files::new();
    std::fs::write(&files.ca, pki.root.cert_pem()).unwrap();
    files.write(&pki.int.issue(&svid_params()).unwrap());
    let trust = FileTrustSource::watch_spiffe(
        "example.org".parse().unwrap(),
        &files.ca,
        None::<&str>,
        NEVER,
    )
    .unwrap();
    let source =
        FileIdentitySource::watch_trusted(&files.cert, &files.key, trust.clone(), NEVER).unwrap();
    let good = source.current().serial().to_string();

    // A leaf of a CA the trust does not have, written at once (one state).
    files.write(&pki.intruder.issue(&svid_params()).unwrap());
    let err = ticks_refused(&source, 10);
    assert!(matches!(err, Error::IdentityUntrusted { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("issuer CN=Intruder Root")
            && text.contains("the bundle of trust domain example.org"),
        "{text}"
    );
    assert_eq!(source.current().serial().to_string(), good);
    let warns = files.warns();
    assert_eq!(warns.len(), 1, "exactly one WARN: {warns:#?}");
    assert!(warns[0].contains("issuer CN=Intruder Root"), "{}", warns[0]);

    // Refused at start as well.
    let err = FileIdentitySource::watch_trusted(&files.cert, &files.key, trust.clone(), NEVER)
        .unwrap_err();
    assert!(matches!(err, Error::IdentityUntrusted { .. }), "{err}");

    // The trust adds that CA: the same files are installed on the next tick, with a WARN
    // that the issuer changed.
    std::fs::write(&files.ca, pki.root.cert_pem() + &pki.intruder.cert_pem()).unwrap();
    assert!(trust.reload().unwrap());
    assert!(source.reload().unwrap());
    assert_ne!(source.current().serial().to_string(), good);
    let warns = files.warns();
    assert_eq!(warns.len(), 2, "{warns:#?}");
    assert!(
        warns[1].contains("issuer changed")
            && warns[1].contains("example.org Intermediate")
            && warns[1].contains("Intruder Root"),
        "{}",
        warns[1]
    );
}

#[test]
fn a_leaf_of_a_trust_domain_without_a_bundle_is_refused() {
    let pki = Pki::new();
    let files = Files::new();
    std::fs::write(&files.ca, pki.root.cert_pem()).unwrap();
    let other = pki
        .int
        .issue(&LeafParams::svid(
            SpiffeId::new("spiffe://other.org/api").unwrap(),
        ))
        .unwrap();
    files.write(&other);
    let trust = Arc::new(
        TrustBundle::spiffe()
            .add_domain_pem("example.org".parse().unwrap(), pki.root.cert_pem())
            .unwrap(),
    );
    let err = FileIdentitySource::watch_trusted(&files.cert, &files.key, trust, NEVER).unwrap_err();
    assert!(
        err.to_string()
            .contains("trust domain other.org has no bundle"),
        "{err}"
    );
}

#[test]
fn unreadable_files_are_warned_about_once_and_recovery_is_logged() {
    let pki = Pki::new();
    let files = Files::new();
    files.write(&pki.int.issue(&svid_params()).unwrap());
    let source = FileIdentitySource::watch(&files.cert, &files.key, NEVER).unwrap();
    let good = source.current().serial().to_string();
    let key = std::fs::read(&files.key).unwrap();

    std::fs::remove_file(&files.key).unwrap();
    let err = ticks_refused(&source, 30);
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(source.current().serial().to_string(), good);
    let warns = files.warns();
    assert_eq!(warns.len(), 1, "one WARN, not one per tick: {warns:#?}");
    assert!(
        warns[0].contains("cannot read files") && warns[0].contains("key.pem"),
        "{}",
        warns[0]
    );

    std::fs::write(&files.key, key).unwrap();
    assert!(!source.reload().unwrap(), "the same files: nothing new");
    let infos = files.infos();
    assert!(
        infos
            .iter()
            .any(|l| l.contains("back to the last good value")),
        "{infos:#?}"
    );
    // Unreadable again later: a new WARN for the new bad state.
    std::fs::remove_file(&files.key).unwrap();
    ticks_refused(&source, 5);
    assert_eq!(files.warns().len(), 2, "{:#?}", files.warns());
}

#[test]
fn a_passing_mismatched_pair_is_no_warning() {
    let pki = Pki::new();
    let files = Files::new();
    files.write(&pki.int.issue(&svid_params()).unwrap());
    let source = FileIdentitySource::watch(&files.cert, &files.key, NEVER).unwrap();
    let next = pki.int.issue(&svid_params()).unwrap();
    // One tick sees the new certificate with the old key, the next the new pair.
    std::fs::write(&files.cert, next.chain_pem()).unwrap();
    let err = source.reload().unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    std::fs::write(&files.key, next.key_pem()).unwrap();
    assert!(source.reload().unwrap());
    assert!(files.warns().is_empty(), "{:#?}", files.warns());

    // A mismatch that stays is warned about, once.
    let third = pki.int.issue(&svid_params()).unwrap();
    std::fs::write(&files.cert, third.chain_pem()).unwrap();
    ticks_refused(&source, 10);
    let warns = files.warns();
    assert_eq!(warns.len(), 1, "{warns:#?}");
    assert!(
        warns[0].contains("private key does not match"),
        "{}",
        warns[0]
    );
}

/// The poller thread itself: a leaf that is not valid yet is refused (one WARN however many
/// ticks pass) and installed by a later tick once its notBefore has passed.
#[test]
fn a_not_yet_valid_leaf_is_installed_by_the_poller_once_valid() {
    let pki = Pki::new();
    let files = Files::new();
    files.write(&pki.int.issue(&svid_params()).unwrap());
    let source =
        FileIdentitySource::watch(&files.cert, &files.key, Duration::from_millis(20)).unwrap();
    let good = source.current().serial().to_string();
    // Whole seconds: certificates carry no fractions.
    let not_before =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(3);
    let future = pki
        .int
        .issue(&svid_params().valid_between(not_before, not_before + time::Duration::hours(1)))
        .unwrap();
    let future_serial = mtls_core::Identity::from_pem(future.chain_pem(), future.key_pem())
        .unwrap()
        .serial()
        .to_string();
    // Written as one rename of a directory symlink would: both files replaced, then read.
    let staging = files.dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("cert.pem"), future.chain_pem()).unwrap();
    std::fs::write(staging.join("key.pem"), future.key_pem()).unwrap();
    std::fs::rename(staging.join("key.pem"), &files.key).unwrap();
    std::fs::rename(staging.join("cert.pem"), &files.cert).unwrap();

    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(source.current().serial().to_string(), good, "not valid yet");
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.current().serial().to_string() != future_serial {
        assert!(Instant::now() < deadline, "never installed once valid");
        std::thread::sleep(Duration::from_millis(20));
    }
    let warns = files.warns();
    assert_eq!(warns.len(), 1, "one WARN over ~150 ticks: {warns:#?}");
    assert!(
        warns[0].contains(&format!("not valid before {}", rfc3339(not_before))),
        "{}",
        warns[0]
    );
}

/// A CA bundle file that is not one: refused, last good kept, warned about once.
#[test]
fn a_bad_ca_bundle_keeps_the_last_good_trust() {
    let pki = Pki::new();
    let files = Files::new();
    std::fs::write(&files.ca, pki.root.cert_pem()).unwrap();
    let trust = FileTrustSource::watch(&files.ca, None::<&str>, NEVER).unwrap();
    std::fs::write(&files.ca, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    for _ in 0..10 {
        assert!(trust.reload().is_err());
    }
    assert_eq!(mtls_core::TrustSource::current(&trust).roots(None).len(), 1);
    assert_eq!(files.warns().len(), 1, "{:#?}", files.warns());
}
