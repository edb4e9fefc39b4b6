//! State shared by the channel handle, the discovery task and the endpoint tasks.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use rustls_pki_types::ServerName;
use tokio::sync::{Notify, watch};
use tracing::info;

use super::{
    Backoff, ChannelState, EndpointInfo, OutlierDetection, ResolutionState, endpoint::Shared,
    retry::Retries, target::Target,
};

/// Knobs of the endpoint tasks.
#[derive(Clone, Debug)]
pub(crate) struct EndpointSettings {
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: Option<crate::Keepalive>,
    pub(crate) health_service: Option<String>,
    pub(crate) drain_timeout: Duration,
    /// tonic `Endpoint`'s HTTP/2 windows (`None`: hyper's defaults, as tonic).
    pub(crate) http2: Http2Settings,
}

/// HTTP/2 flow control of each endpoint's connection (tonic `Endpoint`'s settings and
/// defaults: hyper's windows, adaptive window off).
#[derive(Clone, Debug, Default)]
pub(crate) struct Http2Settings {
    pub(crate) initial_stream_window_size: Option<u32>,
    pub(crate) initial_connection_window_size: Option<u32>,
    pub(crate) adaptive_window: bool,
}

/// What the channel adds to every call (tonic `Endpoint::timeout` / `user_agent`).
#[derive(Clone, Debug)]
pub(crate) struct CallDefaults {
    /// A call without a shorter `grpc-timeout` gets this one.
    pub(crate) timeout: Option<Duration>,
    /// `user-agent`: the application's (if set) then ours, appended to a call's own.
    pub(crate) user_agent: http::HeaderValue,
    /// Calls in flight at most, across the channel's clones (tonic `concurrency_limit`).
    pub(crate) concurrency_limit: Option<usize>,
    /// Calls per period at most, across the channel's clones (tonic `rate_limit`).
    pub(crate) rate_limit: Option<(u64, Duration)>,
}

/// Our part of every `user-agent` (tonic sends `tonic/<version>`).
const USER_AGENT: &str = concat!("mtls-tonic/", env!("CARGO_PKG_VERSION"));

impl Default for CallDefaults {
    fn default() -> Self {
        Self {
            timeout: None,
            user_agent: http::HeaderValue::from_static(USER_AGENT),
            concurrency_limit: None,
            rate_limit: None,
        }
    }
}

impl CallDefaults {
    /// `user_agent` then ours, as tonic's `Endpoint::user_agent` does.
    pub(crate) fn set_user_agent(&mut self, user_agent: &http::HeaderValue) {
        let mut value = user_agent.as_bytes().to_vec();
        value.push(b' ');
        value.extend_from_slice(USER_AGENT.as_bytes());
        if let Ok(value) = http::HeaderValue::from_bytes(&value) {
            self.user_agent = value;
        }
    }

    /// Puts the defaults on a call: the default timeout when the call has no shorter
    /// `grpc-timeout` (sent to the server, as gRPC deadlines are), and the user agent.
    pub(crate) fn apply<B>(&self, request: &mut http::Request<B>) {
        let headers = request.headers_mut();
        if let Some(timeout) = self.timeout
            && super::call::grpc_timeout(headers).is_none_or(|own| own > timeout)
            && let Some(value) = encode_grpc_timeout(timeout)
        {
            headers.insert("grpc-timeout", value);
        }
        match headers.get(http::header::USER_AGENT) {
            None => {
                headers.insert(http::header::USER_AGENT, self.user_agent.clone());
            }
            Some(own) => {
                let mut value = own.as_bytes().to_vec();
                value.push(b' ');
                value.extend_from_slice(self.user_agent.as_bytes());
                if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                    headers.insert(http::header::USER_AGENT, value);
                }
            }
        }
    }
}

/// `grpc-timeout` for `timeout`: at most 8 digits, in the finest unit that fits.
fn encode_grpc_timeout(timeout: Duration) -> Option<http::HeaderValue> {
    const MAX: u128 = 99_999_999;
    let value = [
        (timeout.as_millis().max(1), "m"),
        (u128::from(timeout.as_secs()), "S"),
        (u128::from(timeout.as_secs() / 3600), "H"),
    ]
    .into_iter()
    .find(|(n, _)| *n <= MAX)
    .map_or_else(|| format!("{MAX}H"), |(n, unit)| format!("{n}{unit}"));
    http::HeaderValue::try_from(value).ok()
}

/// How calls wait for a ready endpoint.
#[derive(Clone, Debug)]
pub(crate) struct CallSettings {
    /// Bound on a call's wait while the channel is connecting (`None`: no bound).
    pub(crate) ready_timeout: Option<Duration>,
    /// The channel-wide wait-for-ready default (a call's `WaitForReady` overrides it).
    pub(crate) wait_for_ready: bool,
    /// Default timeout and user agent of every call.
    pub(crate) defaults: CallDefaults,
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) target: Target,
    /// The `grpc.target` label of the per-call metrics.
    pub(crate) labels: crate::metrics::ClientLabels,
    pub(crate) connector: super::dial::Dialer,
    pub(crate) sni: ServerName<'static>,
    pub(crate) authority: http::uri::Authority,
    pub(crate) settings: EndpointSettings,
    pub(crate) calls: CallSettings,
    /// Outlier detection, when enabled.
    pub(crate) outlier: Option<OutlierDetection>,
    /// Retry policies and throttling, when configured.
    pub(crate) retries: Option<Arc<Retries>>,
    pub(crate) reresolve: Notify,
    registry: Mutex<Vec<Arc<Shared>>>,
    /// The endpoints a call may be sent to now, with their senders: rebuilt (under the
    /// registry lock, so the last snapshot stored is the latest) on every state change, read
    /// by each call without a lock ([`Ctx::pick`]). Empty unless the load policy is p2c over
    /// calls in flight, whose pick the snapshot reproduces.
    ready: arc_swap::ArcSwap<Vec<Ready>>,
    /// Whether calls pick from `ready` themselves (p2c over calls in flight) instead of
    /// going through the buffer's balancer task.
    direct: bool,
    resolution: Mutex<ResolutionState>,
    /// The aggregated [`ChannelState`] for the per-call fast path ...
    state: AtomicU8,
    /// ... and for calls waiting on a change.
    state_tx: watch::Sender<ChannelState>,
}

/// A ready endpoint and a sender on its connection.
#[derive(Clone, Debug)]
pub(crate) struct Ready {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sender: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ctx {
    #[expect(
        clippy::too_many_arguments,
        reason = "one private constructor, called once by the builder"
    )]
    pub(crate) fn new(
        target: Target,
        connector: super::dial::Dialer,
        sni: ServerName<'static>,
        authority: http::uri::Authority,
        settings: EndpointSettings,
        calls: CallSettings,
        outlier: Option<OutlierDetection>,
        retries: Option<Arc<Retries>>,
        direct: bool,
    ) -> Self {
        Self {
            labels: crate::metrics::ClientLabels::new(&target),
            target,
            connector,
            sni,
            authority,
            settings,
            calls,
            outlier,
            retries,
            reresolve: Notify::new(),
            registry: Mutex::new(Vec::new()),
            ready: arc_swap::ArcSwap::from_pointee(Vec::new()),
            direct,
            resolution: Mutex::new(ResolutionState::Pending),
            state: AtomicU8::new(ChannelState::Connecting.to_u8()),
            state_tx: watch::Sender::new(ChannelState::Connecting),
        }
    }

    /// The aggregated state (one atomic load: the per-call fast path).
    pub(crate) fn state(&self) -> ChannelState {
        ChannelState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Follows state changes (for calls that wait).
    pub(crate) fn watch_state(&self) -> watch::Receiver<ChannelState> {
        self.state_tx.subscribe()
    }

    /// Recomputes the aggregated state as gRPC does: READY if any endpoint is ready;
    /// TRANSIENT_FAILURE if none is and every (non-draining) endpoint has failed since it was
    /// last ready, or DNS (or the discovery source) named none; CONNECTING otherwise.
    pub(crate) fn recompute_state(&self) {
        let resolution = self.resolution();
        let (mut ready, mut live, mut failed) = (false, 0usize, 0usize);
        let registry = lock(&self.registry);
        let mut pickable = Vec::new();
        for shared in registry.iter() {
            let (is_ready, is_failed, draining) = shared.health();
            if draining {
                continue;
            }
            live += 1;
            ready |= is_ready;
            if is_failed {
                failed += 1;
            }
            if self.direct
                && is_ready
                && let Some(sender) = shared.ready_sender()
            {
                pickable.push(Ready {
                    shared: shared.clone(),
                    sender,
                });
            }
        }
        self.ready.store(Arc::new(pickable));
        drop(registry);
        let state = if ready {
            ChannelState::Ready
        } else if live == 0 {
            match resolution {
                ResolutionState::NoRecords { .. }
                | ResolutionState::Unreachable { .. }
                | ResolutionState::Discovered { endpoints: 0, .. } => {
                    ChannelState::TransientFailure
                }
                _ => ChannelState::Connecting,
            }
        } else if failed == live {
            ChannelState::TransientFailure
        } else {
            ChannelState::Connecting
        };
        let previous = self.state.swap(state.to_u8(), Ordering::AcqRel);
        if previous != state.to_u8() {
            info!(target = %self.target, from = %ChannelState::from_u8(previous), to = %state, "channel state changed");
            self.state_tx.send_replace(state);
        }
    }

    pub(crate) fn register(&self, shared: Arc<Shared>) {
        lock(&self.registry).push(shared);
        self.recompute_state();
    }

    /// Forgets `shared` (by identity: a re-added address has a new entry).
    pub(crate) fn unregister(&self, shared: &Arc<Shared>) {
        lock(&self.registry).retain(|s| !Arc::ptr_eq(s, shared));
        shared.uncount();
        self.recompute_state();
    }

    /// A ready endpoint for a call, picked as tower's p2c picks (two at random, the one with
    /// fewer calls in flight), with its sender; `None` when none is ready (or the load
    /// policy is not p2c over calls in flight: the buffer's balancer picks then).
    ///
    /// This is the per-call fast path: one snapshot load, no lock, no hop through the
    /// buffer's task (grpc-go's picker does the same).
    pub(crate) fn pick(&self) -> Option<Ready> {
        let ready = self.ready.load();
        let chosen = match ready.len() {
            0 => return None,
            1 => &ready[0],
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (&ready[a], &ready[b]);
                if b.shared.in_flight.load(Ordering::Relaxed)
                    < a.shared.in_flight.load(Ordering::Relaxed)
                {
                    b
                } else {
                    a
                }
            }
        };
        chosen.sender.is_ready().then(|| chosen.clone())
    }

    /// Whether [`Ctx::pick`] has an endpoint to pick now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.load().is_empty()
    }

    /// The ready endpoint with the fewest calls in flight among those not in `avoid`.
    pub(crate) fn pick_avoiding(&self, avoid: &[SocketAddr]) -> Option<Arc<Shared>> {
        lock(&self.registry)
            .iter()
            .filter(|s| !avoid.contains(&s.addr) && s.is_ready())
            .min_by_key(|s| s.in_flight.load(std::sync::atomic::Ordering::Relaxed))
            .cloned()
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
        let changed = *current != state;
        *current = state;
        drop(current);
        if changed {
            self.recompute_state();
        }
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
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{list}; {}", self.resolution())
    }
}
