//! The agent's CA and JWT key, the current set of SVIDs, and their rotation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use mtls_certs::{CaParams, CertificateAuthority, LeafParams};
use mtls_identity::source::Publisher;
use mtls_identity::{SpiffeId, TrustDomain};
use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Notify, watch};

use crate::error::{Error, Result};
use crate::limits::VALIDATOR_CACHE_ENTRIES;
use crate::registration::Registration;

/// One issued X509-SVID, in the encodings the two APIs want.
#[derive(Debug)]
pub(crate) struct Svid {
    pub(crate) spiffe_id: SpiffeId,
    /// DER certificates, leaf first, concatenated (Workload API `x509_svid`).
    pub(crate) chain_der: Vec<u8>,
    /// PKCS#8 DER key (Workload API `x509_svid_key`).
    pub(crate) key_pkcs8: Vec<u8>,
    /// PEM chain and key (Envoy SDS `tls_certificate`).
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
    pub(crate) serial_hex: String,
}

/// Everything the agent serves at one moment. Each rotation publishes a new one.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) issued_at: Instant,
    pub(crate) trust_domain: TrustDomain,
    /// Root certificates of our trust domain, DER concatenated (Workload API `bundle`):
    /// during a CA rotation the retiring, active and prepared roots, oldest first.
    pub(crate) bundle_der: Vec<u8>,
    /// The same, PEM (Envoy SDS `validation_context.trusted_ca`).
    pub(crate) bundle_pem: String,
    /// The same, one certificate each (the bundle endpoint's `x5c`s).
    pub(crate) bundle_roots: Vec<CertificateDer<'static>>,
    /// The same, one PEM each.
    pub(crate) bundle_root_pems: Vec<String>,
    /// `spiffe_sequence` of our bundle: +1 on every change of `bundle_roots`.
    pub(crate) bundle_sequence: u64,
    /// The CA issuing SVIDs now.
    pub(crate) ca: Arc<CertificateAuthority>,
    /// The oldest CA still in the bundle (issues the bundle endpoint's `https_spiffe` SVID:
    /// a federated peer that has not fetched the newer roots yet still verifies it).
    pub(crate) oldest_ca: Arc<CertificateAuthority>,
    pub(crate) svids: BTreeMap<String, Arc<Svid>>,
    /// JWKS of the JWT-SVID signing key.
    pub(crate) jwks: String,
    /// Foreign trust domains' bundles (federation), never our own.
    pub(crate) federated: Arc<mtls_core::BundleSet>,
}

impl Snapshot {
    pub(crate) fn svid(&self, id: &SpiffeId) -> Option<&Arc<Svid>> {
        self.svids.get(id.to_string().as_str())
    }
}

/// Issues and rotates; shared by the Workload API and SDS services.
pub(crate) struct Issuer {
    jwt_key: SigningKey,
    trust_domain: TrustDomain,
    svid_ttl: Duration,
    jwt_ttl: Duration,
    registration: RwLock<Registration>,
    /// What the Workload API, SDS, delivery and the bundle endpoint serve: the family's
    /// rotation model (`mtls_identity::source`), published on every change.
    snapshots: Publisher<Snapshot>,
    /// Held while a snapshot is made; holds the CAs of our trust domain.
    issuing: Mutex<Authorities>,
    /// Woken when a CA deadline (activation, retirement) may have changed.
    ca_changed: Notify,
    /// Where an activated CA is stored (`ca.pem`, `ca-key.pem`), if anywhere.
    state_dir: Option<PathBuf>,
    validators: Mutex<ValidatorCache>,
    federated: RwLock<Arc<mtls_core::BundleSet>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("trust_domain", &self.trust_domain)
            .field("ca", &self.current().ca.subject())
            .field("svid_ttl", &self.svid_ttl)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    pub(crate) fn new(
        ca: CertificateAuthority,
        jwt_key: SigningKey,
        trust_domain: TrustDomain,
        svid_ttl: Duration,
        jwt_ttl: Duration,
        mut registration: Registration,
        state_dir: Option<PathBuf>,
    ) -> Result<Arc<Self>> {
        registration
            .prepare()
            .map_err(|reason| Error::Registration {
                path: "<given in code>".into(),
                reason,
            })?;
        registration.check_trust_domain(&trust_domain)?;
        let authorities = Authorities {
            active: Arc::new(ca),
            prepared: None,
            retiring: Vec::new(),
            // Monotonic across restarts: the start time, then +1 per change.
            sequence: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs()),
        };
        let first = issue_all(
            &authorities,
            &jwt_key,
            &trust_domain,
            svid_ttl,
            &registration,
            1,
            Arc::default(),
        )?;
        let snapshots = Publisher::new(first);
        Ok(Arc::new(Self {
            jwt_key,
            trust_domain,
            svid_ttl,
            jwt_ttl,
            registration: RwLock::new(registration),
            snapshots,
            issuing: Mutex::new(authorities),
            ca_changed: Notify::new(),
            state_dir,
            validators: Mutex::new(ValidatorCache::default()),
            federated: RwLock::new(Arc::default()),
        }))
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshots.current()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.source().subscribe()
    }

    pub(crate) fn registration(&self) -> Registration {
        self.registration
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub(crate) fn svid_ttl(&self) -> Duration {
        self.svid_ttl
    }

    /// The CA issuing SVIDs now.
    pub(crate) fn ca(&self) -> Arc<CertificateAuthority> {
        Arc::clone(&self.current().ca)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Authorities> {
        self.issuing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `current` with our bundle as `authorities` hold it now: the same SVIDs,
    /// a new generation.
    fn publish_bundle(&self, authorities: &Authorities, why: &'static str) -> u64 {
        let current = self.current();
        let mut next = (*current).clone();
        next.generation = current.generation + 1;
        set_bundle(&mut next, authorities);
        tracing::info!(
            generation = next.generation,
            sequence = next.bundle_sequence,
            roots = next.bundle_roots.len(),
            why,
            "trust bundle updated"
        );
        let generation = next.generation;
        self.snapshots.publish(next);
        generation
    }

    /// Starts a CA rotation: a new CA (same trust domain and key algorithm) joins the
    /// bundle at once (`spiffe_sequence` + 1); it issues the SVIDs after `activate_in`
    /// (at once if zero, before returning). Returns the sequence of the bundle holding the
    /// new root. A rotation still prepared is activated first.
    pub(crate) fn rotate_ca(&self, activate_in: Duration) -> Result<u64> {
        let mut authorities = self.lock();
        if !authorities.active.is_root() {
            return Err(Error::Config {
                reason: format!(
                    "cannot rotate the CA {:?}: it is an intermediate of an upstream CA whose key \
                     the agent does not hold; expected a self-signed root (rotate upstream and \
                     restart with the new intermediate)",
                    authorities.active.subject()
                ),
            });
        }
        if authorities.prepared.is_some() {
            self.activate_locked(&mut authorities)?;
        }
        let next_sequence = authorities.sequence + 1;
        let ca = CertificateAuthority::new_root(
            &CaParams::new(format!(
                "mtls-agent CA {} {next_sequence}",
                self.trust_domain
            ))
            .key_algorithm(authorities.active.key_algorithm())
            .valid_for(CA_TTL),
        )?;
        tracing::info!(subject = %ca.subject(), activate_in = ?activate_in, "prepared a new CA");
        authorities.prepared = Some((Arc::new(ca), Instant::now() + activate_in));
        authorities.sequence = next_sequence;
        self.publish_bundle(&authorities, "CA prepared");
        crate::metrics::ca_rotation("prepared");
        let activated = if activate_in.is_zero() {
            self.activate_locked(&mut authorities)
        } else {
            Ok(())
        };
        drop(authorities);
        // Also after a failed activation: the CA task retries it.
        self.ca_changed.notify_one();
        activated.map(|()| next_sequence)
    }

    /// The prepared CA (if any) starts issuing: every SVID is reissued from it and pushed;
    /// the former CA stays in the bundle until its last SVID has expired.
    fn activate_locked(&self, authorities: &mut Authorities) -> Result<()> {
        let Some((ca, at)) = authorities.prepared.take() else {
            return Ok(());
        };
        if let Some(dir) = &self.state_dir {
            // Stored before it issues anything: a restart keeps issuing from it.
            if let Err(e) = store_ca(dir, &ca) {
                // Still prepared (and in the bundle): the next attempt retries.
                authorities.prepared = Some((ca, at));
                return Err(e);
            }
        }
        let former = std::mem::replace(&mut authorities.active, ca);
        // Every SVID the former CA issued was issued before now and lives at most
        // svid_ttl (the bundle endpoint's SVID too).
        authorities
            .retiring
            .push((former, Instant::now() + self.svid_ttl));
        let generation = self.current().generation + 1;
        let next = match issue_all(
            authorities,
            &self.jwt_key,
            &self.trust_domain,
            self.svid_ttl,
            &self.registration(),
            generation,
            self.federated(),
        ) {
            Ok(next) => next,
            Err(e) => {
                // Back to prepared: the former CA keeps issuing, both stay in the bundle.
                if let Some((former, _)) = authorities.retiring.pop() {
                    let ca = std::mem::replace(&mut authorities.active, former);
                    authorities.prepared = Some((ca, at));
                }
                return Err(e);
            }
        };
        tracing::info!(generation, ca = %authorities.active.subject(), svids = next.svids.len(), "activated the new CA");
        crate::metrics::rotation("CA rotation");
        crate::metrics::ca_rotation("activated");
        self.snapshots.publish(next);
        Ok(())
    }

    /// Removes former CAs' roots from the bundle: all of them if `all`, else those whose
    /// SVIDs have all expired. Returns the new `spiffe_sequence` if the bundle changed.
    pub(crate) fn retire(&self, all: bool) -> Option<u64> {
        let mut authorities = self.lock();
        let now = Instant::now();
        let before = authorities.retiring.len();
        authorities.retiring.retain(|(_, at)| !all && *at > now);
        let retired = before - authorities.retiring.len();
        if retired == 0 {
            return None;
        }
        authorities.sequence += 1;
        self.publish_bundle(&authorities, "former CA retired");
        for _ in 0..retired {
            crate::metrics::ca_rotation("retired");
        }
        let sequence = authorities.sequence;
        drop(authorities);
        self.ca_changed.notify_one();
        Some(sequence)
    }

    /// Activates the prepared CA now, if there is one (whether it was).
    pub(crate) fn activate_now(&self) -> Result<bool> {
        let mut authorities = self.lock();
        if authorities.prepared.is_none() {
            return Ok(false);
        }
        self.activate_locked(&mut authorities)?;
        drop(authorities);
        self.ca_changed.notify_one();
        Ok(true)
    }

    /// Activates a prepared CA whose time has come and retires expired former CAs.
    pub(crate) fn ca_deadlines_passed(&self) -> Result<()> {
        {
            let mut authorities = self.lock();
            if authorities
                .prepared
                .as_ref()
                .is_some_and(|(_, at)| *at <= Instant::now())
            {
                self.activate_locked(&mut authorities)?;
            }
        }
        self.retire(false);
        Ok(())
    }

    /// The next CA activation or retirement, if one is pending.
    pub(crate) fn next_ca_deadline(&self) -> Option<Instant> {
        let authorities = self.lock();
        authorities
            .prepared
            .iter()
            .map(|(_, at)| *at)
            .chain(authorities.retiring.iter().map(|(_, at)| *at))
            .min()
    }

    /// Resolves when a CA deadline may have changed.
    pub(crate) async fn ca_changed(&self) {
        self.ca_changed.notified().await;
    }

    fn federated(&self) -> Arc<mtls_core::BundleSet> {
        self.federated
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes foreign trust domains' bundles (our own domain's is left out) on every
    /// open stream: the same SVIDs, a new generation.
    pub(crate) fn set_federated(&self, bundles: &mtls_core::BundleSet) -> u64 {
        let _guard = self.lock();
        let own = self.trust_domain.to_string();
        let foreign: mtls_core::BundleSet = bundles
            .iter()
            .filter(|b| b.trust_domain().as_str() != own)
            .cloned()
            .collect();
        *self
            .federated
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(foreign.clone());
        let current = self.current();
        let generation = current.generation + 1;
        let next = Snapshot {
            generation,
            federated: Arc::new(foreign),
            ..(*current).clone()
        };
        tracing::info!(
            generation,
            federated = next.federated.len(),
            "federated bundles updated"
        );
        self.snapshots.publish(next);
        generation
    }

    /// The JWT-SVID signing key.
    pub(crate) fn jwt_key(&self) -> &SigningKey {
        &self.jwt_key
    }

    /// Issues a new SVID for every registered ID and pushes it to every open stream.
    pub(crate) fn rotate(&self, reason: &'static str) -> Result<u64> {
        let authorities = self.lock();
        let generation = self.current().generation + 1;
        let registration = self.registration();
        let next = issue_all(
            &authorities,
            &self.jwt_key,
            &self.trust_domain,
            self.svid_ttl,
            &registration,
            generation,
            self.federated(),
        )?;
        tracing::info!(generation, reason, svids = next.svids.len(), "rotated");
        crate::metrics::rotation(reason);
        self.snapshots.publish(next);
        Ok(generation)
    }

    /// Replaces the registration and reissues (new IDs get SVIDs at once).
    pub(crate) fn set_registration(&self, registration: Registration) -> Result<u64> {
        registration.check_trust_domain(&self.trust_domain)?;
        *self
            .registration
            .write()
            .unwrap_or_else(PoisonError::into_inner) = registration;
        self.rotate("registration reloaded")
    }

    /// A JWT-SVID for `id` with `audiences`.
    pub(crate) fn mint_jwt(&self, id: &SpiffeId, audiences: &[String]) -> Result<String> {
        let mut spec = TokenSpec::new(self.jwt_ttl).subject(id.to_string());
        for a in audiences {
            spec = spec.audience(a.clone());
        }
        let token = self.jwt_key.mint(&spec)?;
        tracing::info!(spiffe_id = %id, audiences = ?audiences.iter().map(|a| crate::logging::Shown(a)).collect::<Vec<_>>(),
            ttl = ?self.jwt_ttl, "issued JWT-SVID");
        Ok(token)
    }

    /// A JWT-SVID validator for `audience` over our own key (cached per audience, at most
    /// [`VALIDATOR_CACHE_ENTRIES`] of them, oldest evicted first).
    pub(crate) fn validator(&self, audience: &str) -> Result<Arc<Validator>> {
        let mut cache = self
            .validators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = cache.map.get(audience) {
            return Ok(Arc::clone(v));
        }
        let jwks = mtls_jwt::jwks_json([self.jwt_key.jwk(None)]);
        let builder = Validator::builder()
            .jwks(JwksSource::inline(jwks))
            .jwt_svid(audience);
        // mtls-jwt logs "JWKS loaded" for each validator built: over our own inline key that
        // says nothing, and a peer cycling audiences would turn it into a log flood.
        let v = Arc::new(tracing::subscriber::with_default(
            tracing::subscriber::NoSubscriber::default(),
            || builder.build(),
        )?);
        cache.insert(audience, Arc::clone(&v));
        Ok(v)
    }
}

/// ValidateJWTSVID validators by audience, bounded in entries (and so in bytes: audiences
/// are at most [`crate::Limits::max_audience_len`] long); the oldest goes first.
#[derive(Default)]
struct ValidatorCache {
    map: HashMap<String, Arc<Validator>>,
    order: VecDeque<String>,
}

impl ValidatorCache {
    fn insert(&mut self, audience: &str, validator: Arc<Validator>) {
        while self.map.len() >= VALIDATOR_CACHE_ENTRIES {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => self.map.clear(),
            }
        }
        self.map.insert(audience.to_owned(), validator);
        self.order.push_back(audience.to_owned());
    }
}

/// The CAs of our trust domain: the active one, a prepared one (in the bundle, not yet
/// issuing) and former ones (in the bundle until their SVIDs have expired).
struct Authorities {
    active: Arc<CertificateAuthority>,
    prepared: Option<(Arc<CertificateAuthority>, Instant)>,
    /// Oldest first, with when each leaves the bundle.
    retiring: Vec<(Arc<CertificateAuthority>, Instant)>,
    /// `spiffe_sequence` of the bundle they make.
    sequence: u64,
}

impl Authorities {
    /// The CAs whose roots are in the bundle, oldest first.
    fn in_bundle(&self) -> impl Iterator<Item = &Arc<CertificateAuthority>> {
        self.retiring
            .iter()
            .map(|(ca, _)| ca)
            .chain(std::iter::once(&self.active))
            .chain(self.prepared.iter().map(|(ca, _)| ca))
    }
}

/// Lifetime of a CA the agent makes (the agent is for development and single hosts; pass
/// your own CA for anything longer-lived, or rotate).
const CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Our trust domain's bundle in `snapshot` as `authorities` make it.
fn set_bundle(snapshot: &mut Snapshot, authorities: &Authorities) {
    let mut roots: Vec<CertificateDer<'static>> = Vec::new();
    let mut pems = Vec::new();
    for ca in authorities.in_bundle() {
        let root = ca.root_der().unwrap_or(ca.cert_der()).clone();
        if roots.contains(&root) {
            continue;
        }
        pems.push(ca.root_pem().unwrap_or_else(|| ca.cert_pem()));
        roots.push(root);
    }
    snapshot.bundle_der = roots.iter().flat_map(|c| c.as_ref().to_vec()).collect();
    snapshot.bundle_pem = pems.concat();
    snapshot.bundle_roots = roots;
    snapshot.bundle_root_pems = pems;
    snapshot.bundle_sequence = authorities.sequence;
    snapshot.ca = Arc::clone(&authorities.active);
    snapshot.oldest_ca = Arc::clone(
        authorities
            .in_bundle()
            .next()
            .unwrap_or(&authorities.active),
    );
}

fn issue_all(
    authorities: &Authorities,
    jwt_key: &SigningKey,
    trust_domain: &TrustDomain,
    ttl: Duration,
    registration: &Registration,
    generation: u64,
    federated: Arc<mtls_core::BundleSet>,
) -> Result<Snapshot> {
    let ca = &authorities.active;
    let mut svids = BTreeMap::new();
    for id in registration.spiffe_ids() {
        let issued = ca.issue(
            &LeafParams::svid(id.clone())
                .valid_for(ttl)
                // SPIRE backdates by 10 s; short-lived SVIDs should not start 5 min early.
                .backdated_by(Duration::from_secs(10)),
        )?;
        let chain_der: Vec<u8> = issued
            .cert_chain()
            .iter()
            .flat_map(|c| c.as_ref().to_vec())
            .collect();
        let key_pkcs8 = issued.private_key_der().secret_der().to_vec();
        let serial_hex = issued.certificate().serial().to_string();
        tracing::info!(spiffe_id = %id, serial = %serial_hex,
            not_after = %issued.certificate().not_after(), generation, "issued X509-SVID");
        svids.insert(
            id.to_string(),
            Arc::new(Svid {
                spiffe_id: id,
                chain_der,
                key_pkcs8,
                chain_pem: issued.chain_pem(),
                key_pem: issued.key_pem(),
                serial_hex,
            }),
        );
    }
    crate::metrics::svids_issued(svids.len());
    let mut jwk = jwt_key.jwk(None);
    // The Workload API serves a plain JWKS; `use` is left out so both SPIFFE libraries
    // (which expect `jwt-svid` in bundle documents) and JOSE validators (`sig`) accept it.
    if let Some(obj) = jwk.as_object_mut() {
        obj.remove("use");
    }
    let mut snapshot = Snapshot {
        generation,
        issued_at: Instant::now(),
        trust_domain: trust_domain.clone(),
        bundle_der: Vec::new(),
        bundle_pem: String::new(),
        bundle_roots: Vec::new(),
        bundle_root_pems: Vec::new(),
        bundle_sequence: 0,
        ca: Arc::clone(ca),
        oldest_ca: Arc::clone(ca),
        svids,
        jwks: mtls_jwt::jwks_json([jwk]),
        federated,
    };
    set_bundle(&mut snapshot, authorities);
    Ok(snapshot)
}

/// Stores `ca` as the state directory's CA: the key first (a crash between the two
/// leaves a certificate and key that do not match, which the next start refuses rather
/// than issuing from the wrong CA).
fn store_ca(dir: &Path, ca: &CertificateAuthority) -> Result<()> {
    mtls_certs::files::write_private_key(&dir.join("ca-key.pem"), &ca.key_pem(), true)?;
    mtls_certs::files::write_file(&dir.join("ca.pem"), &ca.cert_pem())?;
    tracing::info!(path = %dir.join("ca.pem").display(), subject = %ca.subject(), "stored the new CA");
    Ok(())
}

/// Loads the CA and JWT key from `state_dir`, or creates and stores them (keys 0600).
pub(crate) fn load_or_create_state(
    state_dir: &Path,
    trust_domain: &TrustDomain,
) -> Result<(CertificateAuthority, SigningKey)> {
    crate::files::secure_dir(state_dir, crate::files::STATE_DIR_MODE, "state directory")?;
    let ca_cert = state_dir.join("ca.pem");
    let ca_key = state_dir.join("ca-key.pem");
    let ca = if crate::files::exists(&ca_cert) {
        load_ca(&ca_cert, &ca_key)?
    } else {
        let ca = new_ca(trust_domain)?;
        mtls_certs::files::write_private_key(&ca_key, &ca.key_pem(), true)?;
        mtls_certs::files::write_file(&ca_cert, &ca.cert_pem())?;
        tracing::info!(path = %ca_cert.display(), subject = %ca.subject(), "created CA");
        ca
    };
    let jwt_path = state_dir.join("jwt-key.pem");
    let jwt_key = if crate::files::exists(&jwt_path) {
        let pem = read(&jwt_path, "reading the JWT signing key")?;
        SigningKey::from_pem(&pem)?
    } else {
        let key = SigningKey::generate(Algorithm::ES256)?;
        mtls_certs::files::write_private_key(&jwt_path, &key.private_pem(), true)?;
        tracing::info!(path = %jwt_path.display(), kid = %key.kid(), "created JWT signing key");
        key
    };
    Ok((ca, jwt_key))
}

/// A CA for `trust_domain`, valid for [`CA_TTL`] (a year).
pub(crate) fn new_ca(trust_domain: &TrustDomain) -> Result<CertificateAuthority> {
    Ok(CertificateAuthority::new_root(
        &CaParams::new(format!("mtls-agent CA {trust_domain}")).valid_for(CA_TTL),
    )?)
}

pub(crate) fn load_ca(cert: &Path, key: &Path) -> Result<CertificateAuthority> {
    let cert_pem = read(cert, "reading the CA certificate")?;
    let key_pem = read(key, "reading the CA key")?;
    Ok(CertificateAuthority::from_pem(&cert_pem, &key_pem)?)
}

fn read(path: &Path, what: &'static str) -> Result<String> {
    crate::files::read_nofollow(path, what)
}

/// Rotates at half-life, restarting the clock whenever a snapshot is published.
pub(crate) async fn rotation_task(issuer: Arc<Issuer>) {
    let mut rx = issuer.subscribe();
    loop {
        let issued_at = rx.borrow_and_update().issued_at;
        let due = issued_at + issuer.svid_ttl() / 2;
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {
                if let Err(e) = issuer.rotate("half-life") {
                    tracing::error!(error = %e, "rotation failed; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Rotates the CA every `every` (if set), activates prepared CAs and retires former ones
/// when their time comes.
pub(crate) async fn ca_task(issuer: Arc<Issuer>, every: Option<Duration>, activate_in: Duration) {
    let mut next_rotation = every.map(|e| Instant::now() + e);
    loop {
        let deadline = issuer
            .next_ca_deadline()
            .into_iter()
            .chain(next_rotation)
            .min();
        let wait = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {
                let now = Instant::now();
                if let (Some(at), Some(every)) = (next_rotation, every)
                    && at <= now
                {
                    next_rotation = Some(now + every);
                    if let Err(e) = issuer.rotate_ca(activate_in) {
                        tracing::error!(error = %e, "scheduled CA rotation failed; retrying in 5 s");
                        next_rotation = Some(now + Duration::from_secs(5));
                    }
                }
                if let Err(e) = issuer.ca_deadlines_passed() {
                    tracing::error!(error = %e, "activating the prepared CA failed; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
            () = issuer.ca_changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_cache_is_bounded_and_evicts_the_oldest() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let jwks = mtls_jwt::jwks_json([key.jwk(None)]);
        let v = Arc::new(
            Validator::builder()
                .jwks(JwksSource::inline(jwks))
                .jwt_svid("a")
                .build()
                .unwrap(),
        );
        let mut cache = ValidatorCache::default();
        for i in 0..VALIDATOR_CACHE_ENTRIES * 3 {
            cache.insert(&format!("aud-{i}"), Arc::clone(&v));
            assert!(cache.map.len() <= VALIDATOR_CACHE_ENTRIES);
        }
        assert_eq!(cache.map.len(), VALIDATOR_CACHE_ENTRIES);
        assert_eq!(cache.order.len(), VALIDATOR_CACHE_ENTRIES);
        assert!(!cache.map.contains_key("aud-0"));
        assert!(
            cache
                .map
                .contains_key(&format!("aud-{}", VALIDATOR_CACHE_ENTRIES * 3 - 1))
        );
    }
}
