//! How calls end: trailers, plain HTTP answers to gRPC requests, and calls abandoned before
//! their response. Spans go to the SDK's in-memory exporter.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tower::{ServiceBuilder, service_fn};
use tower_service::Service;

use crate::{Telemetry, TelemetryGuard};

fn telemetry() -> (TelemetryGuard, InMemorySpanExporter) {
    let spans = InMemorySpanExporter::default();
    let guard = Telemetry::builder()
        .service_name("under-test")
        .span_exporter(spans.clone())
        .metric_exporter(opentelemetry_sdk::metrics::InMemoryMetricExporter::default())
        .build()
        .expect("telemetry");
    (guard, spans)
}

fn grpc_request() -> Request<String> {
    Request::post("/demo.Orders/Place")
        .header("content-type", "application/grpc")
        .body(String::new())
        .expect("request")
}

/// Polls `future` once with a no-op waker: every service here is ready at once or never.
fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    pin!(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn finished(guard: &TelemetryGuard, spans: &InMemorySpanExporter) -> SpanData {
    guard.flush();
    let mut finished = spans.get_finished_spans().expect("spans");
    assert_eq!(finished.len(), 1, "{finished:#?}");
    finished.remove(0)
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn the_grpc_status_in_the_trailers_decides_the_outcome() {
    let (guard, spans) = telemetry();
    let handler = service_fn(|_: Request<String>| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().expect("value"));
        let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
            .with_trailers(async { Some(Ok(trailers)) });
        Ok::<_, Infallible>(Response::new(body))
    });
    let mut service = ServiceBuilder::new()
        .layer(guard.server_layer())
        .service(handler);
    let Poll::Ready(Ok(response)) = poll_once(service.call(grpc_request())) else {
        panic!("ready at once")
    };
    let Poll::Ready(Ok(collected)) = poll_once(response.into_body().collect()) else {
        panic!("body at once")
    };
    assert!(collected.trailers().is_some());

    let span = finished(&guard, &spans);
    assert_eq!(span.name, "demo.Orders/Place");
    assert_eq!(
        attribute(&span, "rpc.response.status_code").as_deref(),
        Some("UNAVAILABLE")
    );
    assert_eq!(
        attribute(&span, "rpc.method").as_deref(),
        Some("demo.Orders/Place")
    );
    assert_eq!(
        attribute(&span, "error.type").as_deref(),
        Some("UNAVAILABLE")
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
}

#[test]
fn a_plain_http_404_to_a_grpc_request_is_an_unknown_method() {
    let (guard, spans) = telemetry();
    let handler = service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(String::new())
                .expect("response"),
        )
    });
    let mut service = ServiceBuilder::new()
        .layer(guard.server_layer())
        .service(handler);
    let Poll::Ready(Ok(response)) = poll_once(service.call(grpc_request())) else {
        panic!("ready at once")
    };
    drop(response);

    let span = finished(&guard, &spans);
    assert_eq!(
        span.name, "grpc",
        "an invented method does not name the span"
    );
    assert_eq!(attribute(&span, "rpc.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        attribute(&span, "rpc.method_original").as_deref(),
        Some("demo.Orders/Place")
    );
    assert_eq!(
        attribute(&span, "rpc.response.status_code").as_deref(),
        Some("UNIMPLEMENTED")
    );
}

#[test]
fn a_call_abandoned_before_its_response_is_recorded_as_cancelled() {
    let (guard, spans) = telemetry();
    let handler = service_fn(|_: Request<String>| {
        std::future::pending::<Result<Response<String>, Infallible>>()
    });
    let mut service = ServiceBuilder::new()
        .layer(guard.server_layer())
        .service(handler);
    let request = Request::get("/slow").body(String::new()).expect("request");
    assert!(
        poll_once(service.call(request)).is_pending(),
        "dropped while pending, as a timeout would"
    );

    let span = finished(&guard, &spans);
    assert_eq!(attribute(&span, "error.type").as_deref(), Some("cancelled"));
    assert_eq!(attribute(&span, "http.response.status_code"), None);
}

/// A streaming body that reports the trace id current while it is polled.
struct ReportsTraceId {
    done: bool,
}

impl http_body::Body for ReportsTraceId {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        let trace_id = crate::trace_id()
            .map(|id| id.to_string())
            .unwrap_or_default();
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(trace_id)))))
    }
}

#[test]
fn a_streaming_body_is_polled_inside_its_requests_context() {
    let (guard, _spans) = telemetry();
    let handler = service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(ReportsTraceId { done: false }))
    });
    let mut service = ServiceBuilder::new()
        .layer(guard.server_layer())
        .service(handler);
    let request = Request::get("/stream")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(String::new())
        .expect("request");
    let Poll::Ready(Ok(response)) = poll_once(service.call(request)) else {
        panic!("ready at once")
    };
    let Poll::Ready(Ok(collected)) = poll_once(response.into_body().collect()) else {
        panic!("body at once")
    };
    assert_eq!(collected.to_bytes(), "4bf92f3577b34da6a3ce929d0e0e4736");
}
