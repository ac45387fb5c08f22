//! Span-derived RED metrics. Every acknowledged span counts towards a call counter and a
//! duration histogram per service, span name, kind and status code, so latency and error
//! rules work for services that only send spans. The series are emitted periodically as
//! OTLP metrics through the normal ingest path (so they are durable like everything else),
//! named and shaped like the OpenTelemetry Collector's spanmetrics connector, with the slowest
//! span of each interval as the exemplar.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{AsArray, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{TimestampNanosecondType, UInt64Type};
use bytes::Bytes;
use hashbrown::hash_map::EntryRef;
use hashbrown::{Equivalent, HashMap};

use crate::config::SpanMetricsConfig;
use crate::ingest::wire::{
    AnyValue, ExportMetricsServiceRequest, HistogramDataPoint, InstrumentationScope, KeyValue,
    Metric, NumberDataPoint, Resource, ResourceMetrics, ScopeMetrics, any_value, exemplar, metric,
    number_data_point,
};
use crate::telemetry::SelfMetrics;

/// Calls per series: a monotonic cumulative sum.
pub const CALLS: &str = "traces.span.metrics.calls";
/// Span durations per series, in seconds: a cumulative histogram.
pub const DURATION: &str = "traces.span.metrics.duration";

/// The semantic conventions' request-duration buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

/// The dimensions of one series: service, span name, and span kind and status code as
/// `otel_traces` spells them (`Server`, `Ok`). The overflow series has none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey([String; 4]);

/// A series' dimensions borrowed from a batch, to find the series without allocating a key.
/// It hashes exactly as the [`SeriesKey`] it stands for: both derive `Hash` over four
/// strings.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Dimensions<'a>([&'a str; 4]);

impl Equivalent<SeriesKey> for Dimensions<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.0 == key.0
    }
}

impl Dimensions<'_> {
    fn to_key(&self) -> SeriesKey {
        SeriesKey(self.0.map(str::to_owned))
    }
}

#[derive(Clone, Debug, Default)]
struct Series {
    calls: u64,
    seconds_sum: f64,
    buckets: [u64; BOUNDS.len() + 1],
    /// The slowest span since the last emission.
    exemplar: Option<Exemplar>,
}

#[derive(Clone, Debug)]
struct Exemplar {
    trace_id: Bytes,
    span_id: Bytes,
    seconds: f64,
    time_unix_nano: u64,
}

impl Series {
    fn record(&mut self, seconds: f64, exemplar: impl FnOnce() -> Exemplar) {
        self.calls += 1;
        self.seconds_sum += seconds;
        self.buckets[BOUNDS.partition_point(|bound| *bound < seconds)] += 1;
        if self
            .exemplar
            .as_ref()
            .is_none_or(|slowest| seconds > slowest.seconds)
        {
            self.exemplar = Some(exemplar());
        }
    }
}

/// The columns of an `otel_traces` batch that span metrics read.
struct SpanColumns<'a> {
    dimensions: [&'a StringArray; 4],
    trace_id: &'a StringArray,
    span_id: &'a StringArray,
    duration: &'a UInt64Array,
    timestamp: &'a TimestampNanosecondArray,
}

impl<'a> SpanColumns<'a> {
    /// `None` if the batch lacks a column (never for batches built by `schema::traces`).
    fn of(batch: &'a RecordBatch) -> Option<Self> {
        let text = |name: &str| batch.column_by_name(name)?.as_string_opt::<i32>();
        Some(SpanColumns {
            dimensions: [text("ServiceName")?, text("SpanName")?, text("SpanKind")?, text("StatusCode")?],
            trace_id: text("TraceId")?,
            span_id: text("SpanId")?,
            duration: batch.column_by_name("Duration")?.as_primitive_opt::<UInt64Type>()?,
            timestamp: batch.column_by_name("Timestamp")?.as_primitive_opt::<TimestampNanosecondType>()?,
        })
    }

    fn dimensions(&self, row: usize) -> Dimensions<'a> {
        Dimensions(self.dimensions.map(|column| column.value(row)))
    }

    fn exemplar(&self, row: usize, seconds: f64) -> Exemplar {
        Exemplar {
            trace_id: Bytes::from(hex::decode(self.trace_id.value(row)).unwrap_or_default()),
            span_id: Bytes::from(hex::decode(self.span_id.value(row)).unwrap_or_default()),
            seconds,
            time_unix_nano: u64::try_from(self.timestamp.value(row)).unwrap_or_default(),
        }
    }
}

/// Every series since start. Past `max_series`, spans of new series go to `overflow`.
#[derive(Default)]
struct AllSeries {
    series: HashMap<SeriesKey, Series>,
    overflow: Option<Series>,
}

/// The cumulative series since start, bounded by `max_series`.
pub struct SpanMetrics {
    config: SpanMetricsConfig,
    start_time_unix_nano: u64,
    all: Mutex<AllSeries>,
    metrics: Arc<SelfMetrics>,
}

impl SpanMetrics {
    pub fn new(config: SpanMetricsConfig, metrics: Arc<SelfMetrics>) -> Self {
        SpanMetrics {
            config,
            start_time_unix_nano: now_unix_nano(),
            all: Mutex::default(),
            metrics,
        }
    }

    pub fn config(&self) -> &SpanMetricsConfig {
        &self.config
    }

    pub fn count_failed_write(&self) {
        self.metrics.span_metrics_failed_writes.inc();
    }

    /// Counts the spans of an acknowledged `otel_traces` batch. Past `max_series`, spans of
    /// new series go to the overflow series, and are counted.
    ///
    /// Consecutive spans of one series (a request's spans of one operation) look their
    /// series up once: comparing a span's four dimensions with the previous span's costs
    /// less than hashing them.
    pub fn record(&self, batch: &RecordBatch) {
        let Some(spans) = SpanColumns::of(batch) else {
            return;
        };
        let rows = batch.num_rows();
        let mut overflowed = 0;
        let mut guard = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        let all = &mut *guard;
        let mut start = 0;
        while start < rows {
            let dimensions = spans.dimensions(start);
            let end = (start + 1..rows).find(|&row| spans.dimensions(row) != dimensions).unwrap_or(rows);
            let full = all.series.len() >= self.config.max_series;
            let series = match all.series.entry_ref(&dimensions) {
                EntryRef::Occupied(entry) => entry.into_mut(),
                EntryRef::Vacant(entry) if !full => {
                    let key = entry.key().to_key();
                    entry.insert_with_key(key, Series::default())
                }
                EntryRef::Vacant(_) => {
                    overflowed += (end - start) as u64;
                    all.overflow.get_or_insert_default()
                }
            };
            for row in start..end {
                let seconds = spans.duration.value(row) as f64 / 1e9;
                series.record(seconds, || spans.exemplar(row, seconds));
            }
            start = end;
        }
        drop(guard);
        self.metrics.span_metrics_overflow_spans.inc_by(overflowed);
    }

    /// The cumulative state as an OTLP request, one resource per service; `None` before the
    /// first span. Exemplars are taken: each interval reports its own slowest span.
    pub fn take_export(&self) -> Option<ExportMetricsServiceRequest> {
        let now = now_unix_nano();
        let mut guard = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        let all = &mut *guard;
        if all.series.is_empty() && all.overflow.is_none() {
            return None;
        }
        let mut by_service: HashMap<&str, (Vec<NumberDataPoint>, Vec<HistogramDataPoint>)> =
            HashMap::new();
        let keyed = all.series.iter_mut().map(|(key, series)| (Some(key), series));
        for (key, series) in keyed.chain(all.overflow.as_mut().map(|series| (None, series))) {
            let (service, attributes) = match key {
                Some(SeriesKey([service, span_name, kind, status])) => (
                    service.as_str(),
                    vec![
                        KeyValue::string("span.name", span_name),
                        KeyValue::string("span.kind", &format!("SPAN_KIND_{}", kind.to_ascii_uppercase())),
                        KeyValue::string("status.code", &format!("STATUS_CODE_{}", status.to_ascii_uppercase())),
                    ],
                ),
                None => (
                    "",
                    vec![KeyValue {
                        key: Bytes::from_static(b"otel.metric.overflow"),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        }),
                    }],
                ),
            };
            let (calls, durations) = by_service.entry(service).or_default();
            calls.push(NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: self.start_time_unix_nano,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(
                    i64::try_from(series.calls).unwrap_or(i64::MAX),
                )),
                ..NumberDataPoint::default()
            });
            let exemplars = series
                .exemplar
                .take()
                .map(|slowest| crate::ingest::wire::Exemplar {
                    filtered_attributes: Vec::new(),
                    time_unix_nano: slowest.time_unix_nano,
                    value: Some(exemplar::Value::AsDouble(slowest.seconds)),
                    span_id: slowest.span_id,
                    trace_id: slowest.trace_id,
                });
            durations.push(HistogramDataPoint {
                attributes,
                start_time_unix_nano: self.start_time_unix_nano,
                time_unix_nano: now,
                count: series.calls,
                sum: Some(series.seconds_sum),
                bucket_counts: series.buckets.to_vec(),
                explicit_bounds: BOUNDS.to_vec(),
                exemplars: exemplars.into_iter().collect(),
                ..HistogramDataPoint::default()
            });
        }
        let resource_metrics = by_service
            .into_iter()
            .map(|(service, (calls, durations))| {
                let resource_attributes = if service.is_empty() {
                    Vec::new()
                } else {
                    vec![KeyValue::string("service.name", service)]
                };
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: resource_attributes,
                        ..Resource::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: Bytes::from_static(b"meshlight.spanmetrics"),
                            ..InstrumentationScope::default()
                        }),
                        metrics: vec![calls_metric(calls), duration_metric(durations)],
                        ..ScopeMetrics::default()
                    }],
                    ..ResourceMetrics::default()
                }
            })
            .collect();
        Some(ExportMetricsServiceRequest { resource_metrics })
    }
}

fn calls_metric(data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: Bytes::from_static(CALLS.as_bytes()),
        description: Bytes::from_static(
            b"Spans ingested, per service, span name, kind and status.",
        ),
        unit: Bytes::from_static(b"{call}"),
        data: Some(metric::Data::Sum(crate::ingest::wire::Sum {
            data_points,
            aggregation_temporality: CUMULATIVE,
            is_monotonic: true,
        })),
    }
}

fn duration_metric(data_points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: Bytes::from_static(DURATION.as_bytes()),
        description: Bytes::from_static(
            b"Span durations, per service, span name, kind and status.",
        ),
        unit: Bytes::from_static(b"s"),
        data: Some(metric::Data::Histogram(crate::ingest::wire::Histogram {
            data_points,
            aggregation_temporality: CUMULATIVE,
        })),
    }
}

fn now_unix_nano() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use super::*;
    use crate::test_data::sample_traces_batch;

    #[test]
    fn borrowed_dimensions_hash_as_the_key_they_stand_for() {
        let key = SeriesKey(["svc", "op", "Server", "Ok"].map(str::to_owned));
        let dimensions = Dimensions(["svc", "op", "Server", "Ok"]);
        let hasher = hashbrown::DefaultHashBuilder::default();
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&dimensions));
        assert!(dimensions.equivalent(&key));
    }

    #[test]
    fn runs_of_one_series_count_every_span() {
        let metrics = Arc::new(SelfMetrics::default());
        let config = SpanMetricsConfig { max_series: 1, ..SpanMetricsConfig::default() };
        let span_metrics = SpanMetrics::new(config, metrics.clone());
        // Spans op-0, op-0, op-1, op-1, op-1, op-0: op-1 is past the limit.
        let sample = sample_traces_batch(2);
        let rows = [(0, 0), (0, 0), (0, 1), (0, 1), (0, 1), (0, 0)];
        let batch = arrow::compute::interleave_record_batch(&[&sample], &rows).expect("interleaved");
        span_metrics.record(&batch);
        let all = span_metrics.all.lock().expect("lock");
        let calls: Vec<u64> = all.series.values().map(|series| series.calls).collect();
        assert_eq!(calls, [3]);
        assert_eq!(all.overflow.as_ref().map(|series| series.calls), Some(3));
        assert_eq!(metrics.span_metrics_overflow_spans.get(), 3);
    }

    #[test]
    fn batches_add_up_per_series_and_past_the_limit_in_the_overflow_series() {
        let metrics = Arc::new(SelfMetrics::default());
        let config = SpanMetricsConfig { max_series: 2, ..SpanMetricsConfig::default() };
        let span_metrics = SpanMetrics::new(config, metrics.clone());
        // Spans op-0, op-1 and op-2: the third series is one too many.
        span_metrics.record(&sample_traces_batch(3));
        span_metrics.record(&sample_traces_batch(3));
        {
            let all = span_metrics.all.lock().expect("lock");
            assert_eq!(all.series.len(), 2);
            assert!(all.series.values().all(|series| series.calls == 2));
            assert_eq!(all.overflow.as_ref().map(|series| series.calls), Some(2));
        }
        assert_eq!(metrics.span_metrics_overflow_spans.get(), 2);

        let export = span_metrics.take_export().expect("series to export");
        let attributes: Vec<(String, String)> = export
            .resource_metrics
            .iter()
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
            .filter_map(|metric| match &metric.data {
                Some(metric::Data::Sum(sum)) => Some(&sum.data_points),
                _ => None,
            })
            .flatten()
            .flat_map(|point| &point.attributes)
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(value) => Some((
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )),
                _ => None,
            })
            .collect();
        for (key, value) in [("span.kind", "SPAN_KIND_SERVER"), ("status.code", "STATUS_CODE_ERROR")] {
            let found = attributes.iter().filter(|(k, v)| k == key && v == value).count();
            assert_eq!(found, 2, "{key}={value} on both series: {attributes:?}");
        }
    }
}
