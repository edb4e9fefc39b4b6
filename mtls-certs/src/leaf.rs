//! Parameters of a leaf certificate.

use std::net::IpAddr;
use std::time::Duration;

use mtls_identity::SpiffeId;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::key::KeyAlgorithm;
use crate::profile::Profile;
use crate::san::SubjectAltName;
use crate::subject::Subject;
use crate::validity::Validity;

/// What to put in a leaf certificate. Build one with a profile constructor
/// ([`server`](Self::server), [`client`](Self::client), [`peer`](Self::peer),
/// [`svid`](Self::svid)) and refine it with the `with_*`/`valid_*` methods.
///
/// Defaults: P-256 key, 24 h lifetime, `not_before` backdated 5 minutes, CN = first DNS SAN.
///
/// ```
/// use std::time::Duration;
/// use mtls_certs::{KeyAlgorithm, LeafParams};
///
/// let params = LeafParams::server(["api.internal", "127.0.0.1"])
///     .key_algorithm(KeyAlgorithm::Rsa2048)
///     .valid_for(Duration::from_secs(3600));
/// assert_eq!(params.sans.len(), 2);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeafParams {
    /// The profile (decides KU/EKU and SAN rules).
    pub profile: Profile,
    /// Subject DN; when it has no CN, the first DNS SAN becomes the CN.
    pub subject: Subject,
    /// Subject alternative names (for an SVID: DNS names only; the URI comes from `spiffe_id`).
    pub sans: Vec<SubjectAltName>,
    /// The SPIFFE ID, written as the URI SAN (required for [`Profile::Svid`]).
    pub spiffe_id: Option<SpiffeId>,
    /// Key algorithm of the generated key.
    pub key_algorithm: KeyAlgorithm,
    /// Validity period.
    pub validity: Validity,
}

impl LeafParams {
    /// Empty parameters of the given profile.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            subject: Subject::empty(),
            sans: Vec::new(),
            spiffe_id: None,
            key_algorithm: KeyAlgorithm::default(),
            validity: Validity::default(),
        }
    }

    /// A server certificate for these names (each classified as IP, e-mail, URI or DNS).
    pub fn server<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(Profile::Server).add_names(names)
    }

    /// A client certificate for these names (may be empty).
    pub fn client<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(Profile::Client).add_names(names)
    }

    /// A peer (server + client) certificate for these names.
    pub fn peer<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(Profile::Peer).add_names(names)
    }

    /// An X509-SVID for this SPIFFE ID (its path must not be empty).
    pub fn svid(id: SpiffeId) -> Self {
        Self::new(Profile::Svid).spiffe_id(id)
    }

    /// Adds names, classified as cfssl does (empty strings ignored).
    pub fn add_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.sans.extend(
            names
                .into_iter()
                .filter_map(|n| SubjectAltName::classify(n.as_ref())),
        );
        self
    }

    /// Adds one typed SAN.
    pub fn add_san(mut self, san: SubjectAltName) -> Self {
        self.sans.push(san);
        self
    }

    /// Adds a DNS SAN.
    pub fn add_dns_name(self, name: impl Into<String>) -> Self {
        self.add_san(SubjectAltName::Dns(name.into()))
    }

    /// Adds an IP SAN.
    pub fn add_ip_address(self, ip: IpAddr) -> Self {
        self.add_san(SubjectAltName::IpAddress(ip))
    }

    /// Sets the SPIFFE ID (URI SAN).
    pub fn spiffe_id(mut self, id: SpiffeId) -> Self {
        self.spiffe_id = Some(id);
        self
    }

    /// Sets the subject DN.
    pub fn subject(mut self, subject: Subject) -> Self {
        self.subject = subject;
        self
    }

    /// Sets the subject to just this common name.
    pub fn common_name(self, cn: impl Into<String>) -> Self {
        self.subject(Subject::common_name(cn))
    }

    /// Sets the key algorithm.
    pub fn key_algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.key_algorithm = alg;
        self
    }

    /// Sets the whole validity.
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// Valid for `ttl` from now (backdate unchanged).
    pub fn valid_for(mut self, ttl: Duration) -> Self {
        self.validity.ttl = ttl;
        self.validity.not_after = None;
        self
    }

    /// Valid exactly from `not_before` to `not_after` (e.g. already expired, for tests).
    pub fn valid_between(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.validity.not_before = Some(not_before);
        self.validity.not_after = Some(not_after);
        self
    }

    /// Backdates `not_before` by `backdate` instead of 5 minutes.
    pub fn backdated_by(mut self, backdate: Duration) -> Self {
        self.validity.backdate = backdate;
        self
    }

    /// Checks the profile's SAN rules; returns the full SAN list (SPIFFE URI first).
    pub(crate) fn checked_sans(&self) -> Result<Vec<SubjectAltName>> {
        let mut sans = Vec::with_capacity(self.sans.len() + 1);
        if let Some(id) = &self.spiffe_id {
            sans.push(SubjectAltName::Uri(id.to_string()));
        }
        sans.extend(self.sans.iter().cloned());
        check_profile_sans(self.profile, &sans)?;
        Ok(sans)
    }
}

/// The SAN rules of each profile, shared by direct issuance and CSR signing.
pub(crate) fn check_profile_sans(profile: Profile, sans: &[SubjectAltName]) -> Result<()> {
    match profile {
        Profile::Server | Profile::Peer => {
            if !sans
                .iter()
                .any(|s| matches!(s, SubjectAltName::Dns(_) | SubjectAltName::IpAddress(_)))
            {
                return Err(Error::InvalidSan {
                    expected: format!("at least one DNS or IP SAN for a {profile} certificate"),
                    presented: describe(sans),
                });
            }
        }
        Profile::Client => {}
        Profile::Svid => {
            let uris: Vec<&String> = sans
                .iter()
                .filter_map(|s| match s {
                    SubjectAltName::Uri(u) => Some(u),
                    _ => None,
                })
                .collect();
            let [uri] = uris.as_slice() else {
                return Err(Error::InvalidSan {
                    expected: "exactly one URI SAN (the SPIFFE ID) in an SVID".into(),
                    presented: describe(sans),
                });
            };
            let id = crate::spiffe_id::parse_spiffe_id(uri)?;
            crate::spiffe_id::require_workload_path(&id)?;
            if let Some(bad) = sans
                .iter()
                .find(|s| !matches!(s, SubjectAltName::Uri(_) | SubjectAltName::Dns(_)))
            {
                return Err(Error::InvalidSan {
                    expected: "only the SPIFFE URI and DNS SANs in an SVID".into(),
                    presented: bad.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn describe(sans: &[SubjectAltName]) -> String {
    if sans.is_empty() {
        "no SANs".into()
    } else {
        sans.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
