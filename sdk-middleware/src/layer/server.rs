//! The server side: continue the caller's trace, attach the lane, keep the request's context
//! current while the handler runs.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::TracedBody;
use super::call::Call;
use super::future::ResponseFuture;
use crate::telemetry::Telemetry;

/// Instruments a tonic server (`Server::builder().layer(..)`) or an axum/hyper one
/// (`Router::layer(..)`, which also gives spans and metrics the route template).
#[derive(Clone, Debug)]
pub struct ServerLayer {
    telemetry: Telemetry,
}

impl ServerLayer {
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        ServerLayer { telemetry }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// The service [`ServerLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = Call::server(&self.telemetry, &request);
        let future = {
            let _current = call.context().clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::new(future, call)
    }
}
