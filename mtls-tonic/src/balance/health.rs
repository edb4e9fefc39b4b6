//! Per-endpoint `grpc.health.v1.Health/Watch` on the endpoint's own connection.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::uri::Authority;
use hyper::client::conn::http2::SendRequest;
use tonic::{Code, body::Body};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{debug, warn};

use super::{
    ctx::Ctx,
    endpoint::{Shared, set_origin},
};

/// A tonic transport straight onto one endpoint's HTTP/2 connection.
#[derive(Clone, Debug)]
pub(crate) struct Direct {
    sender: SendRequest<Body>,
    authority: Authority,
}

impl tower_service::Service<http::Request<Body>> for Direct {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = hyper::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        set_origin(&mut request, &self.authority);
        Box::pin(self.sender.send_request(request))
    }
}

/// Watches the endpoint's health while its connection lives; never returns.
///
/// SERVING makes it pickable; any other status, or a failed watch, makes it NOT_SERVING
/// (the watch is retried every second). A server without the health service (UNIMPLEMENTED)
/// is taken as serving, as gRPC clients do.
pub(crate) async fn watch(
    ctx: &Ctx,
    shared: &Arc<Shared>,
    sender: SendRequest<Body>,
    service: String,
) {
    let mut client = HealthClient::new(Direct {
        sender,
        authority: ctx.authority.clone(),
    });
    loop {
        match client
            .watch(HealthCheckRequest {
                service: service.clone(),
            })
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            let serving = update.status == ServingStatus::Serving as i32;
                            debug!(endpoint = %shared.addr, status = update.status, "health update");
                            shared.set_serving(serving);
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!(endpoint = %shared.addr, %status, "health watch ended");
                            break;
                        }
                    }
                }
                shared.set_serving(false);
            }
            Err(status) if status.code() == Code::Unimplemented => {
                warn!(endpoint = %shared.addr, "no grpc.health.v1 service: treating as serving");
                shared.set_serving(true);
                std::future::pending::<()>().await;
            }
            Err(status) => {
                debug!(endpoint = %shared.addr, %status, "health watch failed");
                shared.set_serving(false);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
