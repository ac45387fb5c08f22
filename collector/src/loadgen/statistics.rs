//! What a set of generated requests contains: used by `meshlight-loadgen --describe` to check
//! the data set against its documented shape, and by benchmarks for bytes per span.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;

use super::attributes;

/// Counts over a set of requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStatistics {
    /// Requests counted.
    pub requests: usize,
    /// Spans in all requests.
    pub spans: u64,
    /// Distinct trace ids.
    pub traces: usize,
    /// Fewest spans sharing a trace id.
    pub min_spans_per_trace: usize,
    /// Most spans sharing a trace id.
    pub max_spans_per_trace: usize,
    /// Spans with status code Error.
    pub error_spans: u64,
    /// Spans with at least one event.
    pub spans_with_events: u64,
    /// Spans with at least one link.
    pub spans_with_links: u64,
    /// Span attributes over all spans.
    pub span_attributes: u64,
    /// `ResourceSpans` entries over all requests.
    pub resource_spans: usize,
    /// Distinct `service.name` resource attribute values.
    pub services: usize,
    /// Distinct (service, span name) pairs.
    pub operations: usize,
    /// Sum of the protobuf-encoded request sizes.
    pub encoded_bytes: u64,
}

impl RequestStatistics {
    /// Counts over `requests`.
    pub fn from_requests(requests: &[ExportTraceServiceRequest]) -> Self {
        let mut statistics = RequestStatistics {
            requests: requests.len(),
            ..Default::default()
        };
        let mut spans_per_trace: HashMap<&[u8], usize> = HashMap::new();
        let mut services = BTreeSet::new();
        let mut operations = BTreeSet::new();
        for request in requests {
            statistics.encoded_bytes += request.encoded_len() as u64;
            statistics.resource_spans += request.resource_spans.len();
            for resource_spans in &request.resource_spans {
                let resource_attributes = resource_spans
                    .resource
                    .as_ref()
                    .map_or(&[][..], |resource| &resource.attributes[..]);
                let service =
                    attributes::find_string(resource_attributes, "service.name").unwrap_or("");
                services.insert(service);
                for span in resource_spans
                    .scope_spans
                    .iter()
                    .flat_map(|scope_spans| &scope_spans.spans)
                {
                    statistics.spans += 1;
                    *spans_per_trace.entry(span.trace_id.as_slice()).or_default() += 1;
                    operations.insert((service, span.name.as_str()));
                    let is_error = span
                        .status
                        .as_ref()
                        .is_some_and(|status| status.code == StatusCode::Error as i32);
                    statistics.error_spans += u64::from(is_error);
                    statistics.spans_with_events += u64::from(!span.events.is_empty());
                    statistics.spans_with_links += u64::from(!span.links.is_empty());
                    statistics.span_attributes += span.attributes.len() as u64;
                }
            }
        }
        statistics.traces = spans_per_trace.len();
        statistics.min_spans_per_trace = spans_per_trace.values().copied().min().unwrap_or(0);
        statistics.max_spans_per_trace = spans_per_trace.values().copied().max().unwrap_or(0);
        statistics.services = services.len();
        statistics.operations = operations.len();
        statistics
    }

    /// Mean spans per trace.
    pub fn mean_spans_per_trace(&self) -> f64 {
        ratio(self.spans as f64, self.traces as f64)
    }

    /// Fraction of spans with status Error.
    pub fn error_fraction(&self) -> f64 {
        ratio(self.error_spans as f64, self.spans as f64)
    }

    /// Mean attributes per span.
    pub fn mean_attributes_per_span(&self) -> f64 {
        ratio(self.span_attributes as f64, self.spans as f64)
    }

    /// Mean protobuf bytes per span (resource and scope overhead included).
    pub fn encoded_bytes_per_span(&self) -> f64 {
        ratio(self.encoded_bytes as f64, self.spans as f64)
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl fmt::Display for RequestStatistics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "requests              {}", self.requests)?;
        writeln!(formatter, "spans                 {}", self.spans)?;
        writeln!(
            formatter,
            "traces                {} (spans per trace: min {}, mean {:.1}, max {})",
            self.traces,
            self.min_spans_per_trace,
            self.mean_spans_per_trace(),
            self.max_spans_per_trace
        )?;
        writeln!(formatter, "services              {}", self.services)?;
        writeln!(formatter, "operations seen       {}", self.operations)?;
        writeln!(formatter, "resource spans        {}", self.resource_spans)?;
        writeln!(
            formatter,
            "error spans           {} ({:.2} %)",
            self.error_spans,
            100.0 * self.error_fraction()
        )?;
        writeln!(
            formatter,
            "spans with events     {}",
            self.spans_with_events
        )?;
        writeln!(formatter, "spans with links      {}", self.spans_with_links)?;
        writeln!(
            formatter,
            "attributes per span   {:.2}",
            self.mean_attributes_per_span()
        )?;
        write!(
            formatter,
            "encoded bytes         {} ({:.1} per span)",
            self.encoded_bytes,
            self.encoded_bytes_per_span()
        )
    }
}
