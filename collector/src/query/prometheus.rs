//! Stored OpenTelemetry metrics as Prometheus series, read through SQL, for the PromQL
//! engine.
//!
//! The translation is the one of Prometheus's OTLP receiver and the OpenTelemetry
//! Collector's Prometheus exporters:
//! - names: characters outside `[a-zA-Z0-9_:]` become `_`, then the unit is appended as a
//!   word (`s` → `_seconds`, `By` → `_bytes`, `{request}` annotations dropped, `m/s` →
//!   `_meters_per_second`, unit `1` on a gauge → `_ratio`), then `_total` for monotonic
//!   cumulative sums;
//! - histograms: `<name>_bucket{le="…"}` with cumulative counts (`le="+Inf"` is the
//!   count), `<name>_sum` and `<name>_count`; summaries: `<name>{quantile="…"}`,
//!   `<name>_sum`, `<name>_count`; exponential histograms are native histograms and are
//!   not exposed;
//! - labels: data point attributes with the same character rule (a leading digit gets
//!   `key_`), plus `job` (`service.namespace/service.name`), `instance`
//!   (`service.instance.id`) and `service_name` from the resource.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;

use super::{QueryError, SqlEngine};
use crate::schema::Table;
use crate::promql::{self, format_value, Labels, METRIC_NAME, Millis, Selection, SeriesSource, StoredSeries};

/// How a stored metric appears to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// A monotonic cumulative sum.
    Counter,
    Histogram,
    Summary,
}

impl MetricKind {
    /// The `type` of Prometheus's metadata API.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// One stored metric and its Prometheus name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub table: &'static str,
    pub otel_name: String,
    pub unit: String,
    pub description: String,
    pub kind: MetricKind,
    /// The base name; histograms and summaries add `_bucket`, `_sum` and `_count`.
    pub name: String,
}

impl CatalogEntry {
    /// The series names this metric contributes.
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Gauge | MetricKind::Counter => vec![self.name.clone()],
            MetricKind::Histogram => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
            MetricKind::Summary => ["", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
        }
    }
}

/// The Prometheus base name of an OpenTelemetry metric.
pub fn prometheus_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut out = sanitize(name);
    let unit_words = unit_suffix(unit, kind);
    if !unit_words.is_empty() && !out.ends_with(&format!("_{unit_words}")) {
        out.push('_');
        out.push_str(&unit_words);
    }
    if kind == MetricKind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// `[a-zA-Z0-9_:]` kept, runs of anything else become one `_`; a leading digit gets `_`.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label name: the name rule, with `key_` before a leading digit.
pub fn label_name(key: &str) -> String {
    let mut out: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// The words a UCUM unit adds to a name (`ms` → `milliseconds`, `By/s` → `bytes_per_second`).
fn unit_suffix(unit: &str, kind: MetricKind) -> String {
    let unit = strip_annotations(unit);
    if unit == "1" {
        return if kind == MetricKind::Gauge { "ratio".into() } else { String::new() };
    }
    let (main, per) = unit.split_once('/').unwrap_or((&unit, ""));
    let main = unit_word(main).map(str::to_owned).unwrap_or_else(|| sanitize(main).trim_matches('_').to_owned());
    let per = if per.is_empty() {
        String::new()
    } else {
        per_unit_word(per).map(str::to_owned).unwrap_or_else(|| sanitize(per).trim_matches('_').to_owned())
    };
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The stored metrics, read through [`SqlEngine`] (never from the store directly).
pub struct StoredMetrics<'a> {
    sql: &'a SqlEngine,
    /// Most rows one selector may read.
    max_rows: usize,
}

impl<'a> StoredMetrics<'a> {
    pub fn new(sql: &'a SqlEngine, max_rows: usize) -> Self {
        Self { sql, max_rows }
    }

    /// Every metric with a point in `[start, end]` (milliseconds).
    pub async fn catalog(&self, start: Millis, end: Millis) -> promql::Result<Vec<CatalogEntry>> {
        let time = time_filter(start, end);
        let sql = format!(
            "SELECT 'otel_metrics_gauge' AS t, \"MetricName\", \"MetricUnit\", max(\"MetricDescription\") AS d, false AS counter FROM otel_metrics_gauge WHERE {time} GROUP BY 2, 3 \
             UNION ALL SELECT 'otel_metrics_sum', \"MetricName\", \"MetricUnit\", max(\"MetricDescription\"), bool_or(\"IsMonotonic\" AND \"AggregationTemporality\" = 2) FROM otel_metrics_sum WHERE {time} GROUP BY 2, 3 \
             UNION ALL SELECT 'otel_metrics_histogram', \"MetricName\", \"MetricUnit\", max(\"MetricDescription\"), false FROM otel_metrics_histogram WHERE {time} GROUP BY 2, 3 \
             UNION ALL SELECT 'otel_metrics_summary', \"MetricName\", \"MetricUnit\", max(\"MetricDescription\"), false FROM otel_metrics_summary WHERE {time} GROUP BY 2, 3"
        );
        let result = self.sql.query_with_row_limit(&sql, self.max_rows).await.map_err(storage_error)?;
        let mut entries = Vec::new();
        for batch in &result.batches {
            let (tables, names, units, descriptions) = (strings(batch, 0), strings(batch, 1), strings(batch, 2), strings(batch, 3));
            let counters = batch.column(4).as_boolean();
            for row in 0..batch.num_rows() {
                let Some(table) = Table::ALL.into_iter().find(|t| t.name() == tables.value(row)) else { continue };
                let kind = match table {
                    Table::MetricsHistogram => MetricKind::Histogram,
                    Table::MetricsSummary => MetricKind::Summary,
                    _ if counters.value(row) => MetricKind::Counter,
                    _ => MetricKind::Gauge,
                };
                let (otel_name, unit) = (names.value(row), units.value(row));
                entries.push(CatalogEntry {
                    table: table.name(),
                    otel_name: otel_name.to_owned(),
                    unit: unit.to_owned(),
                    description: if descriptions.is_null(row) { String::new() } else { descriptions.value(row).to_owned() },
                    kind,
                    name: prometheus_name(otel_name, unit, kind),
                });
            }
        }
        Ok(entries)
    }

    async fn read(&self, entry: &CatalogEntry, selection: &Selection<'_>, out: &mut SeriesMap) -> promql::Result<()> {
        let columns = match entry.kind {
            MetricKind::Gauge | MetricKind::Counter => "\"Value\"",
            MetricKind::Histogram => "\"Count\", \"Sum\", \"BucketCounts\", \"ExplicitBounds\"",
            MetricKind::Summary => "\"Count\", \"Sum\", \"ValueAtQuantiles.Quantile\", \"ValueAtQuantiles.Value\"",
        };
        let sql = format!(
            "SELECT \"ResourceAttributes\", \"Attributes\", \"TimeUnix\", {columns} FROM {} WHERE \"MetricName\" = '{}' AND \"MetricUnit\" = '{}' AND {}",
            entry.table,
            entry.otel_name.replace('\'', "''"),
            entry.unit.replace('\'', "''"),
            time_filter(selection.start, selection.end)
        );
        let result = self.sql.query_with_row_limit(&sql, self.max_rows).await.map_err(storage_error)?;
        for batch in &result.batches {
            let resources = batch.column(0).as_map();
            let attributes = batch.column(1).as_map();
            let times = batch.column(2).as_primitive::<TimestampNanosecondType>();
            for row in 0..batch.num_rows() {
                let at = times.value(row).div_euclid(1_000_000);
                let labels = series_labels(resources, attributes, row);
                let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                    let mut pairs = labels.clone();
                    pairs.insert(METRIC_NAME.to_owned(), format!("{}{suffix}", entry.name));
                    if let Some((name, value)) = extra {
                        pairs.insert(name.to_owned(), value);
                    }
                    let labels = Labels::from_pairs(pairs);
                    if selection.matches(&labels) {
                        out.entry(labels).or_default().push((at, value));
                    }
                };
                match entry.kind {
                    MetricKind::Gauge | MetricKind::Counter => push("", None, batch.column(3).as_primitive::<Float64Type>().value(row)),
                    MetricKind::Histogram | MetricKind::Summary => {
                        let count = batch.column(3).as_primitive::<UInt64Type>().value(row) as f64;
                        push("_count", None, count);
                        push("_sum", None, batch.column(4).as_primitive::<Float64Type>().value(row));
                        let (first, second) = (batch.column(5).as_list::<i32>().value(row), batch.column(6).as_list::<i32>().value(row));
                        if entry.kind == MetricKind::Histogram {
                            let (counts, bounds) = (first.as_primitive::<UInt64Type>(), second.as_primitive::<Float64Type>());
                            let mut cumulative = 0.0;
                            for (i, bound) in bounds.values().iter().enumerate() {
                                cumulative += counts.values().get(i).copied().unwrap_or(0) as f64;
                                push("_bucket", Some(("le", format_value(*bound))), cumulative);
                            }
                            push("_bucket", Some(("le", "+Inf".into())), count);
                        } else {
                            let (quantiles, values) = (first.as_primitive::<Float64Type>(), second.as_primitive::<Float64Type>());
                            for (quantile, value) in quantiles.values().iter().zip(values.values()) {
                                push("", Some(("quantile", format_value(*quantile))), *value);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

type SeriesMap = HashMap<Labels, Vec<(Millis, f64)>>;

impl SeriesSource for StoredMetrics<'_> {
    async fn select(&self, selection: Selection<'_>) -> promql::Result<Vec<StoredSeries>> {
        let names: Vec<_> = selection.matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
        let mut series = SeriesMap::new();
        for entry in self.catalog(selection.start, selection.end).await? {
            if entry.series_names().iter().any(|name| names.iter().all(|m| m.is_match(name))) {
                self.read(&entry, &selection, &mut series).await?;
            }
        }
        Ok(series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|(at, _)| *at);
                samples.dedup_by_key(|(at, _)| *at);
                StoredSeries { labels, samples }
            })
            .collect())
    }
}

fn time_filter(start: Millis, end: Millis) -> String {
    let (start, end) = (start.saturating_mul(1_000_000), end.saturating_mul(1_000_000));
    format!("\"TimeUnix\" >= to_timestamp_nanos({start}) AND \"TimeUnix\" <= to_timestamp_nanos({end})")
}

fn strings(batch: &RecordBatch, column: usize) -> &arrow::array::StringArray {
    batch.column(column).as_string::<i32>()
}

/// A row's labels without the name: its attributes, then `job`, `instance` and
/// `service_name` from the resource.
fn series_labels(resources: &MapArray, attributes: &MapArray, row: usize) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (key, value) in map_entries(attributes, row) {
        labels.insert(label_name(key), value.to_owned());
    }
    let resource: HashMap<&str, &str> = map_entries(resources, row).collect();
    if let Some(service) = resource.get("service.name") {
        let mut job = String::new();
        if let Some(namespace) = resource.get("service.namespace") {
            let _ = write!(job, "{namespace}/");
        }
        job.push_str(service);
        labels.insert("job".into(), job);
        labels.insert("service_name".into(), (*service).to_owned());
    }
    if let Some(instance) = resource.get("service.instance.id") {
        labels.insert("instance".into(), (*instance).to_owned());
    }
    labels
}

fn map_entries(map: &MapArray, row: usize) -> impl Iterator<Item = (&str, &str)> {
    let offsets = map.value_offsets();
    let (keys, values) = (map.keys().as_string::<i32>(), map.values().as_string::<i32>());
    let range = if map.is_null(row) { 0..0 } else { offsets[row] as usize..offsets[row + 1] as usize };
    range.filter(move |i| !values.is_null(*i)).map(move |i| (keys.value(i), values.value(i)))
}

fn storage_error(error: QueryError) -> promql::QueryError {
    match error {
        QueryError::TooManyRows(limit) => {
            promql::QueryError::execution(format!("query processing would load too many samples into memory (more than {limit} rows of one metric)"))
        }
        QueryError::Timeout(_) => promql::QueryError { kind: promql::ErrorKind::Timeout, message: "query timed out in expression evaluation".into() },
        other => promql::QueryError { kind: promql::ErrorKind::Internal, message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otlp_translation() {
        assert_eq!(prometheus_name("http.server.request.duration", "s", MetricKind::Histogram), "http_server_request_duration_seconds");
        assert_eq!(prometheus_name("traces.span.metrics.calls", "1", MetricKind::Counter), "traces_span_metrics_calls_total");
        assert_eq!(prometheus_name("queue.size", "{item}", MetricKind::Gauge), "queue_size");
        assert_eq!(prometheus_name("cpu.utilization", "1", MetricKind::Gauge), "cpu_utilization_ratio");
        assert_eq!(prometheus_name("net.io", "By/s", MetricKind::Gauge), "net_io_bytes_per_second");
        assert_eq!(prometheus_name("requests_total", "", MetricKind::Counter), "requests_total");
        assert_eq!(prometheus_name("latency_seconds", "s", MetricKind::Gauge), "latency_seconds");
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("1st"), "key_1st");
    }
}
