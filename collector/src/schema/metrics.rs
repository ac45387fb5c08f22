//! OTLP metrics → `otel_metrics_{gauge,sum,histogram,exp_histogram,summary}`: one row per
//! data point, with the metric's resource, scope and identity repeated on the row.
//!
//! Two columns beyond the exporter's schema let readers take a series' labels from one row
//! instead of every row: `SeriesId`, a content hash of the metric's name and unit, the
//! resource and the point's attributes (`content_hash::series_id`), and `SeriesStart`, true
//! on at least the earliest row of each series in every stored file (the store sets it when
//! it sorts a file; a converted batch is not sorted, so all its rows start).

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;

use super::attributes::{
    AttributesBuilder, Context, ResourceContext, TextRows, append_attributes, append_attributes_with,
    append_hex, attributes_builder, attributes_list_builder, check_resource, check_scope, end_list,
    is_text, is_valid_optional_id, nanos, string_list_builder, text, timestamp_builder,
    timestamp_list_builder,
};
use super::{Capacity, Columns, RejectReason, Rejections, Table, columns};
use crate::content_hash::{AttributeSetHash, series_id};
use crate::ingest::wire::{
    Exemplar, ExponentialHistogramDataPoint, ExportMetricsServiceRequest, HistogramDataPoint,
    KeyValue, Metric, NumberDataPoint, SummaryDataPoint, exemplar, metric, number_data_point,
};

columns! {
    /// Columns every metrics table starts with.
    CommonColumns(capacity: Capacity) {
        resource_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ResourceAttributes",
        resource_schema_url: StringBuilder = StringBuilder::new() => "ResourceSchemaUrl",
        scope_name: StringBuilder = StringBuilder::new() => "ScopeName",
        scope_version: StringBuilder = StringBuilder::new() => "ScopeVersion",
        scope_attributes: AttributesBuilder = attributes_builder(capacity.rows) => "ScopeAttributes",
        scope_dropped_attr_count: UInt32Builder = UInt32Builder::new() => "ScopeDroppedAttrCount",
        scope_schema_url: StringBuilder = StringBuilder::new() => "ScopeSchemaUrl",
        service_name: StringBuilder = StringBuilder::new() => "ServiceName",
        metric_name: StringBuilder = StringBuilder::new() => "MetricName",
        metric_description: StringBuilder = StringBuilder::new() => "MetricDescription",
        metric_unit: StringBuilder = StringBuilder::new() => "MetricUnit",
        attributes: AttributesBuilder = attributes_builder(capacity.rows) => "Attributes",
        start_time_unix: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "StartTimeUnix",
        time_unix: TimestampNanosecondBuilder = timestamp_builder(capacity.rows) => "TimeUnix",
        flags: UInt32Builder = UInt32Builder::new() => "Flags",
        series_id: UInt64Builder = UInt64Builder::new() => "SeriesId",
        series_start: BooleanBuilder = BooleanBuilder::new() => "SeriesStart",
    }
}

columns! {
    /// Exemplar columns (all but the summary table have them).
    ExemplarColumns(capacity: Capacity) {
        filtered_attributes: ListBuilder<AttributesBuilder> = attributes_list_builder(capacity.rows) => "Exemplars.FilteredAttributes",
        time_unix: ListBuilder<TimestampNanosecondBuilder> = timestamp_list_builder(capacity.rows) => "Exemplars.TimeUnix",
        value: ListBuilder<Float64Builder> = ListBuilder::new(Float64Builder::new()) => "Exemplars.Value",
        span_id: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Exemplars.SpanId",
        trace_id: ListBuilder<StringBuilder> = string_list_builder(capacity.rows) => "Exemplars.TraceId",
    }
}

columns! {
    GaugeValues {
        value: Float64Builder = Float64Builder::new() => "Value",
    }
}

columns! {
    SumValues {
        value: Float64Builder = Float64Builder::new() => "Value",
        aggregation_temporality: Int32Builder = Int32Builder::new() => "AggregationTemporality",
        is_monotonic: BooleanBuilder = BooleanBuilder::new() => "IsMonotonic",
    }
}

columns! {
    HistogramValues {
        count: UInt64Builder = UInt64Builder::new() => "Count",
        sum: Float64Builder = Float64Builder::new() => "Sum",
        bucket_counts: ListBuilder<UInt64Builder> = ListBuilder::new(UInt64Builder::new()) => "BucketCounts",
        explicit_bounds: ListBuilder<Float64Builder> = ListBuilder::new(Float64Builder::new()) => "ExplicitBounds",
        min: Float64Builder = Float64Builder::new() => "Min",
        max: Float64Builder = Float64Builder::new() => "Max",
        aggregation_temporality: Int32Builder = Int32Builder::new() => "AggregationTemporality",
    }
}

columns! {
    ExpHistogramValues {
        count: UInt64Builder = UInt64Builder::new() => "Count",
        sum: Float64Builder = Float64Builder::new() => "Sum",
        scale: Int32Builder = Int32Builder::new() => "Scale",
        zero_count: UInt64Builder = UInt64Builder::new() => "ZeroCount",
        zero_threshold: Float64Builder = Float64Builder::new() => "ZeroThreshold",
        positive_offset: Int32Builder = Int32Builder::new() => "PositiveOffset",
        positive_bucket_counts: ListBuilder<UInt64Builder> = ListBuilder::new(UInt64Builder::new()) => "PositiveBucketCounts",
        negative_offset: Int32Builder = Int32Builder::new() => "NegativeOffset",
        negative_bucket_counts: ListBuilder<UInt64Builder> = ListBuilder::new(UInt64Builder::new()) => "NegativeBucketCounts",
        min: Float64Builder = Float64Builder::new() => "Min",
        max: Float64Builder = Float64Builder::new() => "Max",
        aggregation_temporality: Int32Builder = Int32Builder::new() => "AggregationTemporality",
    }
}

columns! {
    SummaryValues {
        count: UInt64Builder = UInt64Builder::new() => "Count",
        sum: Float64Builder = Float64Builder::new() => "Sum",
        quantile: ListBuilder<Float64Builder> = ListBuilder::new(Float64Builder::new()) => "ValueAtQuantiles.Quantile",
        value: ListBuilder<Float64Builder> = ListBuilder::new(Float64Builder::new()) => "ValueAtQuantiles.Value",
    }
}

/// The builders of one metrics table: common columns, the type's own, then exemplars.
#[derive(Default)]
pub(crate) struct MetricColumns<V, const EXEMPLARS: bool> {
    common: CommonColumns,
    values: V,
    exemplars: ExemplarColumns,
    /// Checks the text of the rows appended.
    rows: TextRows,
}

pub(crate) type GaugeColumns = MetricColumns<GaugeValues, true>;
pub(crate) type SumColumns = MetricColumns<SumValues, true>;
pub(crate) type HistogramColumns = MetricColumns<HistogramValues, true>;
pub(crate) type ExpHistogramColumns = MetricColumns<ExpHistogramValues, true>;
pub(crate) type SummaryColumns = MetricColumns<SummaryValues, false>;

impl<V: Columns, const EXEMPLARS: bool> Columns for MetricColumns<V, EXEMPLARS> {
    fn names(&self) -> Vec<&'static str> {
        let mut names = self.common.names();
        names.extend(self.values.names());
        if EXEMPLARS {
            names.extend(self.exemplars.names());
        }
        names
    }

    fn finish_arrays(&mut self) -> Vec<ArrayRef> {
        let mut arrays = self.common.finish_arrays();
        arrays.extend(self.values.finish_arrays());
        if EXEMPLARS {
            arrays.extend(self.exemplars.finish_arrays());
        }
        arrays
    }
}

impl<V: Columns, const EXEMPLARS: bool> MetricColumns<V, EXEMPLARS> {
    fn append_common(&mut self, row: &PointRow<'_>, scratch: &mut String) {
        let (context, common, rows) = (row.context, &mut self.common, &mut self.rows);
        context.resource.attributes.append_to(&mut common.resource_attributes);
        common.resource_schema_url.append_value(context.resource.schema_url);
        common.scope_name.append_value(context.scope_name);
        common.scope_version.append_value(context.scope_version);
        context.scope_attributes.append_to(&mut common.scope_attributes);
        common.scope_dropped_attr_count.append_value(context.scope_dropped_attributes_count);
        common.scope_schema_url.append_value(context.scope_schema_url);
        common.service_name.append_value(&context.resource.service_name);
        let (name, unit) = (text(&row.metric.name), text(&row.metric.unit));
        common.metric_name.append_value(name);
        common.metric_description.append_value(text(&row.metric.description));
        common.metric_unit.append_value(unit);
        let mut attributes = AttributeSetHash::default();
        append_attributes_with(&mut common.attributes, row.attributes, rows, scratch, |key, value| {
            attributes.add(key, value);
        });
        common.start_time_unix.append_value(row.start);
        common.time_unix.append_value(row.time);
        common.flags.append_value(row.flags);
        common.series_id.append_value(series_id(name, unit, context.resource.hash(), attributes));
        common.series_start.append_value(true);
        if EXEMPLARS {
            self.append_exemplars(row.exemplars, scratch);
        }
        self.rows.end_row();
    }

    fn append_exemplars(&mut self, exemplars: &[Exemplar], scratch: &mut String) {
        let (columns, rows) = (&mut self.exemplars, &mut self.rows);
        for exemplar in exemplars {
            append_attributes(columns.filtered_attributes.values(), &exemplar.filtered_attributes, rows, scratch);
            columns.time_unix.values().append_value(nanos(exemplar.time_unix_nano).unwrap_or(0));
            let value = match exemplar.value {
                Some(exemplar::Value::AsDouble(v)) => Some(v),
                Some(exemplar::Value::AsInt(v)) => Some(v as f64),
                None => None,
            };
            columns.value.values().append_option(value);
            append_hex(columns.span_id.values(), &exemplar.span_id);
            append_hex(columns.trace_id.values(), &exemplar.trace_id);
        }
        end_list(&mut columns.filtered_attributes);
        end_list(&mut columns.time_unix);
        end_list(&mut columns.value);
        end_list(&mut columns.span_id);
        end_list(&mut columns.trace_id);
    }

    fn finish_into(mut self, table: Table, batches: &mut Vec<(Table, RecordBatch)>, rejections: &mut Rejections) {
        let arrays = self.finish_arrays();
        if let Some(batch) = self.rows.finish(table, arrays, rejections) {
            batches.push((table, batch));
        }
    }
}

/// What every data point row shares, checked and ready to append.
struct PointRow<'a> {
    context: &'a Context<'a>,
    metric: &'a Metric,
    attributes: &'a [KeyValue],
    exemplars: &'a [Exemplar],
    start: i64,
    time: i64,
    flags: u32,
}

/// The tables' builders while converting one request.
#[derive(Default)]
struct MetricBatches {
    gauge: GaugeColumns,
    sum: SumColumns,
    histogram: HistogramColumns,
    exp_histogram: ExpHistogramColumns,
    summary: SummaryColumns,
    scratch: String,
}

/// Converts the valid data points of a request into one batch per metrics table that got
/// rows; invalid data points are counted in `rejections` and left out.
pub fn metrics_to_batches(
    request: &ExportMetricsServiceRequest,
    rejections: &mut Rejections,
) -> Vec<(Table, RecordBatch)> {
    let mut tables = MetricBatches::default();
    for resource_metrics in &request.resource_metrics {
        if let Err(reason) = check_resource(resource_metrics.resource.as_ref(), &resource_metrics.schema_url) {
            let metrics = resource_metrics.scope_metrics.iter().flat_map(|s| &s.metrics);
            rejections.add(reason, metrics.map(metric_data_points).sum());
            continue;
        }
        let resource = ResourceContext::new(resource_metrics.resource.as_ref(), &resource_metrics.schema_url);
        for scope_metrics in &resource_metrics.scope_metrics {
            if let Err(reason) = check_scope(scope_metrics.scope.as_ref(), &scope_metrics.schema_url) {
                rejections.add(reason, scope_metrics.metrics.iter().map(metric_data_points).sum());
                continue;
            }
            let context = Context::new(&resource, scope_metrics.scope.as_ref(), &scope_metrics.schema_url);
            for metric in &scope_metrics.metrics {
                tables.append_metric(&context, metric, rejections);
            }
        }
    }
    let mut batches = Vec::new();
    tables.gauge.finish_into(Table::MetricsGauge, &mut batches, rejections);
    tables.sum.finish_into(Table::MetricsSum, &mut batches, rejections);
    tables.histogram.finish_into(Table::MetricsHistogram, &mut batches, rejections);
    tables.exp_histogram.finish_into(Table::MetricsExpHistogram, &mut batches, rejections);
    tables.summary.finish_into(Table::MetricsSummary, &mut batches, rejections);
    batches
}

/// Data points in a metric (the unit of metrics ingest counts).
pub fn metric_data_points(metric: &Metric) -> u64 {
    let count = match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    };
    count as u64
}

impl MetricBatches {
    fn append_metric(&mut self, context: &Context<'_>, metric: &Metric, rejections: &mut Rejections) {
        let names_ok = is_text(&metric.name) && is_text(&metric.description) && is_text(&metric.unit);
        if !names_ok {
            rejections.add(RejectReason::InvalidUtf8, metric_data_points(metric));
            return;
        }
        let scratch = &mut self.scratch;
        match &metric.data {
            Some(metric::Data::Gauge(gauge)) => {
                for point in &gauge.data_points {
                    let Some(row) = number_row(context, metric, point, rejections) else { continue };
                    self.gauge.append_common(&row, scratch);
                    self.gauge.values.value.append_option(number_value(point));
                }
            }
            Some(metric::Data::Sum(sum)) => {
                for point in &sum.data_points {
                    let Some(row) = number_row(context, metric, point, rejections) else { continue };
                    self.sum.append_common(&row, scratch);
                    let values = &mut self.sum.values;
                    values.value.append_option(number_value(point));
                    values.aggregation_temporality.append_value(sum.aggregation_temporality);
                    values.is_monotonic.append_value(sum.is_monotonic);
                }
            }
            Some(metric::Data::Histogram(histogram)) => {
                for point in &histogram.data_points {
                    let Some(row) = histogram_row(context, metric, point, rejections) else { continue };
                    self.histogram.append_common(&row, scratch);
                    let values = &mut self.histogram.values;
                    values.count.append_value(point.count);
                    values.sum.append_option(point.sum);
                    values.bucket_counts.values().append_slice(&point.bucket_counts);
                    end_list(&mut values.bucket_counts);
                    values.explicit_bounds.values().append_slice(&point.explicit_bounds);
                    end_list(&mut values.explicit_bounds);
                    values.min.append_option(point.min);
                    values.max.append_option(point.max);
                    values.aggregation_temporality.append_value(histogram.aggregation_temporality);
                }
            }
            Some(metric::Data::ExponentialHistogram(histogram)) => {
                for point in &histogram.data_points {
                    let Some(row) = exp_histogram_row(context, metric, point, rejections) else { continue };
                    self.exp_histogram.append_common(&row, scratch);
                    let values = &mut self.exp_histogram.values;
                    values.count.append_value(point.count);
                    values.sum.append_option(point.sum);
                    values.scale.append_value(point.scale);
                    values.zero_count.append_value(point.zero_count);
                    values.zero_threshold.append_value(point.zero_threshold);
                    let positive = point.positive.as_ref();
                    values.positive_offset.append_value(positive.map_or(0, |b| b.offset));
                    values.positive_bucket_counts.values().append_slice(positive.map_or(&[][..], |b| &b.bucket_counts));
                    end_list(&mut values.positive_bucket_counts);
                    let negative = point.negative.as_ref();
                    values.negative_offset.append_value(negative.map_or(0, |b| b.offset));
                    values.negative_bucket_counts.values().append_slice(negative.map_or(&[][..], |b| &b.bucket_counts));
                    end_list(&mut values.negative_bucket_counts);
                    values.min.append_option(point.min);
                    values.max.append_option(point.max);
                    values.aggregation_temporality.append_value(histogram.aggregation_temporality);
                }
            }
            Some(metric::Data::Summary(summary)) => {
                for point in &summary.data_points {
                    let Some(row) = summary_row(context, metric, point, rejections) else { continue };
                    self.summary.append_common(&row, scratch);
                    let values = &mut self.summary.values;
                    values.count.append_value(point.count);
                    values.sum.append_value(point.sum);
                    for quantile in &point.quantile_values {
                        values.quantile.values().append_value(quantile.quantile);
                        values.value.values().append_value(quantile.value);
                    }
                    end_list(&mut values.quantile);
                    end_list(&mut values.value);
                }
            }
            None => {}
        }
    }
}

fn number_value(point: &NumberDataPoint) -> Option<f64> {
    match point.value {
        Some(number_data_point::Value::AsDouble(v)) => Some(v),
        Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
        None => None,
    }
}

/// The checks every kind of data point shares; `Err` rejects the point.
fn point_row<'a>(
    context: &'a Context<'a>,
    metric: &'a Metric,
    attributes: &'a [KeyValue],
    exemplars: &'a [Exemplar],
    times: (u64, u64),
    flags: u32,
) -> Result<PointRow<'a>, RejectReason> {
    let exemplar_ids_ok = exemplars.iter().all(|e| {
        is_valid_optional_id(&e.trace_id, 16) && is_valid_optional_id(&e.span_id, 8)
    });
    if !exemplar_ids_ok {
        return Err(RejectReason::InvalidTraceId);
    }
    let exemplar_times_ok = exemplars.iter().all(|e| nanos(e.time_unix_nano).is_some());
    let (Some(start), Some(time)) = (nanos(times.0), nanos(times.1)) else {
        return Err(RejectReason::TimestampOutOfRange);
    };
    if !exemplar_times_ok {
        return Err(RejectReason::TimestampOutOfRange);
    }
    Ok(PointRow { context, metric, attributes, exemplars, start, time, flags })
}

fn accepted<'a>(row: Result<PointRow<'a>, RejectReason>, rejections: &mut Rejections) -> Option<PointRow<'a>> {
    row.map_err(|reason| rejections.add(reason, 1)).ok()
}

fn number_row<'a>(
    context: &'a Context<'a>,
    metric: &'a Metric,
    point: &'a NumberDataPoint,
    rejections: &mut Rejections,
) -> Option<PointRow<'a>> {
    let times = (point.start_time_unix_nano, point.time_unix_nano);
    let row = point_row(context, metric, &point.attributes, &point.exemplars, times, point.flags);
    accepted(row, rejections)
}

fn histogram_row<'a>(
    context: &'a Context<'a>,
    metric: &'a Metric,
    point: &'a HistogramDataPoint,
    rejections: &mut Rejections,
) -> Option<PointRow<'a>> {
    // A histogram has one more bucket than bounds, or no buckets at all.
    let buckets_ok = point.bucket_counts.is_empty()
        || point.bucket_counts.len() == point.explicit_bounds.len() + 1;
    if !buckets_ok {
        rejections.add(RejectReason::InvalidDataPoint, 1);
        return None;
    }
    let times = (point.start_time_unix_nano, point.time_unix_nano);
    let row = point_row(context, metric, &point.attributes, &point.exemplars, times, point.flags);
    accepted(row, rejections)
}

fn exp_histogram_row<'a>(
    context: &'a Context<'a>,
    metric: &'a Metric,
    point: &'a ExponentialHistogramDataPoint,
    rejections: &mut Rejections,
) -> Option<PointRow<'a>> {
    let times = (point.start_time_unix_nano, point.time_unix_nano);
    let row = point_row(context, metric, &point.attributes, &point.exemplars, times, point.flags);
    accepted(row, rejections)
}

fn summary_row<'a>(
    context: &'a Context<'a>,
    metric: &'a Metric,
    point: &'a SummaryDataPoint,
    rejections: &mut Rejections,
) -> Option<PointRow<'a>> {
    let times = (point.start_time_unix_nano, point.time_unix_nano);
    let row = point_row(context, metric, &point.attributes, &[], times, point.flags);
    accepted(row, rejections)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ingest::wire::any_value::Value;
    use crate::ingest::wire::{Gauge, ResourceMetrics, ScopeMetrics, Sum};
    use crate::test_data::{attribute, string};

    fn point(attributes: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            time_unix_nano: 1_700_000_000_000_000_000,
            value: Some(number_data_point::Value::AsInt(1)),
            ..NumberDataPoint::default()
        }
    }

    fn metric(name: &str, data: metric::Data) -> Metric {
        Metric { name: Bytes::copy_from_slice(name.as_bytes()), data: Some(data), ..Metric::default() }
    }

    #[test]
    fn data_points_with_invalid_text_are_rejected_and_the_others_stored() {
        let invalid = || Value::StringValue(Bytes::from_static(&[0xc3, 0x28]));
        let gauge_points = vec![point(vec![attribute("k", string("kept"))]), point(vec![attribute("k", invalid())])];
        let mut in_an_exemplar = point(Vec::new());
        in_an_exemplar.exemplars.push(Exemplar { filtered_attributes: vec![attribute("k", invalid())], ..Exemplar::default() });
        let sum = Sum { data_points: vec![in_an_exemplar], ..Sum::default() };
        let metrics = vec![
            metric("gauge", metric::Data::Gauge(Gauge { data_points: gauge_points })),
            metric("sum", metric::Data::Sum(sum)),
        ];
        let scope_metrics = vec![ScopeMetrics { metrics, ..ScopeMetrics::default() }];
        let resource_metrics = vec![ResourceMetrics { scope_metrics, ..ResourceMetrics::default() }];
        let request = ExportMetricsServiceRequest { resource_metrics };

        let mut rejections = Rejections::default();
        let batches = metrics_to_batches(&request, &mut rejections);
        assert_eq!(rejections.by_reason().collect::<Vec<_>>(), [(RejectReason::InvalidUtf8, 2)]);
        let rows: Vec<_> = batches.iter().map(|(table, batch)| (*table, batch.num_rows())).collect();
        assert_eq!(rows, [(Table::MetricsGauge, 1)]);
    }
}
