//! The spec shape: the span of the OpenTelemetry specification's performance benchmark
//! (<https://opentelemetry.io/docs/specs/otel/performance-benchmark/>).
//!
//! One service, one scope, one span per trace, and on every span exactly 10 string
//! attributes whose keys and values are 20 characters long. Keys are fixed; values are
//! fresh random `[a-z0-9]` strings, so their cardinality is unbounded (the pessimistic case
//! for dictionary encoding).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::Rng;
use rand::rngs::StdRng;

use super::{attributes, random};

/// Attributes per span.
const ATTRIBUTES_PER_SPAN: usize = 10;

/// Length of every attribute key and value.
const ATTRIBUTE_LENGTH: usize = 20;

/// The service all spans belong to.
const SERVICE_NAME: &str = "spec-benchmark";

const SPAN_NAME: &str = "benchmark-operation";

/// Median span duration.
const SPAN_MEDIAN_MS: f64 = 1.0;

/// Spans end within this window before the caller's "now".
const PLACEMENT_WINDOW_NANOS: u64 = 1_000_000_000;

/// The fixed resource, scope and attribute keys of the spec shape.
#[derive(Debug)]
pub(super) struct SpecModel {
    resource: Resource,
    scope: InstrumentationScope,
    attribute_keys: Vec<String>,
}

impl SpecModel {
    pub(super) fn new() -> Self {
        // "benchmark.attr.key.N" is exactly 20 characters for N in 0..10.
        let attribute_keys: Vec<String> = (0..ATTRIBUTES_PER_SPAN)
            .map(|index| format!("benchmark.attr.key.{index}"))
            .collect();
        debug_assert!(
            attribute_keys
                .iter()
                .all(|key| key.len() == ATTRIBUTE_LENGTH)
        );
        SpecModel {
            resource: Resource {
                attributes: vec![
                    attributes::string("service.name", SERVICE_NAME),
                    attributes::string("telemetry.sdk.name", "opentelemetry"),
                    attributes::string("telemetry.sdk.language", "rust"),
                    attributes::string("telemetry.sdk.version", "0.29.0"),
                ],
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "meshlight-loadgen".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            },
            attribute_keys,
        }
    }

    /// Exactly `spans` single-span traces in one resource and scope.
    pub(super) fn request(
        &self,
        rng: &mut StdRng,
        spans: usize,
        now_unix_nanos: u64,
    ) -> ExportTraceServiceRequest {
        let spans = (0..spans).map(|_| self.span(rng, now_unix_nanos)).collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(self.scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn span(&self, rng: &mut StdRng, now_unix_nanos: u64) -> Span {
        let duration = random::log_normal_nanos(rng, SPAN_MEDIAN_MS, 0.5);
        let end = now_unix_nanos.saturating_sub(rng.random_range(0..PLACEMENT_WINDOW_NANOS));
        let attributes = self
            .attribute_keys
            .iter()
            .map(|key| attributes::string(key, random::alphanumeric(rng, ATTRIBUTE_LENGTH)))
            .collect();
        Span {
            trace_id: random::trace_id(rng),
            span_id: random::span_id(rng),
            name: SPAN_NAME.to_owned(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: end.saturating_sub(duration),
            end_time_unix_nano: end,
            attributes,
            status: Some(Status::default()),
            ..Default::default()
        }
    }
}
