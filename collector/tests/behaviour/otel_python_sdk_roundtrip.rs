//! The real OpenTelemetry Python SDK exports spans, metrics and logs over each OTLP transport,
//! and every value it sent can be read back with SQL exactly as sent, right after the export
//! and again after a SIGKILL and restart (which replays the requests from the WAL).
//!
//! `tests/interop/otel_sdk_export.py` does the export and writes a manifest of what went on
//! the wire, already spelled the way the tables store it (docs/interfaces-draft.md); this
//! test compares the tables to that manifest field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::support::{self, Collector, Record, assert_same_map, sql_string};

/// Acknowledged data must be queryable at once; this only absorbs scheduling jitter.
const QUERYABLE_WITHIN: Duration = Duration::from_secs(2);
/// Python start-up plus three exports; the SDK's own export timeout is 10 s per call.
const EXPORT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn python_sdk_grpc_export_reads_back_exactly_as_sent() {
    export_and_compare("grpc");
}

#[test]
fn python_sdk_http_protobuf_export_reads_back_exactly_as_sent() {
    export_and_compare("http-protobuf");
}

#[test]
fn python_sdk_http_json_export_reads_back_exactly_as_sent() {
    export_and_compare("http-json");
}

fn export_and_compare(transport: &str) {
    let mut collector = Collector::start();
    let manifest = export_with_python_sdk(&collector, transport);
    // Guards against a vacuous pass: an empty manifest would compare equal to empty tables.
    assert!(
        !manifest.spans.is_empty() && !manifest.metrics.is_empty() && !manifest.logs.is_empty(),
        "the export script reported nothing sent: {manifest:?}"
    );

    wait_until_stored(
        &collector,
        "otel_traces",
        &manifest.service_name,
        manifest.spans.len(),
    );
    wait_until_stored(
        &collector,
        "otel_logs",
        &manifest.service_name,
        manifest.logs.len(),
    );
    for table in METRIC_TABLES {
        let sent_points = manifest
            .metrics
            .iter()
            .filter(|point| point.values.table() == table)
            .count();
        wait_until_stored(&collector, table, &manifest.service_name, sent_points);
    }

    compare_all(&collector, &manifest, &format!("{transport}, right after the export"));
    collector.kill_hard();
    collector.restart();
    compare_all(&collector, &manifest, &format!("{transport}, after a SIGKILL and restart"));
}

fn compare_all(collector: &Collector, manifest: &Manifest, context: &str) {
    let span_counts = compare_spans(collector, manifest);
    let compared_points = compare_metrics(collector, manifest);
    let compared_logs = compare_logs(collector, manifest);
    println!(
        "{context}: {} spans ({} attributes, {} events, {} links), {compared_points} metric points, \
         {compared_logs} logs read back exactly as sent",
        span_counts.spans, span_counts.attributes, span_counts.events, span_counts.links
    );
}

fn export_with_python_sdk(collector: &Collector, transport: &str) -> Manifest {
    let manifest_path = collector
        .scratch_dir()
        .join(format!("manifest-{transport}.json"));
    let script = support::repo_root().join("tests/interop/otel_sdk_export.py");
    let mut command = Command::new(support::python());
    command
        .arg(&script)
        .arg("--grpc-endpoint")
        .arg(collector.grpc_endpoint())
        .arg("--http-endpoint")
        .arg(collector.http_endpoint())
        .arg("--transport")
        .arg(transport)
        .arg("--manifest")
        .arg(&manifest_path)
        .arg("--run-id")
        .arg(unique_run_id())
        // gRPC and requests honour proxy variables; the collector is on loopback.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let finished = support::run_to_completion(
        &mut command,
        EXPORT_SCRIPT_TIMEOUT,
        collector.scratch_dir(),
        &format!("otel-sdk-export-{transport}"),
    );
    assert!(
        finished.status.success(),
        "{} exited with {}\n{}\n{}",
        script.display(),
        finished.status,
        finished.report(),
        collector.log_tail()
    );
    read_manifest(&manifest_path)
}

fn unique_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock after 1970")
        .as_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

fn read_manifest(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("parse manifest {}: {error}", path.display()))
}

/// Polls until `table` holds exactly `expected` rows of `service_name`; more rows fail at
/// once (duplicates never turn into the right count later).
fn wait_until_stored(collector: &Collector, table: &str, service_name: &str, expected: usize) {
    let query = format!(
        r#"SELECT COUNT(*) AS stored_rows FROM {table} WHERE "ServiceName" = {}"#,
        sql_string(service_name)
    );
    let what = format!("{expected} rows of {service_name} in {table}");
    support::poll_until(QUERYABLE_WITHIN, &what, || {
        let (status, body) = collector.sql_raw(&query);
        if status != 200 {
            return Err(format!("SQL answered {status}: {body}"));
        }
        let stored = stored_count(&body);
        assert!(
            stored <= expected as u64,
            "{table} holds {stored} rows of {service_name}, only {expected} were sent"
        );
        if stored < expected as u64 {
            return Err(format!("{stored} rows so far"));
        }
        Ok(())
    });
}

fn stored_count(sql_response_body: &str) -> u64 {
    let result: support::SqlResult =
        serde_json::from_str(sql_response_body).unwrap_or_else(|error| {
            panic!("SQL response is not {{columns, rows}}: {error}: {sql_response_body}")
        });
    let value = result.single_value();
    value
        .as_u64()
        .unwrap_or_else(|| panic!("COUNT(*) is not an unsigned integer: {value}"))
}

// ---------------------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------------------

struct SpanCounts {
    spans: usize,
    attributes: usize,
    events: usize,
    links: usize,
}

fn compare_spans(collector: &Collector, manifest: &Manifest) -> SpanCounts {
    let query = format!(
        r#"SELECT CAST("Timestamp" AS BIGINT) AS timestamp_ns, "TraceId", "SpanId", "ParentSpanId",
                  "TraceState", "SpanName", "SpanKind", "ServiceName", "ResourceAttributes",
                  "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
                  "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes",
                  "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes"
           FROM otel_traces WHERE "ServiceName" = {}"#,
        sql_string(&manifest.service_name)
    );
    let result = collector.sql(&query);
    let stored: BTreeMap<&str, Record<'_>> = result
        .records()
        .map(|row| (row.str("SpanId"), row))
        .collect();
    let stored_ids: BTreeSet<&str> = stored.keys().copied().collect();
    let sent_ids: BTreeSet<&str> = manifest
        .spans
        .iter()
        .map(|span| span.span_id.as_str())
        .collect();
    assert_eq!(
        stored_ids, sent_ids,
        "span ids: stored (left) versus sent (right)"
    );

    let mut counts = SpanCounts {
        spans: 0,
        attributes: 0,
        events: 0,
        links: 0,
    };
    for sent in &manifest.spans {
        let Some(row) = stored.get(sent.span_id.as_str()) else {
            panic!("span {} was sent but is not stored", sent.span_id);
        };
        compare_span(row, sent);
        counts.spans += 1;
        counts.attributes += sent.attributes.len();
        counts.events += sent.events.len();
        counts.links += sent.links.len();
    }
    counts
}

fn compare_span(row: &Record<'_>, sent: &SentSpan) {
    let context = format!("span {:?} ({})", sent.name, sent.span_id);
    assert_eq!(row.str("TraceId"), sent.trace_id, "{context}: TraceId");
    assert_eq!(
        row.str("ParentSpanId"),
        sent.parent_span_id,
        "{context}: ParentSpanId"
    );
    assert_eq!(
        row.str("TraceState"),
        sent.trace_state,
        "{context}: TraceState"
    );
    assert_eq!(row.str("SpanName"), sent.name, "{context}: SpanName");
    assert_eq!(row.str("SpanKind"), sent.kind, "{context}: SpanKind");
    assert_eq!(
        row.i64("timestamp_ns"),
        sent.start_time_unix_nano,
        "{context}: Timestamp in ns"
    );
    assert_eq!(
        row.u64("Duration"),
        sent.duration_ns,
        "{context}: Duration in ns"
    );
    assert_eq!(
        row.str("StatusCode"),
        sent.status_code,
        "{context}: StatusCode"
    );
    assert_eq!(
        row.str("StatusMessage"),
        sent.status_message,
        "{context}: StatusMessage"
    );
    assert_eq!(
        row.str("ServiceName"),
        sent.service_name,
        "{context}: ServiceName"
    );
    assert_eq!(
        row.str("ScopeName"),
        sent.scope_name,
        "{context}: ScopeName"
    );
    assert_eq!(
        row.str("ScopeVersion"),
        sent.scope_version,
        "{context}: ScopeVersion"
    );
    assert_same_map(
        &format!("{context}: ResourceAttributes"),
        &row.string_map("ResourceAttributes"),
        &sent.resource_attributes,
    );
    assert_same_map(
        &format!("{context}: SpanAttributes"),
        &row.string_map("SpanAttributes"),
        &sent.attributes,
    );

    let sent_event_names: Vec<&str> = sent
        .events
        .iter()
        .map(|event| event.name.as_str())
        .collect();
    let sent_event_times: Vec<&str> = sent
        .events
        .iter()
        .map(|event| event.time_rfc3339.as_str())
        .collect();
    assert_eq!(
        row.string_list("Events.Name"),
        sent_event_names,
        "{context}: Events.Name"
    );
    assert_eq!(
        row.string_list("Events.Timestamp"),
        sent_event_times,
        "{context}: Events.Timestamp"
    );
    let stored_event_attributes = row.string_map_list("Events.Attributes");
    assert_eq!(
        stored_event_attributes.len(),
        sent.events.len(),
        "{context}: length of Events.Attributes"
    );
    for (index, (stored, event)) in stored_event_attributes.iter().zip(&sent.events).enumerate() {
        assert_same_map(
            &format!("{context}: Events.Attributes[{index}] ({})", event.name),
            stored,
            &event.attributes,
        );
    }

    let sent_link_trace_ids: Vec<&str> = sent
        .links
        .iter()
        .map(|link| link.trace_id.as_str())
        .collect();
    let sent_link_span_ids: Vec<&str> = sent
        .links
        .iter()
        .map(|link| link.span_id.as_str())
        .collect();
    let sent_link_trace_states: Vec<&str> = sent
        .links
        .iter()
        .map(|link| link.trace_state.as_str())
        .collect();
    assert_eq!(
        row.string_list("Links.TraceId"),
        sent_link_trace_ids,
        "{context}: Links.TraceId"
    );
    assert_eq!(
        row.string_list("Links.SpanId"),
        sent_link_span_ids,
        "{context}: Links.SpanId"
    );
    assert_eq!(
        row.string_list("Links.TraceState"),
        sent_link_trace_states,
        "{context}: Links.TraceState"
    );
    let stored_link_attributes = row.string_map_list("Links.Attributes");
    assert_eq!(
        stored_link_attributes.len(),
        sent.links.len(),
        "{context}: length of Links.Attributes"
    );
    for (index, (stored, link)) in stored_link_attributes.iter().zip(&sent.links).enumerate() {
        assert_same_map(
            &format!("{context}: Links.Attributes[{index}]"),
            stored,
            &link.attributes,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

const METRIC_TABLES: [&str; 4] = [
    "otel_metrics_gauge",
    "otel_metrics_sum",
    "otel_metrics_histogram",
    "otel_metrics_exp_histogram",
];

/// Columns every metric table has.
const COMMON_METRIC_COLUMNS: &str = r#""ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion",
    "MetricName", "MetricDescription", "MetricUnit", "Attributes",
    CAST("StartTimeUnix" AS BIGINT) AS start_time_ns, CAST("TimeUnix" AS BIGINT) AS time_ns, "Flags",
    "Exemplars.FilteredAttributes", "Exemplars.TimeUnix", "Exemplars.Value", "Exemplars.SpanId",
    "Exemplars.TraceId""#;

/// Columns only one metric table has.
fn table_specific_columns(table: &str) -> &'static str {
    match table {
        "otel_metrics_gauge" => r#""Value""#,
        "otel_metrics_sum" => r#""Value", "AggregationTemporality", "IsMonotonic""#,
        "otel_metrics_histogram" => {
            r#""Count", "Sum", "BucketCounts", "ExplicitBounds", "Min", "Max", "AggregationTemporality""#
        }
        "otel_metrics_exp_histogram" => {
            r#""Count", "Sum", "Scale", "ZeroCount", "ZeroThreshold", "PositiveOffset", "PositiveBucketCounts",
               "NegativeOffset", "NegativeBucketCounts", "Min", "Max", "AggregationTemporality""#
        }
        other => panic!("no such metric table {other}"),
    }
}

/// A data point is identified by its metric name and attribute set.
type PointKey = (String, BTreeMap<String, String>);

fn compare_metrics(collector: &Collector, manifest: &Manifest) -> usize {
    let mut compared = 0;
    for table in METRIC_TABLES {
        let query = format!(
            r#"SELECT {COMMON_METRIC_COLUMNS}, {} FROM {table} WHERE "ServiceName" = {}"#,
            table_specific_columns(table),
            sql_string(&manifest.service_name)
        );
        let result = collector.sql(&query);
        let stored: BTreeMap<PointKey, Record<'_>> = result
            .records()
            .map(|row| {
                (
                    (
                        row.str("MetricName").to_owned(),
                        row.string_map("Attributes"),
                    ),
                    row,
                )
            })
            .collect();
        let sent: BTreeMap<PointKey, &SentPoint> = manifest
            .metrics
            .iter()
            .filter(|point| point.values.table() == table)
            .map(|point| ((point.metric_name.clone(), point.attributes.clone()), point))
            .collect();
        let stored_keys: BTreeSet<&PointKey> = stored.keys().collect();
        let sent_keys: BTreeSet<&PointKey> = sent.keys().collect();
        assert_eq!(
            stored_keys, sent_keys,
            "{table}: (MetricName, Attributes) stored (left) versus sent (right)"
        );

        for (key, point) in &sent {
            let Some(row) = stored.get(key) else {
                panic!("{table}: point {key:?} was sent but is not stored");
            };
            compare_point(row, point, &format!("{table} {key:?}"));
            compared += 1;
        }
    }
    compared
}

fn compare_point(row: &Record<'_>, sent: &SentPoint, context: &str) {
    assert_eq!(
        row.str("ServiceName"),
        sent.service_name,
        "{context}: ServiceName"
    );
    assert_same_map(
        &format!("{context}: ResourceAttributes"),
        &row.string_map("ResourceAttributes"),
        &sent.resource_attributes,
    );
    assert_eq!(
        row.str("ScopeName"),
        sent.scope_name,
        "{context}: ScopeName"
    );
    assert_eq!(
        row.str("ScopeVersion"),
        sent.scope_version,
        "{context}: ScopeVersion"
    );
    assert_eq!(
        row.str("MetricDescription"),
        sent.description,
        "{context}: MetricDescription"
    );
    assert_eq!(row.str("MetricUnit"), sent.unit, "{context}: MetricUnit");
    assert_eq!(
        row.i64("start_time_ns"),
        sent.start_time_unix_nano,
        "{context}: StartTimeUnix in ns"
    );
    assert_eq!(
        row.i64("time_ns"),
        sent.time_unix_nano,
        "{context}: TimeUnix in ns"
    );
    assert_eq!(row.u64("Flags"), sent.flags, "{context}: Flags");
    compare_exemplars(row, &sent.exemplars, context);

    match &sent.values {
        SentValues::Gauge { value } => {
            assert_eq!(row.f64("Value"), *value, "{context}: Value");
        }
        SentValues::Sum {
            value,
            aggregation_temporality,
            is_monotonic,
        } => {
            assert_eq!(row.f64("Value"), *value, "{context}: Value");
            assert_eq!(
                row.i64("AggregationTemporality"),
                *aggregation_temporality,
                "{context}: AggregationTemporality"
            );
            assert_eq!(
                row.bool("IsMonotonic"),
                *is_monotonic,
                "{context}: IsMonotonic"
            );
        }
        SentValues::Histogram {
            count,
            sum,
            bucket_counts,
            explicit_bounds,
            min,
            max,
            aggregation_temporality,
        } => {
            assert_eq!(row.u64("Count"), *count, "{context}: Count");
            assert_eq!(row.f64("Sum"), *sum, "{context}: Sum");
            assert_eq!(
                &row.u64_list("BucketCounts"),
                bucket_counts,
                "{context}: BucketCounts"
            );
            assert_eq!(
                &row.f64_list("ExplicitBounds"),
                explicit_bounds,
                "{context}: ExplicitBounds"
            );
            assert_eq!(row.optional_f64("Min"), *min, "{context}: Min");
            assert_eq!(row.optional_f64("Max"), *max, "{context}: Max");
            assert_eq!(
                row.i64("AggregationTemporality"),
                *aggregation_temporality,
                "{context}: AggregationTemporality"
            );
        }
        SentValues::ExponentialHistogram {
            count,
            sum,
            scale,
            zero_count,
            zero_threshold,
            positive_offset,
            positive_bucket_counts,
            negative_offset,
            negative_bucket_counts,
            min,
            max,
            aggregation_temporality,
        } => {
            assert_eq!(row.u64("Count"), *count, "{context}: Count");
            assert_eq!(row.f64("Sum"), *sum, "{context}: Sum");
            assert_eq!(row.i64("Scale"), *scale, "{context}: Scale");
            assert_eq!(row.u64("ZeroCount"), *zero_count, "{context}: ZeroCount");
            assert_eq!(
                row.f64("ZeroThreshold"),
                *zero_threshold,
                "{context}: ZeroThreshold"
            );
            assert_eq!(
                row.i64("PositiveOffset"),
                *positive_offset,
                "{context}: PositiveOffset"
            );
            assert_eq!(
                &row.u64_list("PositiveBucketCounts"),
                positive_bucket_counts,
                "{context}: PositiveBucketCounts"
            );
            assert_eq!(
                row.i64("NegativeOffset"),
                *negative_offset,
                "{context}: NegativeOffset"
            );
            assert_eq!(
                &row.u64_list("NegativeBucketCounts"),
                negative_bucket_counts,
                "{context}: NegativeBucketCounts"
            );
            assert_eq!(row.optional_f64("Min"), *min, "{context}: Min");
            assert_eq!(row.optional_f64("Max"), *max, "{context}: Max");
            assert_eq!(
                row.i64("AggregationTemporality"),
                *aggregation_temporality,
                "{context}: AggregationTemporality"
            );
        }
    }
}

fn compare_exemplars(row: &Record<'_>, sent: &[SentExemplar], context: &str) {
    let sent_values: Vec<f64> = sent.iter().map(|exemplar| exemplar.value).collect();
    let sent_times: Vec<&str> = sent
        .iter()
        .map(|exemplar| exemplar.time_rfc3339.as_str())
        .collect();
    let sent_trace_ids: Vec<&str> = sent
        .iter()
        .map(|exemplar| exemplar.trace_id.as_str())
        .collect();
    let sent_span_ids: Vec<&str> = sent
        .iter()
        .map(|exemplar| exemplar.span_id.as_str())
        .collect();
    let sent_filtered: Vec<&BTreeMap<String, String>> = sent
        .iter()
        .map(|exemplar| &exemplar.filtered_attributes)
        .collect();
    assert_eq!(
        row.f64_list("Exemplars.Value"),
        sent_values,
        "{context}: Exemplars.Value"
    );
    assert_eq!(
        row.string_list("Exemplars.TimeUnix"),
        sent_times,
        "{context}: Exemplars.TimeUnix"
    );
    assert_eq!(
        row.string_list("Exemplars.TraceId"),
        sent_trace_ids,
        "{context}: Exemplars.TraceId"
    );
    assert_eq!(
        row.string_list("Exemplars.SpanId"),
        sent_span_ids,
        "{context}: Exemplars.SpanId"
    );
    let stored_filtered = row.string_map_list("Exemplars.FilteredAttributes");
    let stored_filtered: Vec<&BTreeMap<String, String>> = stored_filtered.iter().collect();
    assert_eq!(
        stored_filtered, sent_filtered,
        "{context}: Exemplars.FilteredAttributes"
    );
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

fn compare_logs(collector: &Collector, manifest: &Manifest) -> usize {
    let query = format!(
        r#"SELECT CAST("Timestamp" AS BIGINT) AS timestamp_ns,
                  CAST("ObservedTimestamp" AS BIGINT) AS observed_timestamp_ns, "TraceId", "SpanId",
                  "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body", "EventName",
                  "ResourceAttributes", "ScopeName", "ScopeVersion", "LogAttributes"
           FROM otel_logs WHERE "ServiceName" = {}"#,
        sql_string(&manifest.service_name)
    );
    let result = collector.sql(&query);
    // The script gives every record a distinct body, so the body identifies the record.
    let stored: BTreeMap<&str, Record<'_>> =
        result.records().map(|row| (row.str("Body"), row)).collect();
    let stored_bodies: BTreeSet<&str> = stored.keys().copied().collect();
    let sent_bodies: BTreeSet<&str> = manifest.logs.iter().map(|log| log.body.as_str()).collect();
    assert_eq!(
        stored_bodies, sent_bodies,
        "log bodies: stored (left) versus sent (right)"
    );

    for sent in &manifest.logs {
        let Some(row) = stored.get(sent.body.as_str()) else {
            panic!("log {:?} was sent but is not stored", sent.body);
        };
        let context = format!("log {:?}", sent.body);
        assert_eq!(
            row.i64("timestamp_ns"),
            sent.time_unix_nano,
            "{context}: Timestamp in ns"
        );
        assert_eq!(
            row.i64("observed_timestamp_ns"),
            sent.observed_time_unix_nano,
            "{context}: ObservedTimestamp in ns"
        );
        assert_eq!(row.str("TraceId"), sent.trace_id, "{context}: TraceId");
        assert_eq!(row.str("SpanId"), sent.span_id, "{context}: SpanId");
        assert_eq!(row.u64("TraceFlags"), sent.flags, "{context}: TraceFlags");
        assert_eq!(
            row.str("SeverityText"),
            sent.severity_text,
            "{context}: SeverityText"
        );
        assert_eq!(
            row.i64("SeverityNumber"),
            sent.severity_number,
            "{context}: SeverityNumber"
        );
        assert_eq!(
            row.str("EventName"),
            sent.event_name,
            "{context}: EventName"
        );
        assert_eq!(
            row.str("ServiceName"),
            sent.service_name,
            "{context}: ServiceName"
        );
        assert_eq!(
            row.str("ScopeName"),
            sent.scope_name,
            "{context}: ScopeName"
        );
        assert_eq!(
            row.str("ScopeVersion"),
            sent.scope_version,
            "{context}: ScopeVersion"
        );
        assert_same_map(
            &format!("{context}: ResourceAttributes"),
            &row.string_map("ResourceAttributes"),
            &sent.resource_attributes,
        );
        assert_same_map(
            &format!("{context}: LogAttributes"),
            &row.string_map("LogAttributes"),
            &sent.attributes,
        );
    }
    manifest.logs.len()
}

// ---------------------------------------------------------------------------------------------
// Manifest written by tests/interop/otel_sdk_export.py (fields not compared here are ignored)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Manifest {
    service_name: String,
    spans: Vec<SentSpan>,
    metrics: Vec<SentPoint>,
    logs: Vec<SentLog>,
}

#[derive(Debug, Deserialize)]
struct SentSpan {
    service_name: String,
    resource_attributes: BTreeMap<String, String>,
    scope_name: String,
    scope_version: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    trace_state: String,
    name: String,
    /// As the table stores it: "Server", "Client", ...
    kind: String,
    start_time_unix_nano: i64,
    duration_ns: u64,
    attributes: BTreeMap<String, String>,
    /// "Unset", "Ok" or "Error".
    status_code: String,
    status_message: String,
    events: Vec<SentEvent>,
    links: Vec<SentLink>,
}

#[derive(Debug, Deserialize)]
struct SentEvent {
    name: String,
    /// How the SQL API prints a timestamp inside a list column.
    time_rfc3339: String,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SentLink {
    trace_id: String,
    span_id: String,
    trace_state: String,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SentPoint {
    service_name: String,
    resource_attributes: BTreeMap<String, String>,
    scope_name: String,
    scope_version: String,
    metric_name: String,
    description: String,
    unit: String,
    attributes: BTreeMap<String, String>,
    start_time_unix_nano: i64,
    time_unix_nano: i64,
    flags: u64,
    exemplars: Vec<SentExemplar>,
    #[serde(flatten)]
    values: SentValues,
}

/// The values of a data point, by the table that stores it.
#[derive(Debug, Deserialize)]
#[serde(tag = "table")]
enum SentValues {
    #[serde(rename = "otel_metrics_gauge")]
    Gauge { value: f64 },
    #[serde(rename = "otel_metrics_sum")]
    Sum {
        value: f64,
        aggregation_temporality: i64,
        is_monotonic: bool,
    },
    #[serde(rename = "otel_metrics_histogram")]
    Histogram {
        count: u64,
        sum: f64,
        bucket_counts: Vec<u64>,
        explicit_bounds: Vec<f64>,
        min: Option<f64>,
        max: Option<f64>,
        aggregation_temporality: i64,
    },
    #[serde(rename = "otel_metrics_exp_histogram")]
    ExponentialHistogram {
        count: u64,
        sum: f64,
        scale: i64,
        zero_count: u64,
        zero_threshold: f64,
        positive_offset: i64,
        positive_bucket_counts: Vec<u64>,
        negative_offset: i64,
        negative_bucket_counts: Vec<u64>,
        min: Option<f64>,
        max: Option<f64>,
        aggregation_temporality: i64,
    },
}

impl SentValues {
    fn table(&self) -> &'static str {
        match self {
            SentValues::Gauge { .. } => "otel_metrics_gauge",
            SentValues::Sum { .. } => "otel_metrics_sum",
            SentValues::Histogram { .. } => "otel_metrics_histogram",
            SentValues::ExponentialHistogram { .. } => "otel_metrics_exp_histogram",
        }
    }
}

#[derive(Debug, Deserialize)]
struct SentExemplar {
    value: f64,
    time_rfc3339: String,
    trace_id: String,
    span_id: String,
    filtered_attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SentLog {
    service_name: String,
    resource_attributes: BTreeMap<String, String>,
    scope_name: String,
    scope_version: String,
    time_unix_nano: i64,
    observed_time_unix_nano: i64,
    /// Empty when the record was emitted outside a span.
    trace_id: String,
    span_id: String,
    flags: u64,
    severity_number: i64,
    severity_text: String,
    body: String,
    event_name: String,
    attributes: BTreeMap<String, String>,
}
