//! The RED-metric instruments, named and bucketed as the OpenTelemetry semantic conventions
//! say (`rpc.*.call.duration`, `http.*.request.duration`, seconds).

use opentelemetry::metrics::{Histogram, Meter};

/// The value the semantic conventions prescribe for a method (and Meshlight for a lane) the
/// instrumentation does not know, so that a flood of invented ones stays one series.
pub(crate) const OTHER: &str = "_OTHER";

/// The semantic conventions' advice for request durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Metric names, as exported.
pub mod names {
    /// Duration of gRPC calls a server handled.
    pub const RPC_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
    /// Duration of gRPC calls a client made.
    pub const RPC_CLIENT_CALL_DURATION: &str = "rpc.client.call.duration";
    /// Duration of HTTP requests a server handled.
    pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
    /// Duration of HTTP requests a client made.
    pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
}

#[derive(Debug)]
pub(crate) struct Instruments {
    pub(crate) rpc_server: Histogram<f64>,
    pub(crate) rpc_client: Histogram<f64>,
    pub(crate) http_server: Histogram<f64>,
    pub(crate) http_client: Histogram<f64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        Instruments {
            rpc_server: histogram(
                names::RPC_SERVER_CALL_DURATION,
                "Duration of RPCs handled by the server.",
            ),
            rpc_client: histogram(
                names::RPC_CLIENT_CALL_DURATION,
                "Duration of RPCs made by the client.",
            ),
            http_server: histogram(
                names::HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests.",
            ),
            http_client: histogram(
                names::HTTP_CLIENT_REQUEST_DURATION,
                "Duration of HTTP client requests.",
            ),
        }
    }
}
