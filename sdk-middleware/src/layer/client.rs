//! The client side: a child span of whatever is current, with the trace context, baggage
//! and lane written into the outbound request.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::TracedBody;
use super::call::Call;
use super::future::ResponseFuture;
use crate::telemetry::Telemetry;

/// Instruments a tonic `Channel` or a tower-based HTTP client such as hyper-util's.
#[derive(Clone, Debug)]
pub struct ClientLayer {
    telemetry: Telemetry,
    server: Option<(Arc<str>, Option<u16>)>,
}

impl ClientLayer {
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        ClientLayer {
            telemetry,
            server: None,
        }
    }

    /// The peer's address for `server.address`/`server.port`, for clients whose requests
    /// carry only a path (a tonic `Channel` adds the origin below this layer).
    pub fn with_server_address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.server = Some((Arc::from(host.into()), Some(port)));
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            telemetry: self.telemetry.clone(),
            server: self.server.clone(),
        }
    }
}

/// The service [`ClientLayer`] wraps around a client.
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    telemetry: Telemetry,
    server: Option<(Arc<str>, Option<u16>)>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientService<S>
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let call = Call::client(&self.telemetry, &mut request, self.server.as_ref());
        ResponseFuture::new(self.inner.call(request), call)
    }
}
