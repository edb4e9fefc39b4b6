//! The claim rules: `iss`, `exp` and `nbf` with the clock skew, the lifetime against `iat`,
//! `aud`, the JWT-SVID `sub`, and the custom checks.

use std::sync::Arc;

use crate::claims::Claims;
use crate::error::{Error, Result};

/// A custom check ([`ValidatorBuilder::check`](super::ValidatorBuilder::check)).
pub(super) type Check = Arc<dyn Fn(&Claims) -> std::result::Result<(), String> + Send + Sync>;

/// What a validator accepts in the claims.
pub(super) struct ClaimRules {
    pub(super) issuers: Vec<String>,
    pub(super) audiences: Vec<String>,
    pub(super) require_exp: bool,
    /// The clock skew, in seconds.
    pub(super) leeway: i64,
    /// The longest lifetime, in seconds.
    pub(super) max_lifetime: Option<u64>,
    pub(super) jwt_svid: bool,
    pub(super) checks: Vec<(String, Check)>,
}

impl ClaimRules {
    /// Checks `claims` at `now` (Unix seconds), in order: `iss`, `exp`, `nbf`, the lifetime
    /// (`iat`), `aud`, the JWT-SVID `sub`, then the custom checks.
    pub(super) fn check(&self, claims: &Claims, now: i64) -> Result<()> {
        if !self.issuers.is_empty()
            && !claims
                .issuer()
                .is_some_and(|iss| self.issuers.iter().any(|i| i == iss))
        {
            return Err(Error::IssuerNotAllowed {
                presented: claims.issuer().map(str::to_owned),
                expected: self.issuers.clone(),
            });
        }
        let leeway = self.leeway;
        match claims.expires_at() {
            Some(exp) if now > exp.saturating_add(leeway) => {
                return Err(Error::Expired {
                    exp,
                    now,
                    leeway: leeway as u64,
                });
            }
            None if self.require_exp || self.max_lifetime.is_some() => {
                return Err(Error::MissingClaim { claim: "exp" });
            }
            _ => {}
        }
        if let Some(nbf) = claims.not_before()
            && nbf > now.saturating_add(leeway)
        {
            return Err(Error::NotYetValid {
                nbf,
                now,
                leeway: leeway as u64,
            });
        }
        if let (Some(max), Some(exp)) = (self.max_lifetime, claims.expires_at()) {
            // A future `iat` would shrink `exp - iat`: refuse it beyond the skew, and count
            // the lifetime from the earlier of `iat` and now.
            let issued = claims.issued_at().unwrap_or(now);
            if issued > now.saturating_add(leeway) {
                return Err(Error::IssuedInFuture {
                    iat: issued,
                    now,
                    leeway: leeway as u64,
                });
            }
            let lifetime = exp.saturating_sub(issued.min(now));
            if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
                return Err(Error::LifetimeTooLong { lifetime, max });
            }
        }
        if !self.audiences.is_empty() {
            if claims.audiences().is_empty() {
                return Err(Error::AudienceMissing {
                    expected: self.audiences.clone(),
                });
            }
            if !claims
                .audiences()
                .iter()
                .any(|a| self.audiences.contains(a))
            {
                return Err(Error::AudienceNotAllowed {
                    presented: claims.audiences().to_vec(),
                    expected: self.audiences.clone(),
                });
            }
        }
        if self.jwt_svid {
            let sub = claims
                .subject()
                .ok_or(Error::MissingClaim { claim: "sub" })?;
            crate::claims::canonical_spiffe_id(sub).map_err(|e| Error::InvalidClaim {
                claim: "sub".into(),
                reason: format!("{sub:?} is not a canonical SPIFFE ID: {e}"),
            })?;
        }
        for (name, check) in &self.checks {
            check(claims).map_err(|reason| Error::ClaimCheckFailed {
                check: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}
