//! OTLP spans → `otel_traces`.

use arrow::array::{
    ListBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;

use super::attributes::{
    AttributesBuilder, Context, ResourceContext, TextRows, append_attributes, append_hex,
    attributes_builder, attributes_builder_for, attributes_list_builder, check_resource,
    check_scope, end_list, is_valid_id, nanos, string_builder, string_list_builder,
    timestamp_builder, timestamp_list_builder, u32_list_builder,
};
use super::{Capacity, Columns as _, RejectReason, Rejections, Table, columns};
use crate::ingest::envelope::TraceExport;
use crate::ingest::protobuf::WireError;
use crate::ingest::span::SpanView;

columns! {
    /// The columns of `otel_traces`. Text whose size a span does not tell gets room for
    /// [`TYPICAL_TEXT`] bytes a row.
    TraceColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        trace_id: StringBuilder = string_builder(capacity.rows, 32) => "TraceId",
        span_id: StringBuilder = string_builder(capacity.rows, 16) => "SpanId",
        parent_span_id: StringBuilder = string_builder(capacity.rows, 16) => "ParentSpanId",
        trace_state: StringBuilder = string_builder(capacity.rows, 0) => "TraceState",
        span_name: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "SpanName",
        span_kind: StringBuilder = string_builder(capacity.rows, "Unspecified".len()) => "SpanKind",
        service_name: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "ServiceName",
        resource_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ResourceAttributes",
        scope_name: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "ScopeName",
        scope_version: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "ScopeVersion",
        span_attributes: AttributesBuilder = attributes_builder_for(capacity) => "SpanAttributes",
        duration: UInt64Builder = UInt64Builder::with_capacity(capacity.rows) => "Duration",
        status_code: StringBuilder = string_builder(capacity.rows, "Error".len()) => "StatusCode",
        status_message: StringBuilder = string_builder(capacity.rows, 0) => "StatusMessage",
        events_timestamp: ListBuilder<TimestampNanosecondBuilder> = timestamp_list_builder(capacity.rows) => "Events.Timestamp",
        events_name: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Events.Name",
        events_attributes: ListBuilder<AttributesBuilder> = attributes_list_builder(capacity.rows) => "Events.Attributes",
        links_trace_id: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Links.TraceId",
        links_span_id: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Links.SpanId",
        links_trace_state: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Links.TraceState",
        links_attributes: ListBuilder<AttributesBuilder> = attributes_list_builder(capacity.rows) => "Links.Attributes",
        // Meshlight additions to the exporter's schema.
        trace_flags: UInt32Builder = UInt32Builder::with_capacity(capacity.rows) => "TraceFlags",
        resource_schema_url: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "ResourceSchemaUrl",
        scope_schema_url: StringBuilder = string_builder(capacity.rows, TYPICAL_TEXT) => "ScopeSchemaUrl",
        scope_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ScopeAttributes",
        dropped_attributes_count: UInt32Builder = UInt32Builder::with_capacity(capacity.rows) => "DroppedAttributesCount",
        dropped_events_count: UInt32Builder = UInt32Builder::with_capacity(capacity.rows) => "DroppedEventsCount",
        dropped_links_count: UInt32Builder = UInt32Builder::with_capacity(capacity.rows) => "DroppedLinksCount",
        events_dropped_attributes_count: ListBuilder<UInt32Builder> = u32_list_builder(capacity.rows) => "Events.DroppedAttributesCount",
        links_flags: ListBuilder<UInt32Builder> = u32_list_builder(capacity.rows) => "Links.Flags",
        links_dropped_attributes_count: ListBuilder<UInt32Builder> = u32_list_builder(capacity.rows) => "Links.DroppedAttributesCount",
        resource_id: UInt64Builder = UInt64Builder::with_capacity(capacity.rows) => "ResourceId",
    }
}

/// Bytes a row of a name or URL column gets room for: the columns grow if their text is
/// longer.
const TYPICAL_TEXT: usize = 16;

impl TraceColumns {
    /// Appends one span; `rows` checks its text.
    fn append(&mut self, context: &Context<'_>, span: &SpanView<'_>, start: i64, rows: &mut TextRows, scratch: &mut String) {
        self.timestamp.append_value(start);
        append_hex(&mut self.trace_id, span.trace_id);
        append_hex(&mut self.span_id, span.span_id);
        append_hex(&mut self.parent_span_id, span.parent_span_id);
        self.trace_state.append_value(rows.text(span.trace_state));
        self.span_name.append_value(rows.text(span.name));
        self.span_kind.append_value(span_kind_name(span.kind));
        self.service_name.append_value(&context.resource.service_name);
        let holds_resource = context.resource.append_to(&mut self.resource_id, &mut self.resource_attributes);
        self.scope_name.append_value(context.scope_name);
        self.scope_version.append_value(context.scope_version);
        append_attributes(&mut self.span_attributes, &span.attributes, rows, scratch);
        self.duration.append_value(span.end_time_unix_nano - span.start_time_unix_nano);
        self.status_code.append_value(status_code_name(span.status_code));
        self.status_message.append_value(rows.text(span.status_message));

        for event in &span.events {
            // Event times were range-checked by `check_span`.
            self.events_timestamp.values().append_value(nanos(event.time_unix_nano).unwrap_or(0));
            self.events_name.values().append_value(rows.text(event.name));
            let attributes = span.nested_attributes(&event.attributes);
            append_attributes(self.events_attributes.values(), attributes, rows, scratch);
            self.events_dropped_attributes_count.values().append_value(event.dropped_attributes_count);
        }
        end_list(&mut self.events_timestamp);
        end_list(&mut self.events_name);
        end_list(&mut self.events_attributes);
        end_list(&mut self.events_dropped_attributes_count);

        for link in &span.links {
            append_hex(self.links_trace_id.values(), link.trace_id);
            append_hex(self.links_span_id.values(), link.span_id);
            self.links_trace_state.values().append_value(rows.text(link.trace_state));
            let attributes = span.nested_attributes(&link.attributes);
            append_attributes(self.links_attributes.values(), attributes, rows, scratch);
            self.links_flags.values().append_value(link.flags);
            self.links_dropped_attributes_count.values().append_value(link.dropped_attributes_count);
        }
        end_list(&mut self.links_trace_id);
        end_list(&mut self.links_span_id);
        end_list(&mut self.links_trace_state);
        end_list(&mut self.links_attributes);
        end_list(&mut self.links_flags);
        end_list(&mut self.links_dropped_attributes_count);

        self.trace_flags.append_value(span.flags);
        self.resource_schema_url.append_value(context.resource.schema_url);
        self.scope_schema_url.append_value(context.scope_schema_url);
        context.scope_attributes.append_to(&mut self.scope_attributes);
        self.dropped_attributes_count.append_value(span.dropped_attributes_count);
        self.dropped_events_count.append_value(span.dropped_events_count);
        self.dropped_links_count.append_value(span.dropped_links_count);
        context.resource.end_row(holds_resource, rows.end_row());
    }
}

/// Converts the valid spans of a request into one `otel_traces` batch; invalid spans are
/// counted in `rejections` and left out. Returns `None` when no span was valid, and an
/// error when a span is not valid protobuf.
pub fn traces_to_batch(
    request: &TraceExport,
    rejections: &mut Rejections,
) -> Result<Option<RecordBatch>, WireError> {
    let scopes = || request.resource_spans.iter().flat_map(|resource| &resource.scope_spans);
    let mut columns = TraceColumns::with_capacity(Capacity {
        rows: scopes().map(|scope| scope.spans.len()).sum(),
        encoded_bytes: scopes().flat_map(|scope| &scope.spans).map(|span| span.len()).sum(),
    });
    let mut rows = TextRows::default();
    let mut scratch = String::new();
    let mut span = SpanView::default();
    for resource_spans in &request.resource_spans {
        if let Err(reason) = check_resource(resource_spans.resource.as_ref(), &resource_spans.schema_url) {
            rejections.add(reason, resource_spans.scope_spans.iter().map(|s| s.spans.len() as u64).sum());
            continue;
        }
        let resource = ResourceContext::new(resource_spans.resource.as_ref(), &resource_spans.schema_url);
        for scope_spans in &resource_spans.scope_spans {
            if let Err(reason) = check_scope(scope_spans.scope.as_ref(), &scope_spans.schema_url) {
                rejections.add(reason, scope_spans.spans.len() as u64);
                continue;
            }
            let context = Context::new(&resource, scope_spans.scope.as_ref(), &scope_spans.schema_url);
            for encoded in &scope_spans.spans {
                span.decode(encoded)?;
                match check_span(&span) {
                    Ok(start) => columns.append(&context, &span, start, &mut rows, &mut scratch),
                    Err(reason) => rejections.add(reason, 1),
                }
            }
        }
    }
    Ok(rows.finish(Table::Traces, columns.finish_arrays(), rejections))
}

/// Validates a span but for its text, which `TextRows` checks as the span is appended;
/// returns its start time as stored.
fn check_span(span: &SpanView<'_>) -> Result<i64, RejectReason> {
    if !is_valid_id(span.trace_id, 16) {
        return Err(RejectReason::InvalidTraceId);
    }
    let parent_ok = span.parent_span_id.is_empty() || is_valid_id(span.parent_span_id, 8);
    if !is_valid_id(span.span_id, 8) || !parent_ok {
        return Err(RejectReason::InvalidSpanId);
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(RejectReason::EndBeforeStart);
    }
    let links_ok = span
        .links
        .iter()
        .all(|link| is_valid_id(link.trace_id, 16) && is_valid_id(link.span_id, 8));
    if !links_ok {
        return Err(RejectReason::InvalidSpanId);
    }
    let times_ok = nanos(span.end_time_unix_nano).is_some()
        && span.events.iter().all(|e| nanos(e.time_unix_nano).is_some());
    let start = nanos(span.start_time_unix_nano);
    match start {
        Some(start) if times_ok => Ok(start),
        _ => Err(RejectReason::TimestampOutOfRange),
    }
}

/// The exporter's names for `Span.SpanKind` (Collector `traceutil.SpanKindStr`).
fn span_kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

/// The exporter's names for `Status.StatusCode` (Collector `traceutil.StatusCodeStr`).
fn status_code_name(code: i32) -> &'static str {
    match code {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, MapArray};
    use arrow::datatypes::{TimestampNanosecondType, UInt64Type};
    use bytes::Bytes;

    use super::*;
    use crate::ingest::wire::{KeyValue, Span};
    use crate::test_data::{convert_traces, request_with, sample_traces_request, span};

    fn map_row(map: &MapArray, row: usize) -> Vec<(String, String)> {
        let entries = map.value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        (0..entries.len()).map(|i| (keys.value(i).to_owned(), values.value(i).to_owned())).collect()
    }

    #[test]
    fn spans_keep_ids_times_and_every_attribute_value() {
        let mut rejections = Rejections::default();
        let batch = convert_traces(&sample_traces_request(2), &mut rejections).expect("rows");
        assert_eq!(rejections.total(), 0);
        assert_eq!(batch.num_rows(), 2);
        let column = |name: &str| batch.column_by_name(name).expect(name).clone();
        assert_eq!(column("TraceId").as_string::<i32>().value(1), "00000000000000000000000000000002");
        assert_eq!(column("SpanId").as_string::<i32>().value(1), "0000000000000002");
        assert_eq!(column("ParentSpanId").as_string::<i32>().value(0), "");
        assert_eq!(
            column("Timestamp").as_primitive::<TimestampNanosecondType>().value(1),
            1_700_000_000_000_000_001
        );
        assert_eq!(column("Duration").as_primitive::<UInt64Type>().value(0), 1_000_000);
        assert_eq!(column("SpanKind").as_string::<i32>().value(0), "Server");
        assert_eq!(column("StatusCode").as_string::<i32>().value(0), "Error");
        assert_eq!(column("ServiceName").as_string::<i32>().value(0), "svc");
        let attributes = map_row(column("SpanAttributes").as_map(), 0);
        let expected = [
            ("str", "hello"),
            ("int", "-42"),
            ("double", "2.5"),
            ("bool", "true"),
            ("bytes", "AAH+/w=="),
            ("array", r#"["a",1]"#),
            ("kvlist", r#"{"nested":false}"#),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(attributes, expected);
        let links = column("Links.TraceState");
        assert_eq!(links.as_list::<i32>().value(0).as_string::<i32>().value(0), "a=b");
    }

    #[test]
    fn invalid_spans_are_rejected_one_by_one() {
        let valid = span(1, 1_000);
        let mut zero_trace = span(2, 1_000);
        zero_trace.trace_id = Bytes::from_static(&[0; 16]);
        let mut short_span_id = span(3, 1_000);
        short_span_id.span_id = Bytes::from_static(&[1; 4]);
        let mut backwards = span(4, 1_000);
        backwards.end_time_unix_nano = 10;
        let mut bad_utf8 = span(5, 1_000);
        bad_utf8.name = Bytes::from_static(&[0xff, 0xfe]);
        let mut bad_attribute = span(6, 1_000);
        bad_attribute.attributes.push(crate::test_data::attribute(
            "k",
            crate::ingest::wire::any_value::Value::StringValue(Bytes::from_static(&[0xc3, 0x28])),
        ));
        let request = request_with(vec![valid, zero_trace, short_span_id, backwards, bad_utf8, bad_attribute]);

        let mut rejections = Rejections::default();
        let batch = convert_traces(&request, &mut rejections).expect("the valid span");
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(rejections.total(), 5);
        let reasons: Vec<_> = rejections.by_reason().collect();
        assert_eq!(
            reasons,
            vec![
                (RejectReason::InvalidTraceId, 1),
                (RejectReason::InvalidSpanId, 1),
                (RejectReason::EndBeforeStart, 1),
                (RejectReason::InvalidUtf8, 2),
            ]
        );
        assert!(rejections.message().contains("invalid_utf8"));
    }

    #[test]
    fn invalid_text_anywhere_in_a_span_rejects_it() {
        use crate::ingest::wire::any_value::Value;
        use crate::ingest::wire::{AnyValue, ArrayValue, KeyValueList};
        use crate::test_data::{attribute, string};

        let invalid = || Bytes::from_static(&[0xff, 0xfe]);
        let invalid_string = || AnyValue { value: Some(Value::StringValue(invalid())) };
        let mut spans: Vec<Span> = Vec::new();
        let mut with = |change: &dyn Fn(&mut Span)| {
            let mut span = span(spans.len() as u64 + 2, 1_000);
            change(&mut span);
            spans.push(span);
        };
        with(&|span| span.trace_state = invalid());
        with(&|span| span.status.as_mut().expect("a status").message = invalid());
        with(&|span| span.events[0].name = invalid());
        with(&|span| span.events[0].attributes[0].key = invalid());
        with(&|span| span.links[0].trace_state = invalid());
        with(&|span| span.links[0].attributes = vec![KeyValue { key: Bytes::from_static(b"k"), value: Some(invalid_string()) }]);
        // Nested values, decoded by prost: an array's item, a key-value list's key.
        with(&|span| span.attributes.push(attribute("array", Value::ArrayValue(ArrayValue { values: vec![invalid_string()] }))));
        with(&|span| {
            let list = KeyValueList { values: vec![KeyValue { key: invalid(), value: None }] };
            span.attributes.push(attribute("list", Value::KvlistValue(list)));
        });
        let invalid_spans = spans.len() as u64;
        spans.push(span(1, 1_000));
        spans[invalid_spans as usize].attributes.push(attribute("valid", string("é")));

        let mut rejections = Rejections::default();
        let batch = convert_traces(&request_with(spans), &mut rejections).expect("the valid span");
        assert_eq!(rejections.by_reason().collect::<Vec<_>>(), [(RejectReason::InvalidUtf8, invalid_spans)]);
        let span_ids = batch.column_by_name("SpanId").expect("SpanId").as_string::<i32>();
        assert_eq!(span_ids.iter().collect::<Vec<_>>(), [Some("0000000000000002")]);
    }

    #[test]
    fn invalid_text_in_a_resource_or_scope_rejects_the_spans_under_it() {
        let invalid = || Bytes::from_static(&[0xff, 0xfe]);
        let mut request = request_with(vec![span(1, 1_000), span(2, 1_000)]);
        let mut valid_resource = request.resource_spans[0].clone();
        // The first resource holds invalid text: both its scopes' spans are rejected.
        let mut second_scope = request.resource_spans[0].scope_spans[0].clone();
        second_scope.spans = vec![span(3, 1_000)];
        request.resource_spans[0].scope_spans.push(second_scope);
        request.resource_spans[0].schema_url = invalid();
        // The second resource is valid, but the first of its scopes is not.
        let mut valid_scope = valid_resource.scope_spans[0].clone();
        valid_scope.spans = vec![span(4, 1_000)];
        if let Some(scope) = valid_resource.scope_spans[0].scope.as_mut() {
            scope.name = invalid();
        }
        valid_resource.scope_spans.push(valid_scope);
        request.resource_spans.push(valid_resource);

        let mut rejections = Rejections::default();
        let batch = convert_traces(&request, &mut rejections).expect("the span of the valid scope");
        assert_eq!(rejections.by_reason().collect::<Vec<_>>(), [(RejectReason::InvalidUtf8, 5)]);
        let span_ids = batch.column_by_name("SpanId").expect("SpanId").as_string::<i32>();
        assert_eq!(span_ids.iter().collect::<Vec<_>>(), [Some("0000000000000005")]);
    }

    #[test]
    fn converted_batches_hold_no_spare_capacity() {
        use prost::Message as _;

        use crate::loadgen::{RequestPool, Shape};

        let pool = RequestPool::generate(Shape::Mesh, 7, 1, 500, 1_700_000_000_000_000_000);
        let encoded = Bytes::from(pool.requests()[0].encode_to_vec());
        let export = TraceExport::decode(&encoded).expect("an encoded request decodes");
        let batch = traces_to_batch(&export, &mut Rejections::default()).expect("spans decode").expect("rows");
        let held = batch.get_array_memory_size();
        let (_, columns, _) = batch.into_parts();
        let mut needed = 0;
        for mut column in columns {
            std::sync::Arc::get_mut(&mut column).expect("a batch's own column").shrink_to_fit();
            needed += column.get_array_memory_size();
        }
        assert_eq!(held, needed);
    }
}
