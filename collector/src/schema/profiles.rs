//! De-duplicated profile rows → the four profile tables.
//!
//! Functions, locations and stacks are stored once per hour partition (see
//! [`crate::profiles`]), and samples reference stacks by id. Every table carries the upload's
//! `Timestamp`, so a stack lives in the same hour partition as the first samples that use
//! it and retention removes both together.

use arrow::array::{Int64Builder, ListBuilder, StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow::record_batch::RecordBatch;

use super::attributes::{AttributesBuilder, append_map_entry, attributes_builder, end_list, timestamp_builder};
use super::{Capacity, Columns as _, Table, batch, columns};
use crate::profiles::model::Rows;

columns! {
    /// The columns of `profile_samples`: one row per stack, sample type and label set of
    /// an upload.
    ProfileSampleColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        duration: Int64Builder = Int64Builder::new() => "DurationNanos",
        profile_id: StringBuilder = StringBuilder::new() => "ProfileId",
        service_name: StringBuilder = StringBuilder::new() => "ServiceName",
        labels: AttributesBuilder = attributes_builder(capacity.rows) => "Labels",
        sample_type: StringBuilder = StringBuilder::new() => "SampleType",
        period_type: StringBuilder = StringBuilder::new() => "PeriodType",
        period: Int64Builder = Int64Builder::new() => "Period",
        stack_id: UInt64Builder = UInt64Builder::new() => "StackId",
        value: Int64Builder = Int64Builder::new() => "Value",
        trace_id: StringBuilder = StringBuilder::new() => "TraceId",
        span_id: StringBuilder = StringBuilder::new() => "SpanId",
    }
}

columns! {
    /// The columns of `profile_stacks`: location ids, leaf first.
    ProfileStackColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        stack_id: UInt64Builder = UInt64Builder::new() => "StackId",
        location_ids: ListBuilder<UInt64Builder> = ListBuilder::new(UInt64Builder::new()) => "LocationIds",
    }
}

columns! {
    /// The columns of `profile_locations`: the (inlined) lines of one code location,
    /// innermost first, as parallel lists.
    ProfileLocationColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        location_id: UInt64Builder = UInt64Builder::new() => "LocationId",
        function_ids: ListBuilder<UInt64Builder> = ListBuilder::new(UInt64Builder::new()) => "FunctionIds",
        lines: ListBuilder<Int64Builder> = ListBuilder::new(Int64Builder::new()) => "Lines",
    }
}

columns! {
    /// The columns of `profile_functions`.
    ProfileFunctionColumns(capacity: Capacity) {
        timestamp: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "Timestamp",
        function_id: UInt64Builder = UInt64Builder::new() => "FunctionId",
        name: StringBuilder = StringBuilder::new() => "Name",
        system_name: StringBuilder = StringBuilder::new() => "SystemName",
        filename: StringBuilder = StringBuilder::new() => "Filename",
        start_line: Int64Builder = Int64Builder::new() => "StartLine",
    }
}

/// What one upload says about all of its samples.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    /// Start of the profiled window, Unix nanoseconds.
    pub timestamp: i64,
    pub duration_nanos: i64,
    pub profile_id: String,
    pub service_name: String,
    /// The series labels of the upload (`name=app{k=v}`), merged with each sample's labels.
    pub labels: Vec<(String, String)>,
    /// `type:unit` of the period, and the period, when the profile states them.
    pub period: Option<(String, i64)>,
}

/// The batches of one upload, one per table that has rows.
pub fn profile_rows_to_batches(upload: &UploadInfo, rows: &Rows) -> Vec<(Table, RecordBatch)> {
    let mut batches = Vec::with_capacity(4);
    if !rows.functions.is_empty() {
        let mut columns = ProfileFunctionColumns::default();
        for function in &rows.functions {
            columns.timestamp.append_value(upload.timestamp);
            columns.function_id.append_value(function.id);
            columns.name.append_value(&function.name);
            columns.system_name.append_value(&function.system_name);
            columns.filename.append_value(&function.filename);
            columns.start_line.append_value(function.start_line);
        }
        batches.push((Table::ProfileFunctions, batch(Table::ProfileFunctions, columns.finish_arrays())));
    }
    if !rows.locations.is_empty() {
        let mut columns = ProfileLocationColumns::default();
        for location in &rows.locations {
            columns.timestamp.append_value(upload.timestamp);
            columns.location_id.append_value(location.id);
            for &(function_id, line) in &location.lines {
                columns.function_ids.values().append_value(function_id);
                columns.lines.values().append_value(line);
            }
            end_list(&mut columns.function_ids);
            end_list(&mut columns.lines);
        }
        batches.push((Table::ProfileLocations, batch(Table::ProfileLocations, columns.finish_arrays())));
    }
    if !rows.stacks.is_empty() {
        let mut columns = ProfileStackColumns::default();
        for stack in &rows.stacks {
            columns.timestamp.append_value(upload.timestamp);
            columns.stack_id.append_value(stack.id);
            columns.location_ids.values().append_slice(&stack.location_ids);
            end_list(&mut columns.location_ids);
        }
        batches.push((Table::ProfileStacks, batch(Table::ProfileStacks, columns.finish_arrays())));
    }
    if !rows.samples.is_empty() {
        let mut columns = ProfileSampleColumns::default();
        let (period_type, period) = upload.period.as_ref().map_or(("", 0), |(kind, period)| (kind.as_str(), *period));
        for sample in &rows.samples {
            columns.timestamp.append_value(upload.timestamp);
            columns.duration.append_value(upload.duration_nanos);
            columns.profile_id.append_value(&upload.profile_id);
            columns.service_name.append_value(&upload.service_name);
            // A sample's own label wins over the upload's label of the same name.
            let series_labels = upload.labels.iter().filter(|(key, _)| !sample.labels.iter().any(|(own, _)| own == key));
            for (key, value) in series_labels.chain(&sample.labels) {
                columns.labels.keys().append_value(key);
                columns.labels.values().append_value(value);
            }
            append_map_entry(&mut columns.labels);
            columns.sample_type.append_value(&sample.sample_type);
            columns.period_type.append_value(period_type);
            columns.period.append_value(period);
            columns.stack_id.append_value(sample.stack_id);
            columns.value.append_value(sample.value);
            columns.trace_id.append_value(sample.trace_id.as_deref().unwrap_or_default());
            columns.span_id.append_value(sample.span_id.as_deref().unwrap_or_default());
        }
        batches.push((Table::ProfileSamples, batch(Table::ProfileSamples, columns.finish_arrays())));
    }
    batches
}
