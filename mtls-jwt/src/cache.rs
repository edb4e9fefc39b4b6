//! The verified-token cache (Envoy's `jwt_cache_config`): bounded, keyed by the token's
//! bytes, entries expire with the token and are dropped when the JWKS changes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::claims::Claims;

struct Entry {
    claims: Claims,
    /// Valid while `now <= until` (the token's `exp` plus the clock skew).
    until: i64,
    /// The JWKS generation it was verified against.
    generation: u64,
    /// Insertion order, for evicting the oldest.
    seq: u64,
}

/// A bounded map from token to validated claims.
pub(crate) struct TokenCache {
    capacity: usize,
    entries: RwLock<HashMap<Box<str>, Entry>>,
    seq: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RwLock::new(HashMap::with_capacity(capacity.min(4096))),
            seq: AtomicU64::new(0),
        }
    }

    /// False when the capacity is 0 (nothing is ever cached).
    pub(crate) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cached claims, if `token` was verified against this JWKS generation and is
    /// still within its lifetime.
    pub(crate) fn get(&self, token: &str, generation: u64, now: i64) -> Option<Claims> {
        if self.capacity == 0 {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let entry = entries.get(token)?;
        (entry.generation == generation && now <= entry.until).then(|| entry.claims.clone())
    }

    /// Remembers a verified token until `until`.
    pub(crate) fn insert(
        &self,
        token: &str,
        claims: Claims,
        until: i64,
        generation: u64,
        now: i64,
    ) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.retain(|_, e| e.generation == generation && now <= e.until);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.seq)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        entries.insert(
            token.into(),
            Entry {
                claims,
                until,
                generation,
                seq,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Algorithm;

    fn claims() -> Claims {
        Claims::parse(serde_json::Map::new(), Algorithm::ES256, None).unwrap()
    }

    #[test]
    fn bounded_expiring_and_generation_bound() {
        let cache = TokenCache::new(2);
        cache.insert("a", claims(), 100, 1, 0);
        cache.insert("b", claims(), 100, 1, 0);
        cache.insert("c", claims(), 100, 1, 0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", 1, 0).is_none(), "the oldest was evicted");
        assert!(cache.get("c", 1, 0).is_some());
        assert!(cache.get("c", 1, 101).is_none(), "expired with the token");
        assert!(cache.get("c", 2, 0).is_none(), "the JWKS changed");
        let off = TokenCache::new(0);
        off.insert("a", claims(), 100, 1, 0);
        assert!(off.get("a", 1, 0).is_none());
    }
}
