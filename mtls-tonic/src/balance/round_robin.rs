//! Round-robin over ready endpoints (the alternative to p2c).

use std::{
    hash::Hash,
    pin::Pin,
    task::{Context, Poll},
};

use tower::{
    discover::{Change, Discover},
    ready_cache::ReadyCache,
};
use tower_service::Service;
use tracing::debug;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends each call to the next ready endpoint in turn.
pub(crate) struct RoundRobin<D: Discover, Req>
where
    D::Key: Hash,
{
    discover: D,
    services: ReadyCache<D::Key, D::Service, Req>,
    next: usize,
    chosen: Option<usize>,
}

impl<D, Req> RoundRobin<D, Req>
where
    D: Discover + Unpin,
    D::Key: Hash + Clone,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
{
    pub(crate) fn new(discover: D) -> Self {
        Self {
            discover,
            services: ReadyCache::default(),
            next: 0,
            chosen: None,
        }
    }
}

impl<D, Req> Service<Req> for RoundRobin<D, Req>
where
    D: Discover + Unpin,
    D::Key: Hash + Clone,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = futures_util::future::MapErr<
        <D::Service as Service<Req>>::Future,
        fn(<D::Service as Service<Req>>::Error) -> BoxError,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        while let Poll::Ready(Some(change)) = Pin::new(&mut self.discover).poll_discover(cx) {
            match change.map_err(Into::into)? {
                Change::Insert(key, svc) => self.services.push(key, svc),
                Change::Remove(key) => {
                    self.services.evict(&key);
                }
            }
        }
        while let Poll::Ready(Err(error)) = self.services.poll_pending(cx) {
            debug!(%error, "dropping failed endpoint");
        }
        loop {
            let len = self.services.ready_len();
            if len == 0 {
                self.chosen = None;
                return Poll::Pending;
            }
            let index = self.chosen.take().unwrap_or_else(|| {
                self.next = self.next.wrapping_add(1);
                self.next % len
            });
            if index < len && matches!(self.services.check_ready_index(cx, index), Ok(true)) {
                self.chosen = Some(index);
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures_util::TryFutureExt;
        let index = self.chosen.take().unwrap_or(0);
        self.services
            .call_ready_index(index, request)
            .map_err(Into::into)
    }
}
