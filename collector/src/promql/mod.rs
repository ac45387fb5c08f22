//! PromQL: the `promql-parser` crate's syntax tree evaluated over any [`SeriesSource`].
//!
//! [`Engine::instant`] and [`Engine::range`] first fetch, for every selector in the query,
//! the samples of the whole time span the query can reach (offsets, `@`, ranges and
//! subqueries included), then evaluate step by step in memory. Semantics follow
//! Prometheus 3: left-open selector windows, a 5-minute lookback, staleness markers,
//! extrapolated `rate`, and Prometheus's error types (most messages match too). Native
//! histograms and annotations (warnings and info) are not supported.
//!
//! ```
//! use meshlight_collector::promql::{Engine, Labels, MemoryStorage, Value};
//!
//! let mut storage = MemoryStorage::default();
//! let series = Labels::from_pairs([("__name__", "calls_total"), ("job", "api")]);
//! for minute in 0..=10 {
//!     storage.push(&series, minute * 60_000, (minute * 60) as f64);
//! }
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let value = runtime.block_on(Engine::default().instant(&storage, "rate(calls_total[5m])", 600_000));
//! let Value::Vector(samples) = value.unwrap() else { panic!("a vector") };
//! assert_eq!(samples[0].labels.to_string(), r#"{job="api"}"#);
//! assert!((samples[0].value - 1.0).abs() < 1e-9);
//! ```

mod aggregate;
mod binary;
mod engine;
mod functions;
mod labels;
mod storage;
pub mod test_format;

use std::fmt;

pub use engine::{selector_matchers, selectors, Engine};
pub use labels::{Labels, METRIC_NAME};
pub use storage::{MemoryStorage, Selection, SeriesSource, StoredSeries};

/// Milliseconds since the Unix epoch, Prometheus's timestamp unit.
pub type Millis = i64;

/// The value Prometheus writes when a series ends; never returned by a query.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN.to_bits()
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
    /// When the sample was taken; `timestamp()` reports it, results use the evaluation time.
    pub timestamp: Millis,
}

/// One series of a range vector or of a range query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(Millis, f64)>,
}

/// The result of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

/// Why a query failed, in Prometheus's HTTP API error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query cannot be parsed or its parameters are invalid (HTTP 400).
    BadData,
    /// The query is valid but cannot be evaluated, for example too many samples (HTTP 422).
    Execution,
    /// The query ran past its timeout (HTTP 503).
    Timeout,
    /// The storage failed (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The `errorType` of Prometheus's response envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
}

impl QueryError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::BadData, message: message.into() }
    }

    pub fn execution(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Execution, message: message.into() }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QueryError {}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// A float as Prometheus writes values (Go's `FormatFloat(v, 'f', -1, 64)`): the shortest
/// decimal that reads back the same, `+Inf`, `-Inf` or `NaN`.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}
