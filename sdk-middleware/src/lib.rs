//! Meshlight's RPC middleware: tower layers that carry W3C trace context, baggage and the mesh
//! lane header across every hop of tonic and axum/hyper services, and record a span and a
//! RED-metric measurement for every call.
//!
//! One line at start-up and one layer per server and client:
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Reads OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER(_ARG), …;
//! // dropping the guard flushes what is still buffered.
//! let telemetry = meshlight_middleware::init()?;
//! let server = tonic::transport::Server::builder().layer(telemetry.server_layer());
//! let channel = tonic::transport::Endpoint::from_static("http://orders:50051").connect_lazy();
//! let client = tower::ServiceBuilder::new().layer(telemetry.client_layer()).service(channel);
//! # Ok(()) }
//! ```
//!
//! Handler code reads the request's context with [`trace_id`], [`baggage`] and [`lane`], and
//! [`spawn`] carries it into another task. A complete, runnable example:
//!
//! ```
//! use meshlight_middleware::Telemetry;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::builder().service_name("checkout").build()?;
//! let service = ServiceBuilder::new().layer(telemetry.server_layer()).service(service_fn(
//!     |_request: http::Request<String>| async {
//!         let trace_id = meshlight_middleware::trace_id().map(|id| id.to_string()).unwrap_or_default();
//!         let lane = meshlight_middleware::lane().map(|lane| lane.name().to_owned()).unwrap_or_default();
//!         let response = http::Response::builder().header("x-trace-id", trace_id).header("x-lane", lane);
//!         response.body(String::new())
//!     },
//! ));
//!
//! let request = http::Request::builder()
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .header("x-asm-prefer-tag", "canary")
//!     .body(String::new())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.headers()["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(response.headers()["x-lane"], "canary");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod context;
mod lane;
mod layer;
mod logging;
mod metrics;
mod propagation;
mod telemetry;

pub use config::{
    ConfigError, DEFAULT_LANE_HEADER, MESHLIGHT_LANE_HEADERS, MESHLIGHT_LANE_LABEL_LIMIT,
    MESHLIGHT_LANE_LABEL_VALUES, MESHLIGHT_LANE_VALUE_MAX_BYTES,
    MESHLIGHT_METRIC_CARDINALITY_LIMIT, OTEL_PROPAGATORS, Propagator, Settings,
};
pub use context::{baggage, lane, span_id, spawn, trace_id};
pub use lane::Lane;
pub use layer::{
    ClientLayer, ClientService, ResponseFuture, ServerLayer, ServerService, TracedBody,
};
pub use metrics::{DURATION_BUCKETS, names as metric_names};
pub use propagation::{B3Encoding, B3Propagator};
pub use telemetry::{InitError, Telemetry, TelemetryBuilder, TelemetryGuard};

/// Builds this service's telemetry from the `OTEL_*` and `MESHLIGHT_*` environment variables,
/// installs it globally with a `tracing` subscriber whose lines carry `trace_id` and
/// `span_id`, and returns the guard that flushes on drop.
pub fn init() -> Result<TelemetryGuard, InitError> {
    Telemetry::builder().init()
}
