//! OTLP log records → `otel_logs`.

use arrow::array::{Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder};
use arrow::record_batch::RecordBatch;

use super::attributes::{
    AttributesBuilder, Context, ResourceContext, any_value_is_text, any_value_to_string,
    append_attributes, append_hex, attributes_are_text, attributes_builder, check_resource,
    check_scope, is_text, is_valid_optional_id, nanos, text, timestamp_builder,
};
use super::{Columns as _, RejectReason, Rejections, Table, batch, columns};
use crate::ingest::wire::{ExportLogsServiceRequest, LogRecord};

columns! {
    /// The columns of `otel_logs`.
    LogColumns {
        timestamp: TimestampNanosecondBuilder = timestamp_builder() => "Timestamp",
        observed_timestamp: TimestampNanosecondBuilder = timestamp_builder() => "ObservedTimestamp",
        trace_id: StringBuilder = StringBuilder::new() => "TraceId",
        span_id: StringBuilder = StringBuilder::new() => "SpanId",
        trace_flags: UInt32Builder = UInt32Builder::new() => "TraceFlags",
        severity_text: StringBuilder = StringBuilder::new() => "SeverityText",
        severity_number: Int32Builder = Int32Builder::new() => "SeverityNumber",
        service_name: StringBuilder = StringBuilder::new() => "ServiceName",
        body: StringBuilder = StringBuilder::new() => "Body",
        event_name: StringBuilder = StringBuilder::new() => "EventName",
        resource_schema_url: StringBuilder = StringBuilder::new() => "ResourceSchemaUrl",
        resource_attributes: AttributesBuilder = attributes_builder() => "ResourceAttributes",
        scope_schema_url: StringBuilder = StringBuilder::new() => "ScopeSchemaUrl",
        scope_name: StringBuilder = StringBuilder::new() => "ScopeName",
        scope_version: StringBuilder = StringBuilder::new() => "ScopeVersion",
        scope_attributes: AttributesBuilder = attributes_builder() => "ScopeAttributes",
        log_attributes: AttributesBuilder = attributes_builder() => "LogAttributes",
        dropped_attributes_count: UInt32Builder = UInt32Builder::new() => "DroppedAttributesCount",
    }
}

impl LogColumns {
    fn append(&mut self, context: &Context<'_>, record: &LogRecord, times: (i64, i64), scratch: &mut String) {
        let (timestamp, observed) = times;
        self.timestamp.append_value(timestamp);
        self.observed_timestamp.append_value(observed);
        append_hex(&mut self.trace_id, &record.trace_id);
        append_hex(&mut self.span_id, &record.span_id);
        self.trace_flags.append_value(record.flags);
        self.severity_text.append_value(text(&record.severity_text));
        self.severity_number.append_value(record.severity_number);
        self.service_name.append_value(&context.resource.service_name);
        any_value_to_string(record.body.as_ref(), scratch);
        self.body.append_value(scratch.as_str());
        self.event_name.append_value(text(&record.event_name));
        self.resource_schema_url.append_value(context.resource.schema_url);
        context.resource.attributes.append_to(&mut self.resource_attributes);
        self.scope_schema_url.append_value(context.scope_schema_url);
        self.scope_name.append_value(context.scope_name);
        self.scope_version.append_value(context.scope_version);
        context.scope_attributes.append_to(&mut self.scope_attributes);
        append_attributes(&mut self.log_attributes, &record.attributes, scratch);
        self.dropped_attributes_count.append_value(record.dropped_attributes_count);
    }
}

/// Converts the valid log records of a request into one `otel_logs` batch.
pub fn logs_to_batch(
    request: &ExportLogsServiceRequest,
    rejections: &mut Rejections,
) -> Option<RecordBatch> {
    let mut columns = LogColumns::default();
    let mut rows = 0usize;
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
                    Ok(times) => {
                        columns.append(&context, record, times, &mut scratch);
                        rows += 1;
                    }
                    Err(reason) => rejections.add(reason, 1),
                }
            }
        }
    }
    if rows == 0 {
        return None;
    }
    Some(batch(Table::Logs, columns.finish_arrays()))
}

/// Validates a log record, returning (timestamp, observed timestamp) as stored. A record
/// without a timestamp is stored at its observed time, as the ClickHouse exporter does.
fn check_log(record: &LogRecord) -> Result<(i64, i64), RejectReason> {
    if !is_valid_optional_id(&record.trace_id, 16) {
        return Err(RejectReason::InvalidTraceId);
    }
    if !is_valid_optional_id(&record.span_id, 8) {
        return Err(RejectReason::InvalidSpanId);
    }
    let texts_ok = record.body.as_ref().is_none_or(any_value_is_text)
        && is_text(&record.severity_text)
        && is_text(&record.event_name)
        && attributes_are_text(&record.attributes);
    if !texts_ok {
        return Err(RejectReason::InvalidUtf8);
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
