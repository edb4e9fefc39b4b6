//! tonic `Endpoint::concurrency_limit` and `rate_limit` for a [`BalancedChannel`]: shared
//! by every clone of the channel, waited for in `poll_ready` (as tower's `ConcurrencyLimit`
//! and `RateLimit` do), so a caller over the limit waits instead of failing.
//!
//! [`BalancedChannel`]: super::BalancedChannel

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// The limits one channel's clones share.
#[derive(Debug)]
pub(crate) struct Limits {
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<Rate>,
}

/// `num` calls per `per`: a fixed window, as tower's `RateLimit`.
#[derive(Debug)]
struct Rate {
    num: u64,
    per: Duration,
    /// The current window's end and the calls left in it.
    window: Mutex<(Instant, u64)>,
}

impl Limits {
    pub(crate) fn new(concurrency: Option<usize>, rate: Option<(u64, Duration)>) -> Arc<Self> {
        Arc::new(Self {
            concurrency: concurrency.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            rate: rate.map(|(num, per)| Rate {
                num: num.max(1),
                per,
                window: Mutex::new((Instant::now() + per, num.max(1))),
            }),
        })
    }

    pub(crate) fn is_none(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

impl Rate {
    /// Takes a call from the window, or says when the next window starts.
    fn take(&self) -> Result<(), Instant> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now >= window.0 {
            *window = (now + self.per, self.num);
        }
        if window.1 > 0 {
            window.1 -= 1;
            Ok(())
        } else {
            Err(window.0)
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// One channel handle's progress through the limits (a clone starts afresh).
pub(crate) struct Gate {
    limits: Arc<Limits>,
    /// Rate: a call was taken from the window for the next `call`.
    rated: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Concurrency: the permit for the next `call`, or the wait for one.
    permit: Option<OwnedSemaphorePermit>,
    /// In a `Mutex` only to keep the channel `Sync` (always reached through `&mut`).
    acquiring: Mutex<Option<Acquire>>,
}

impl Gate {
    pub(crate) fn new(limits: Arc<Limits>) -> Self {
        Self {
            limits,
            rated: false,
            sleep: None,
            permit: None,
            acquiring: Mutex::new(None),
        }
    }

    /// Ready once the rate window has room and a concurrency permit is held.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(rate) = &self.limits.rate {
            while !self.rated {
                if let Some(sleep) = self.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                    self.sleep = None;
                }
                match rate.take() {
                    Ok(()) => self.rated = true,
                    Err(next) => self.sleep = Some(Box::pin(tokio::time::sleep_until(next))),
                }
            }
        }
        if let Some(semaphore) = &self.limits.concurrency
            && self.permit.is_none()
        {
            let slot = self
                .acquiring
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            let acquiring = slot.get_or_insert_with(|| {
                let semaphore = semaphore.clone();
                Box::pin(async move { semaphore.acquire_owned().await.ok() })
            });
            self.permit = ready!(acquiring.as_mut().poll(cx));
            *slot = None;
        }
        Poll::Ready(())
    }

    /// What the next call holds until its response: its concurrency permit.
    pub(crate) fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.rated = false;
        self.permit.take()
    }
}

impl Clone for Gate {
    fn clone(&self) -> Self {
        Self::new(self.limits.clone())
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .field("rated", &self.rated)
            .field("permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
