//! OTLP log records → `otel_logs`.

use arrow::array::{Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder};
use arrow::record_batch::RecordBatch;

use super::attributes::{
    AttributesBuilder, Context, ResourceContext, TextRows, append_attributes, append_hex,
    attributes_builder, check_resource, check_scope, is_valid_optional_id, nanos,
    timestamp_builder,
};
use super::{Capacity, Columns as _, RejectReason, Rejections, Table, columns};
use crate::ingest::wire::{ExportLogsServiceRequest, LogRecord};

columns! {
    /// The columns of `otel_logs`.
    LogColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        observed_timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "ObservedTimestamp",
        trace_id: StringBuilder = StringBuilder::new() => "TraceId",
        span_id: StringBuilder = StringBuilder::new() => "SpanId",
        trace_flags: UInt32Builder = UInt32Builder::new() => "TraceFlags",
        severity_text: StringBuilder = StringBuilder::new() => "SeverityText",
        severity_number: Int32Builder = Int32Builder::new() => "SeverityNumber",
        service_name: StringBuilder = StringBuilder::new() => "ServiceName",
        body: StringBuilder = StringBuilder::new() => "Body",
        event_name: StringBuilder = StringBuilder::new() => "EventName",
        resource_schema_url: StringBuilder = StringBuilder::new() => "ResourceSchemaUrl",
        resource_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ResourceAttributes",
        scope_schema_url: StringBuilder = StringBuilder::new() => "ScopeSchemaUrl",
        scope_name: StringBuilder = StringBuilder::new() => "ScopeName",
        scope_version: StringBuilder = StringBuilder::new() => "ScopeVersion",
        scope_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ScopeAttributes",
        log_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "LogAttributes",
        dropped_attributes_count: UInt32Builder = UInt32Builder::new() => "DroppedAttributesCount",
        resource_id: UInt64Builder = UInt64Builder::new() => "ResourceId",
    }
}

impl LogColumns {
    /// Appends one log record; `rows` checks its text.
    fn append(
        &mut self,
        context: &Context<'_>,
        record: &LogRecord,
        times: (i64, i64),
        rows: &mut TextRows,
        scratch: &mut String,
    ) {
        let (timestamp, observed) = times;
        self.timestamp.append_value(timestamp);
        self.observed_timestamp.append_value(observed);
        append_hex(&mut self.trace_id, &record.trace_id);
        append_hex(&mut self.span_id, &record.span_id);
        self.trace_flags.append_value(record.flags);
        self.severity_text.append_value(rows.text(&record.severity_text));
        self.severity_number.append_value(record.severity_number);
        self.service_name.append_value(&context.resource.service_name);
        self.body.append_value(rows.value(record.body.as_ref(), scratch));
        self.event_name.append_value(rows.text(&record.event_name));
        self.resource_schema_url.append_value(context.resource.schema_url);
        let holds_resource = context.resource.append_to(&mut self.resource_id, &mut self.resource_attributes);
        self.scope_schema_url.append_value(context.scope_schema_url);
        self.scope_name.append_value(context.scope_name);
        self.scope_version.append_value(context.scope_version);
        context.scope_attributes.append_to(&mut self.scope_attributes);
        append_attributes(&mut self.log_attributes, &record.attributes, rows, scratch);
        self.dropped_attributes_count.append_value(record.dropped_attributes_count);
        context.resource.end_row(holds_resource, rows.end_row());
    }
}

/// Converts the valid log records of a request into one `otel_logs` batch.
pub fn logs_to_batch(
    request: &ExportLogsServiceRequest,
    rejections: &mut Rejections,
) -> Option<RecordBatch> {
    let mut columns = LogColumns::default();
    let mut rows = TextRows::default();
    let mut scratch = String::new();
    for resource_logs in &request.resource_logs {
        if let Err(reason) = check_resource(resource_logs.resource.as_ref(), &resource_logs.schema_url) {
            rejections.add(reason, resource_logs.scope_logs.iter().map(|s| s.log_records.len() as u64).sum());
            continue;
        }
        let resource = ResourceContext::new(resource_logs.resource.as_ref(), &resource_logs.schema_url);
        for scope_logs in &resource_logs.scope_logs {
            if let Err(reason) = check_scope(scope_logs.scope.as_ref(), &scope_logs.schema_url) {
                rejections.add(reason, scope_logs.log_records.len() as u64);
                continue;
            }
            let context = Context::new(&resource, scope_logs.scope.as_ref(), &scope_logs.schema_url);
            for record in &scope_logs.log_records {
                match check_log(record) {
                    Ok(times) => columns.append(&context, record, times, &mut rows, &mut scratch),
                    Err(reason) => rejections.add(reason, 1),
                }
            }
        }
    }
    rows.finish(Table::Logs, columns.finish_arrays(), rejections)
}

/// Validates a log record but for its text, which `TextRows` checks as the record is
/// appended; returns (timestamp, observed timestamp) as stored. A record
/// without a timestamp is stored at its observed time, as the ClickHouse exporter does.
fn check_log(record: &LogRecord) -> Result<(i64, i64), RejectReason> {
    if !is_valid_optional_id(&record.trace_id, 16) {
        return Err(RejectReason::InvalidTraceId);
    }
    if !is_valid_optional_id(&record.span_id, 8) {
        return Err(RejectReason::InvalidSpanId);
    }
    let event_time = if record.time_unix_nano == 0 {
        record.observed_time_unix_nano
    } else {
        record.time_unix_nano
    };
    match (nanos(event_time), nanos(record.observed_time_unix_nano)) {
        (Some(timestamp), Some(observed)) => Ok((timestamp, observed)),
        _ => Err(RejectReason::TimestampOutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use bytes::Bytes;

    use super::*;
    use crate::ingest::wire::any_value::Value;
    use crate::ingest::wire::{AnyValue, ArrayValue, KeyValue, ResourceLogs, ScopeLogs};
    use crate::test_data::{attribute, string};

    fn record(body: Value) -> LogRecord {
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            body: Some(AnyValue { value: Some(body) }),
            ..LogRecord::default()
        }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        let scope_logs = vec![ScopeLogs { log_records: records, ..ScopeLogs::default() }];
        ExportLogsServiceRequest { resource_logs: vec![ResourceLogs { scope_logs, ..ResourceLogs::default() }] }
    }

    #[test]
    fn records_with_invalid_text_anywhere_are_rejected_and_the_others_stored() {
        let invalid = || Value::StringValue(Bytes::from_static(&[0xc3, 0x28]));
        let mut in_an_array = record(string("rejected"));
        let array = ArrayValue { values: vec![AnyValue { value: Some(invalid()) }] };
        in_an_array.attributes.push(attribute("list", Value::ArrayValue(array)));
        let mut in_the_event_name = record(string("rejected"));
        in_the_event_name.event_name = Bytes::from_static(&[0xff]);
        let mut in_a_key = record(string("rejected"));
        in_a_key.attributes.push(KeyValue { key: Bytes::from_static(&[0xfe]), value: None });
        let records =
            vec![record(string("first")), record(invalid()), in_an_array, in_the_event_name, in_a_key, record(Value::IntValue(7))];

        let mut rejections = Rejections::default();
        let batch = logs_to_batch(&request(records), &mut rejections).expect("the valid records");
        assert_eq!(rejections.by_reason().collect::<Vec<_>>(), [(RejectReason::InvalidUtf8, 4)]);
        let bodies = batch.column_by_name("Body").expect("Body").as_string::<i32>();
        assert_eq!(bodies.iter().collect::<Vec<_>>(), [Some("first"), Some("7")]);

        let mut rejections = Rejections::default();
        assert!(logs_to_batch(&request(vec![record(invalid())]), &mut rejections).is_none());
        assert_eq!(rejections.by_reason().collect::<Vec<_>>(), [(RejectReason::InvalidUtf8, 1)]);
    }
}
