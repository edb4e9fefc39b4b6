//! The server side of gRFC A66: [`CallMetricsLayer`] / [`CallMetricsService`], with its
//! response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tower_layer::Layer;
use tower_service::Service;

use super::call::{CallMetricsBody, CallRecorder, code_of_error, series::Family};

/// Records gRFC A66's server metrics for every call: `grpc.server.call.started` and the
/// histogram `grpc.server.call.duration` (seconds, with `grpc.method` and `grpc.status`:
/// the code of a trailers-only response's headers or of the trailers; CANCELLED when the
/// client went away first). Put it first (outermost), so it also times and counts what
/// [`AuthzLayer`](crate::authz::AuthzLayer) and [`JwtLayer`](crate::jwt::JwtLayer) refuse.
///
/// `grpc.method` is the path for the services this server serves (named with
/// [`CallMetricsLayer::service`]) and `other` for any other path, as grpc-go and grpc-java
/// record methods that are not registered: the path comes from the caller, and a caller
/// must not be able to grow the label set.
///
/// ```
/// use mtls_tonic::{metrics::CallMetricsLayer, authz::{AuthzLayer, MethodPolicy}};
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// let metrics = CallMetricsLayer::new().service("grpc.health.v1.Health");
/// let _router = tonic::transport::Server::builder()
///     .layer(metrics) // outermost: denials are counted too
///     .layer(AuthzLayer::new(MethodPolicy::deny_by_default()))
///     .add_service(health);
/// ```
#[derive(Clone, Debug)]
pub struct CallMetricsLayer {
    services: Arc<Vec<String>>,
    labels: Arc<Vec<::metrics::Label>>,
    /// The series of this server's calls (made again when a label is added).
    family: Arc<Family>,
}

impl Default for CallMetricsLayer {
    fn default() -> Self {
        Self {
            services: Arc::default(),
            labels: Arc::default(),
            family: Arc::new(CallRecorder::server_family(&[])),
        }
    }
}

impl CallMetricsLayer {
    /// A layer that records every method as `other` until services are named.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the methods of `service` (`package.Service`, what a generated server's
    /// `NamedService::NAME` is) by their path.
    ///
    /// ```
    /// use tonic::server::NamedService;
    /// type Health = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;
    /// let layer = mtls_tonic::metrics::CallMetricsLayer::new().service(Health::NAME);
    /// assert!(layer.records("/grpc.health.v1.Health/Check"));
    /// assert!(!layer.records("/made.Up/Path"));
    /// ```
    pub fn service(mut self, service: impl Into<String>) -> Self {
        let service = service.into();
        Arc::make_mut(&mut self.services).push(service.trim_matches('/').to_owned());
        self
    }

    /// Adds the constant label `key` = `value` to every call this server records, e.g. which
    /// of several replicas in one process served it (off by default: gRFC A66 allows
    /// optional labels, and each value is one more series per method and status).
    ///
    /// ```
    /// let replica_a = mtls_tonic::metrics::CallMetricsLayer::new().label("replica", "a");
    /// assert_eq!(replica_a.labels(), [("replica", "a")]);
    /// ```
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.labels).push(::metrics::Label::new(key, value.into()));
        self.family = Arc::new(CallRecorder::server_family(&self.labels));
        self
    }

    /// The constant labels added with [`CallMetricsLayer::label`].
    ///
    /// ```
    /// assert!(mtls_tonic::metrics::CallMetricsLayer::new().labels().is_empty());
    /// ```
    pub fn labels(&self) -> Vec<(&str, &str)> {
        self.labels.iter().map(|l| (l.key(), l.value())).collect()
    }

    /// Whether `path` is recorded by name (else as `other`).
    pub fn records(&self, path: &str) -> bool {
        records(&self.services, path)
    }
}

fn records(services: &[String], path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.rsplit_once('/'))
        .is_some_and(|(service, method)| {
            !method.is_empty() && services.iter().any(|s| s == service)
        })
}

impl<S> Layer<S> for CallMetricsLayer {
    type Service = CallMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallMetricsService {
            inner,
            services: self.services.clone(),
            family: self.family.clone(),
        }
    }
}

/// The service of [`CallMetricsLayer`]: times each call from its request to its status.
///
/// ```
/// use mtls_tonic::metrics::{CallMetricsLayer, CallMetricsService};
/// use tower_layer::Layer;
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// let service: CallMetricsService<_> = CallMetricsLayer::new().layer(health);
/// let _health = service.into_inner();
/// ```
#[derive(Clone, Debug)]
pub struct CallMetricsService<S> {
    inner: S,
    services: Arc<Vec<String>>,
    family: Arc<Family>,
}

crate::inner_service_accessors!(CallMetricsService<S>);

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: std::error::Error + 'static,
    ResBody: http_body::Body,
    ResBody::Error: std::error::Error + 'static,
{
    type Response = http::Response<CallMetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = CallMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let method = if records(&self.services, path) {
            path
        } else {
            "other"
        };
        CallMetricsFuture {
            recorder: Some(CallRecorder::server_call(&self.family, method)),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CallMetricsService`]: the inner future, then the response
    /// with a body that records the call's status when it ends.
    #[derive(Debug)]
    pub struct CallMetricsFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<CallRecorder>,
    }
}

impl<F, B, E> Future for CallMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::error::Error + 'static,
{
    type Output = Result<http::Response<CallMetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(mut recorder) = this.recorder.take() else {
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(response) => {
                recorder.headers(response.headers());
                Ok(response.map(|body| CallMetricsBody::new(body, recorder)))
            }
            Err(error) => {
                recorder.finish(code_of_error(&error));
                Err(error)
            }
        })
    }
}
