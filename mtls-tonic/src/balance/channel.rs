//! `BalancedChannel`: the handle, introspection and its `Service` impl.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::task::JoinHandle;
use tonic::{Status, body::Body};
use tower::buffer::Buffer;
use tower_service::Service;

use super::{
    Backoff, BalancedChannelBuilder, EndpointInfo, LoadPolicy, ResolutionState,
    ctx::{Ctx, EndpointSettings},
    discovery::DnsSettings,
    gate::BoxFuture,
};
use crate::{MtlsConnector, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Stops discovery and drains every endpoint when the last channel handle is dropped.
#[derive(Debug)]
pub(super) struct Tasks {
    pub(super) discovery: JoinHandle<()>,
    pub(super) ctx: Arc<Ctx>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.discovery.abort();
        for endpoint in self.ctx.all() {
            endpoint.remove();
        }
    }
}

/// A gRPC channel over every address a DNS name resolves to, with one mTLS HTTP/2
/// connection per address and load-aware picking among the ready ones.
///
/// It is what Envoy's STRICT_DNS cluster does for a sidecar, in-process:
///
/// - resolves all A/AAAA records with hickory (system configuration or
///   [`BalancedChannelBuilder::nameserver`]) and re-resolves at the TTL within a floor and a
///   ceiling, with jitter; a failed connection triggers an early (rate-limited) re-resolution;
///   DNS failures keep the last good set, while an authoritative "no records" empties it
///   ([`BalancedChannel::resolution`] tells the two apart);
/// - dials every address through the [`MtlsConnector`] with the *service name* as TLS server
///   name, and counts an endpoint ready only once the server has sent its first HTTP/2 frame
///   (so an endpoint that rejected our certificate is never picked);
/// - reconnects with gRPC's backoff (1 s × 1.6, jitter, cap) per endpoint;
/// - picks with tower's p2c over calls in flight (or peak EWMA, or round robin), only among
///   ready (and, with [`BalancedChannelBuilder::health_check`], SERVING) endpoints;
/// - never hangs: with no ready endpoint a call fails UNAVAILABLE after
///   [`BalancedChannelBuilder::ready_timeout`], naming each endpoint's state and the DNS state;
/// - drains removed endpoints: no new calls, in-flight calls finish;
/// - reports every change as a `tracing` event and in [`BalancedChannel::endpoints`].
///
/// Cloning is cheap; all clones share the connections. Use it wherever tonic takes a
/// transport, e.g. `HealthClient::new(channel)`.
///
/// ```no_run
/// # async fn run(client_config: rustls::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use mtls_tonic::{BalancedChannel, MtlsConnector};
/// let channel = BalancedChannel::builder(
///     "bookstore.default.svc.cluster.local:50051",
///     MtlsConnector::new(client_config),
/// )
/// .ready_timeout(Duration::from_secs(2))
/// .build()?;
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
/// for endpoint in channel.endpoints() {
///     println!("{} {} in flight: {}", endpoint.addr, endpoint.state, endpoint.in_flight);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BalancedChannel {
    pub(super) buffer: Buffer<http::Request<Body>, BoxFuture>,
    pub(super) ctx: Arc<Ctx>,
    pub(super) _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("target", &self.ctx.target.to_string())
            .field("endpoints", &self.ctx.endpoints())
            .field("resolution", &self.ctx.resolution())
            .finish_non_exhaustive()
    }
}

impl BalancedChannel {
    /// A builder for a channel to `target` (`host:port`, `dns:///host:port`, or an IP
    /// literal with port for a single endpoint), dialing through `connector`. Unless the
    /// connector has a server name, the target's host is the TLS server name.
    pub fn builder(target: impl Into<String>, connector: MtlsConnector) -> BalancedChannelBuilder {
        BalancedChannelBuilder {
            target: target.into(),
            connector,
            dns: DnsSettings {
                nameserver: None,
                timeout: Duration::from_secs(5),
                attempts: 2,
                refresh_floor: Duration::from_secs(5),
                refresh_ceiling: Duration::from_secs(30),
                refresh_jitter: 0.1,
                reresolve_min_interval: Duration::from_secs(5),
                failure_backoff: Backoff::default(),
            },
            endpoint: EndpointSettings {
                backoff: Backoff::default(),
                connect_timeout: Duration::from_secs(20),
                keepalive: Some((Duration::from_secs(20), Duration::from_secs(10))),
                health_service: None,
                drain_timeout: Duration::from_secs(30),
            },
            policy: LoadPolicy::default(),
            ready_timeout: Some(Duration::from_secs(10)),
            buffer: 1024,
        }
    }

    /// The current endpoints (including draining ones), sorted by address.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.ctx.endpoints()
    }

    /// The outcome of the latest DNS resolution.
    pub fn resolution(&self) -> ResolutionState {
        self.ctx.resolution()
    }

    /// Asks for a DNS re-resolution now (subject to the minimum re-resolution interval).
    pub fn reresolve(&self) {
        self.ctx.reresolve.notify_one();
    }
}

impl Service<http::Request<Body>> for BalancedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.buffer.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        let deadline = grpc_timeout(request.headers()).map(|t| Box::pin(tokio::time::sleep(t)));
        ResponseFuture {
            inner: self.buffer.call(request),
            deadline,
        }
    }
}

/// The response future of [`BalancedChannel`]; fails DEADLINE_EXCEEDED at the call's
/// `grpc-timeout`.
pub struct ResponseFuture {
    inner: <Buffer<http::Request<Body>, BoxFuture> as Service<http::Request<Body>>>::Future,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(result) = Pin::new(&mut self.inner).poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Box::new(Status::deadline_exceeded(
                "deadline exceeded before a response",
            ))));
        }
        Poll::Pending
    }
}

/// Parses a `grpc-timeout` header (`<digits><unit>`, gRPC over HTTP/2 spec).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&headers), None);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_millis(250)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3S"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_secs(3)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("3x"));
        assert_eq!(grpc_timeout(&headers), None);
    }
}
