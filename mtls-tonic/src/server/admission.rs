//! Slots for incomplete handshakes: bounded overall and per source IP, and when full the
//! oldest incomplete handshake is shed — the accept loop itself never waits.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use tokio::sync::oneshot;

/// Why a slot was taken from an older handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The new connection's source already held its share; its own oldest was shed.
    SameSource,
    /// All slots were taken; the oldest of all was shed.
    Oldest,
}

/// The source is over its handshake rate: close the connection at once, no TLS work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimited;

/// Sources whose buckets are kept at most (the fullest are forgotten first: a full bucket
/// is what a new source gets anyway).
const MAX_TRACKED_SOURCES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<State>,
    max_total: usize,
    max_per_ip: usize,
    rate: Option<(f64, f64)>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    // Arrival order: the first entry is the oldest incomplete handshake.
    by_age: BTreeMap<u64, Entry>,
    by_ip: HashMap<IpAddr, VecDeque<u64>>,
    // Per-source token buckets of new handshakes: (tokens, last refill).
    rates: HashMap<IpAddr, (f64, Instant)>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    // Dropping it tells the handshake task it was shed.
    _shed: oneshot::Sender<()>,
}

/// One incomplete handshake's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    id: u64,
    /// Resolves (with an error) when the slot was shed for a newer connection.
    pub(crate) shed: oneshot::Receiver<()>,
}

impl Admission {
    /// `rate`: per source, a burst of new handshakes and a refill per second.
    pub(crate) fn new(max_total: usize, max_per_ip: usize, rate: Option<(u32, u32)>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            rate: rate.map(|(burst, per_second)| (f64::from(burst.max(1)), f64::from(per_second))),
        })
    }

    /// Takes one handshake from `ip`'s rate budget.
    pub(crate) fn check_rate(&self, ip: IpAddr) -> Result<(), RateLimited> {
        let Some((burst, per_second)) = self.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let mut state = self.lock();
        if state.rates.len() >= MAX_TRACKED_SOURCES && !state.rates.contains_key(&ip) {
            // Forget the sources that are (nearly) full again: nothing lost.
            state.rates.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * per_second < burst
            });
            if state.rates.len() >= MAX_TRACKED_SOURCES {
                state.rates.clear();
            }
        }
        let (tokens, last) = state.rates.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(RateLimited)
        }
    }

    /// A slot for a new connection from `ip`, shedding an older handshake if needed.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> (Slot, Option<Shed>) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let mut shed = None;
        let same_source = state.by_ip.get(&ip).map_or(0, VecDeque::len);
        let victim = if same_source >= self.max_per_ip {
            let oldest = state.by_ip.get(&ip).and_then(|ids| ids.front().copied());
            oldest.map(|id| (id, Shed::SameSource))
        } else if state.by_age.len() >= self.max_total {
            let oldest = state.by_age.keys().next().copied();
            oldest.map(|id| (id, Shed::Oldest))
        } else {
            None
        };
        if let Some((id, why)) = victim {
            state.remove(id);
            shed = Some(why);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.by_age.insert(id, Entry { ip, _shed: tx });
        state.by_ip.entry(ip).or_default().push_back(id);
        drop(state);
        let slot = Slot {
            admission: self.clone(),
            id,
            shed: rx,
        };
        (slot, shed)
    }

    /// Incomplete handshakes held now.
    pub(crate) fn in_progress(&self) -> usize {
        self.lock().by_age.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn remove(&mut self, id: u64) {
        let Some(entry) = self.by_age.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_ip.get_mut(&entry.ip) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_ip.remove(&entry.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A shed slot is gone already: remove() is a no-op then.
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn full_sheds_the_oldest_and_admits_the_new() {
        let admission = Admission::new(2, 10, None);
        let (mut a, shed) = admission.admit(ip(1));
        assert_eq!(shed, None);
        let (_b, _) = admission.admit(ip(2));
        let (_c, shed) = admission.admit(ip(3));
        assert_eq!(shed, Some(Shed::Oldest));
        // The oldest (a) was told.
        assert!(a.shed.try_recv().is_err());
        assert_eq!(admission.in_progress(), 2);
        drop(a);
        assert_eq!(admission.in_progress(), 2);
    }

    #[test]
    fn one_source_sheds_only_its_own() {
        let admission = Admission::new(100, 2, None);
        let (mut other, _) = admission.admit(ip(9));
        let (mut first, _) = admission.admit(ip(1));
        let (_second, _) = admission.admit(ip(1));
        let (_third, shed) = admission.admit(ip(1));
        assert_eq!(shed, Some(Shed::SameSource));
        assert!(matches!(
            first.shed.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            other.shed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(admission.in_progress(), 3);
    }

    #[test]
    fn a_source_over_its_rate_is_refused_others_are_not() {
        let admission = Admission::new(100, 100, Some((3, 0)));
        for _ in 0..3 {
            assert_eq!(admission.check_rate(ip(1)), Ok(()));
        }
        assert_eq!(admission.check_rate(ip(1)), Err(RateLimited));
        assert_eq!(admission.check_rate(ip(2)), Ok(()));
    }

    #[test]
    fn dropped_slots_free_their_place() {
        let admission = Admission::new(1, 1, None);
        let (a, _) = admission.admit(ip(1));
        drop(a);
        let (_b, shed) = admission.admit(ip(1));
        assert_eq!(shed, None);
        assert_eq!(admission.in_progress(), 1);
    }
}
