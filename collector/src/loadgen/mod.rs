//! Synthetic OTLP trace load: generators for realistic and benchmark-shaped traces, and a
//! gRPC driver that sends them to a collector at a controlled rate.
//!
//! Two shapes are available (see [`Shape`]):
//! - **mesh**: traces of 5–50 spans walking a 20-service topology with current and legacy
//!   semantic-convention attributes drawn from documented cardinalities (the table is in
//!   the `dataset` module's source), log-normal latencies, ~2 % error spans and exception
//!   events;
//! - **spec**: the OpenTelemetry specification benchmark span, 10 attributes with 20-character
//!   keys and values, one span per trace.
//!
//! Generation is deterministic for a given seed and "now", so runs can be repeated.
//! The `meshlight-loadgen` binary and the `ingest` benchmark are built on this module.
//!
//! ```
//! use meshlight_collector::loadgen::{Generator, RequestStatistics, Shape};
//!
//! let now_unix_nanos = 1_700_000_000_000_000_000;
//! let mut generator = Generator::new(Shape::Mesh, 1);
//! let request = generator.request(500, now_unix_nanos);
//!
//! let statistics = RequestStatistics::from_requests(std::slice::from_ref(&request));
//! assert!(statistics.spans >= 500);
//! assert!(statistics.max_spans_per_trace <= 50);
//! ```

mod attributes;
mod dataset;
mod driver;
mod mesh;
mod pool;
mod random;
mod spec;
mod statistics;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use driver::{
    DriverConfig, DriverError, LatencySummary, LoadReport, Refusals, StopCondition, per_second,
    send_load,
};
pub use pool::{RequestPool, rekey_and_shift};
pub use statistics::RequestStatistics;

/// The kind of traces a [`Generator`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Realistic service-mesh traces (5–50 spans, 20 services, ~200 operations).
    Mesh,
    /// OpenTelemetry specification benchmark spans (10 × 20-character attributes).
    Spec,
}

impl Shape {
    /// Every shape, in the order benchmarks report them.
    pub const ALL: [Shape; 2] = [Shape::Spec, Shape::Mesh];

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Mesh => "mesh",
            Shape::Spec => "spec",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A shape name that is neither `mesh` nor `spec`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown shape {0:?}, expected \"mesh\" or \"spec\"")]
pub struct UnknownShape(String);

impl FromStr for Shape {
    type Err = UnknownShape;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "mesh" => Ok(Shape::Mesh),
            "spec" => Ok(Shape::Spec),
            other => Err(UnknownShape(other.to_owned())),
        }
    }
}

enum Model {
    Mesh(mesh::MeshModel),
    Spec(spec::SpecModel),
}

/// Generates OTLP trace export requests of one [`Shape`] from a seeded RNG.
pub struct Generator {
    model: Model,
    rng: StdRng,
}

impl fmt::Debug for Generator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Generator")
            .field("shape", &self.shape())
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator of `shape` traces; the same seed yields the same requests.
    pub fn new(shape: Shape, seed: u64) -> Self {
        let model = match shape {
            Shape::Mesh => Model::Mesh(mesh::MeshModel::new()),
            Shape::Spec => Model::Spec(spec::SpecModel::new()),
        };
        Generator {
            model,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The shape this generator produces.
    pub fn shape(&self) -> Shape {
        match self.model {
            Model::Mesh(_) => Shape::Mesh,
            Model::Spec(_) => Shape::Spec,
        }
    }

    /// Number of services spans are spread over.
    pub fn service_count(&self) -> usize {
        match &self.model {
            Model::Mesh(model) => model.service_count(),
            Model::Spec(_) => 1,
        }
    }

    /// Number of distinct (service, span name) pairs this shape can produce.
    pub fn operation_count(&self) -> usize {
        match &self.model {
            Model::Mesh(model) => model.operation_count(),
            Model::Spec(_) => 1,
        }
    }

    /// A request with about `spans` spans ending shortly before `now_unix_nanos`.
    ///
    /// Spec requests hold exactly `spans` spans. Mesh requests hold whole traces, so they
    /// hold at least `spans` and fewer than `spans + 50` spans; spans are grouped into one
    /// `ResourceSpans` per pod and one `ScopeSpans` per instrumentation library.
    pub fn request(&mut self, spans: usize, now_unix_nanos: u64) -> ExportTraceServiceRequest {
        match &self.model {
            Model::Mesh(model) => model.request(&mut self.rng, spans, now_unix_nanos),
            Model::Spec(model) => model.request(&mut self.rng, spans, now_unix_nanos),
        }
    }
}

/// Number of spans in `request`.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum()
}

/// The wall clock as nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_nanos_now() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}
