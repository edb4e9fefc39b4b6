//! Round-robin over ready endpoints (the alternative to p2c).
//!
//! Not built on tower's `ReadyCache`: its `call_ready_index` swap-removes the called service
//! and re-appends it, so an index counter over it drifts and some endpoints get several
//! calls in a row. Here the endpoints keep their order (discovery order) and a cursor moves
//! past the endpoint that took the last call: over N ready endpoints, N consecutive calls
//! reach N distinct endpoints; an endpoint that is not ready is skipped until it is.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tower::discover::{Change, Discover};
use tower_service::Service;
use tracing::debug;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends each call to the next ready endpoint in turn.
pub(crate) struct RoundRobin<D: Discover> {
    discover: D,
    services: Vec<(D::Key, D::Service)>,
    /// Where the search for the next ready endpoint starts.
    next: usize,
    /// The endpoint `poll_ready` found ready, for `call`.
    chosen: Option<usize>,
}

impl<D> RoundRobin<D>
where
    D: Discover + Unpin,
    D::Key: PartialEq,
{
    pub(crate) fn new(discover: D) -> Self {
        Self {
            discover,
            services: Vec::new(),
            next: 0,
            chosen: None,
        }
    }

    fn insert(&mut self, key: D::Key, service: D::Service) {
        match self.services.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = service,
            None => self.services.push((key, service)),
        }
    }

    fn remove_at(&mut self, index: usize) {
        self.services.remove(index);
        // Keep the cursor on the endpoint it pointed at.
        if index < self.next {
            self.next -= 1;
        }
        self.chosen = None;
    }
}

impl<D, Req> Service<Req> for RoundRobin<D>
where
    D: Discover + Unpin,
    D::Key: PartialEq,
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
                Change::Insert(key, svc) => self.insert(key, svc),
                Change::Remove(key) => {
                    if let Some(index) = self.services.iter().position(|(k, _)| *k == key) {
                        self.remove_at(index);
                    }
                }
            }
        }
        if self.chosen.is_some() {
            return Poll::Ready(Ok(()));
        }
        let mut tried = 0;
        while tried < self.services.len() {
            let index = (self.next + tried) % self.services.len();
            match self.services[index].1.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.chosen = Some(index);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(error)) => {
                    let error: BoxError = error.into();
                    debug!(%error, "dropping failed endpoint");
                    self.remove_at(index);
                }
                // Registered to wake us when it becomes ready.
                Poll::Pending => tried += 1,
            }
        }
        Poll::Pending
    }

    fn call(&mut self, request: Req) -> Self::Future {
        use futures_util::TryFutureExt;
        let index = self
            .chosen
            .take()
            .filter(|i| *i < self.services.len())
            .unwrap_or(0);
        self.next = index + 1;
        self.services[index]
            .1
            .call(request)
            .map_err(Into::into as fn(_) -> BoxError)
    }
}
