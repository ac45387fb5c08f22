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
/// decimal that reads back the same, never with an exponent, or `+Inf`, `-Inf`, `NaN`.
pub fn format_value(value: f64) -> String {
    let mut text = String::new();
    write_value(&mut text, value);
    text
}

/// Appends [`format_value`]'s text to `out`. A range query writes millions of values, so
/// this takes the shortest digits from `ryu` and places the decimal point itself rather than
/// going through `fmt`.
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        return out.push_str("NaN");
    }
    if value.is_infinite() {
        return out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    }
    let mut shortest = ryu::Buffer::new();
    let shortest = shortest.format_finite(value);
    let (negative, unsigned) = match shortest.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, shortest),
    };
    let (mantissa, exponent) = match unsigned.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The value is 0.<digits> × 10^point.
    let mut point = whole.len() as i32 + exponent;
    // ryu writes at most 17 significant digits and 24 characters.
    let mut buffer = [0u8; 32];
    let length = whole.len() + fraction.len();
    buffer[..whole.len()].copy_from_slice(whole.as_bytes());
    buffer[whole.len()..length].copy_from_slice(fraction.as_bytes());
    let digits = &buffer[..length];
    let leading_zeros = digits.iter().take_while(|digit| **digit == b'0').count();
    let trailing_zeros = digits[leading_zeros..].iter().rev().take_while(|digit| **digit == b'0').count();
    let digits = &digits[leading_zeros..length - trailing_zeros];
    point -= leading_zeros as i32;
    if negative {
        out.push('-');
    }
    let zeros = |out: &mut String, count: i32| out.extend(std::iter::repeat_n('0', count.max(0) as usize));
    let digits = std::str::from_utf8(digits).unwrap_or_default();
    if digits.is_empty() {
        out.push('0');
    } else if point <= 0 {
        out.push_str("0.");
        zeros(out, -point);
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        zeros(out, point - digits.len() as i32);
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_go_writes_them() {
        let written = [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.25, "0.25"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (f64::NEG_INFINITY, "-Inf"),
            // Halfway between two shortest candidates, Go rounds to even (Rust's `Display`
            // writes 1658206780088562.3).
            (f64::from_bits(0x4317_9085_685d_83c9), "1658206780088562.2"),
        ];
        for (value, text) in written {
            assert_eq!(format_value(value), text);
        }
        // Otherwise the text reads back as the value and is as short as `Display`'s.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let value = f64::from_bits(bits);
            if value.is_finite() {
                let text = format_value(value);
                assert_eq!(text.parse::<f64>(), Ok(value), "{bits:#x}");
                assert_eq!(text.len(), format!("{value}").len(), "{bits:#x}");
            }
        }
    }
}
