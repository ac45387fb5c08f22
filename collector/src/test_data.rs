//! Small OTLP requests for unit tests, built from the wire types.

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use prost::Message as _;

use crate::ingest::envelope::TraceExport;
use crate::ingest::wire::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue,
    KeyValueList, Resource, ResourceSpans, ScopeSpans, Span, SpanEvent, SpanLink, Status,
    any_value::Value,
};
use crate::schema::{Rejections, traces_to_batch};

/// Converts `request` as ingest does: encoded, decoded down to its spans, then converted.
pub(crate) fn convert_traces(request: &ExportTraceServiceRequest, rejections: &mut Rejections) -> Option<RecordBatch> {
    let export = TraceExport::decode(&Bytes::from(request.encode_to_vec())).expect("an encoded request decodes");
    traces_to_batch(&export, rejections).expect("encoded spans decode")
}

/// The `otel_traces` rows of [`sample_traces_request`].
pub(crate) fn sample_traces_batch(spans: u64) -> RecordBatch {
    convert_traces(&sample_traces_request(spans), &mut Rejections::default()).expect("valid spans")
}

pub(crate) fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue { key: Bytes::copy_from_slice(key.as_bytes()), value: Some(AnyValue { value: Some(value) }) }
}

pub(crate) fn string(value: &str) -> Value {
    Value::StringValue(Bytes::copy_from_slice(value.as_bytes()))
}

/// One attribute of every OTLP value type.
pub(crate) fn every_attribute_type() -> Vec<KeyValue> {
    vec![
        attribute("str", string("hello")),
        attribute("int", Value::IntValue(-42)),
        attribute("double", Value::DoubleValue(2.5)),
        attribute("bool", Value::BoolValue(true)),
        attribute("bytes", Value::BytesValue(Bytes::from_static(&[0, 1, 254, 255]))),
        attribute(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(string("a")) },
                    AnyValue { value: Some(Value::IntValue(1)) },
                ],
            }),
        ),
        attribute(
            "kvlist",
            Value::KvlistValue(KeyValueList { values: vec![attribute("nested", Value::BoolValue(false))] }),
        ),
    ]
}

/// A span whose ids derive from `n`, starting at `start` and lasting 1 ms.
pub(crate) fn span(n: u64, start: u64) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&(n + 1).to_be_bytes());
    Span {
        trace_id: Bytes::copy_from_slice(&trace_id),
        span_id: Bytes::copy_from_slice(&(n + 1).to_be_bytes()),
        name: Bytes::from(format!("op-{n}")),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes: every_attribute_type(),
        events: vec![SpanEvent {
            time_unix_nano: start + 10,
            name: Bytes::from_static(b"event"),
            attributes: vec![attribute("k", string("v"))],
            dropped_attributes_count: 1,
        }],
        links: vec![SpanLink {
            trace_id: Bytes::copy_from_slice(&trace_id),
            span_id: Bytes::from_static(&[9; 8]),
            trace_state: Bytes::from_static(b"a=b"),
            attributes: vec![],
            dropped_attributes_count: 0,
            flags: 1,
        }],
        status: Some(Status { message: Bytes::from_static(b"boom"), code: 2 }),
        flags: 0x101,
        ..Span::default()
    }
}

/// A request with `spans` valid spans of service `svc`.
pub(crate) fn sample_traces_request(spans: u64) -> ExportTraceServiceRequest {
    request_with(
        (0..spans).map(|n| span(n, 1_700_000_000_000_000_000 + n)).collect(),
    )
}

pub(crate) fn request_with(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", string("svc"))],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: Bytes::from_static(b"scope"),
                    version: Bytes::from_static(b"1.0"),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: Bytes::from_static(b"https://opentelemetry.io/schemas/1.26.0"),
            }],
            schema_url: Bytes::new(),
        }],
    }
}
