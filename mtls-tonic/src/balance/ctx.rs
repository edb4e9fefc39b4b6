//! State shared by the channel handle, the discovery task and the endpoint tasks.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use rustls_pki_types::ServerName;
use tokio::sync::Notify;
use tracing::info;

use super::{Backoff, EndpointInfo, ResolutionState, endpoint::Shared, target::Target};
use crate::MtlsConnector;

/// Knobs of the endpoint tasks.
#[derive(Clone, Debug)]
pub(crate) struct EndpointSettings {
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) health_service: Option<String>,
    pub(crate) drain_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) target: Target,
    pub(crate) connector: MtlsConnector,
    pub(crate) sni: ServerName<'static>,
    pub(crate) authority: http::uri::Authority,
    pub(crate) settings: EndpointSettings,
    pub(crate) reresolve: Notify,
    registry: Mutex<Vec<Arc<Shared>>>,
    resolution: Mutex<ResolutionState>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ctx {
    pub(crate) fn new(
        target: Target,
        connector: MtlsConnector,
        sni: ServerName<'static>,
        authority: http::uri::Authority,
        settings: EndpointSettings,
    ) -> Self {
        Self {
            target,
            connector,
            sni,
            authority,
            settings,
            reresolve: Notify::new(),
            registry: Mutex::new(Vec::new()),
            resolution: Mutex::new(ResolutionState::Pending),
        }
    }

    pub(crate) fn register(&self, shared: Arc<Shared>) {
        lock(&self.registry).push(shared);
    }

    /// Forgets `shared` (by identity: a re-added address has a new entry).
    pub(crate) fn unregister(&self, shared: &Arc<Shared>) {
        lock(&self.registry).retain(|s| !Arc::ptr_eq(s, shared));
    }

    pub(crate) fn all(&self) -> Vec<Arc<Shared>> {
        lock(&self.registry).clone()
    }

    pub(crate) fn endpoints(&self) -> Vec<EndpointInfo> {
        let mut out: Vec<EndpointInfo> = lock(&self.registry).iter().map(|s| s.info()).collect();
        out.sort_by_key(|e| e.addr);
        out
    }

    pub(crate) fn resolution(&self) -> ResolutionState {
        lock(&self.resolution).clone()
    }

    pub(crate) fn set_resolution(&self, state: ResolutionState) {
        let mut current = lock(&self.resolution);
        let kind_changed = std::mem::discriminant(&*current) != std::mem::discriminant(&state);
        if kind_changed {
            info!(target = %self.target, from = %*current, to = %state, "resolution state changed");
        }
        *current = state;
    }

    /// Asks the discovery task for a re-resolution (it rate-limits).
    pub(crate) fn request_reresolve(&self, addr: SocketAddr) {
        tracing::debug!(target = %self.target, endpoint = %addr, "re-resolution requested");
        self.reresolve.notify_one();
    }

    /// One line for an UNAVAILABLE status: every endpoint's state and the DNS state.
    pub(crate) fn summary(&self) -> String {
        let endpoints = self.endpoints();
        let list = if endpoints.is_empty() {
            "no endpoints".to_owned()
        } else {
            endpoints
                .iter()
                .map(|e| format!("{} {}", e.addr, e.state))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{list}; {}", self.resolution())
    }
}
