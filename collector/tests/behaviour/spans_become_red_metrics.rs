//! Every acknowledged span updates the span-derived RED metrics, written as metrics with the
//! slowest span of the interval as exemplar; past `max_series`, new series share one
//! overflow series, and the spans it absorbed are counted.

use std::time::Duration;

use serde_json::Value;

use crate::support::otlp::{now_nanos, post_traces, spans};
use crate::support::{Collector, poll_until};

const DURATION_ROWS: &str = r#"SELECT "ServiceName", "Attributes", "Count", "Sum", "MetricUnit",
    "Exemplars.TraceId" AS exemplar_trace_ids
    FROM otel_metrics_histogram WHERE "MetricName" = 'traces.span.metrics.duration'
    ORDER BY "TimeUnix" DESC"#;

#[test]
fn spans_are_counted_per_service_name_kind_and_status_with_exemplars() {
    let collector = Collector::start_with(&[
        "--span-metrics-interval-secs",
        "1",
        "--span-metrics-max-series",
        "5",
    ]);
    // Seven span names (op-0 … op-6), 70 spans of 1 ms each.
    let reply = post_traces(
        &collector.http_endpoint(),
        &spans("checkout", 1, 70, now_nanos()),
    );
    assert_eq!(reply.status, 200);

    let rows = poll_until(Duration::from_secs(30), "span metrics written", || {
        let result = collector.sql(DURATION_ROWS);
        let total: u64 = latest_per_series(&result.rows)
            .iter()
            .map(|row| row[2].as_u64().unwrap_or(0))
            .sum();
        if total == 70 {
            Ok(result.rows)
        } else {
            Err(format!("{total} of 70 spans counted"))
        }
    });
    let latest = latest_per_series(&rows);
    assert_eq!(
        latest.len(),
        6,
        "5 series and the overflow series: {latest:#?}"
    );
    for row in &latest {
        assert_eq!(row[4], "s");
        assert!(row[3].as_f64().is_some_and(|sum| sum > 0.0));
        let attributes = &row[1];
        if attributes.get("otel.metric.overflow").is_some() {
            assert_eq!(row[0], "", "the overflow series belongs to no service");
            continue;
        }
        assert_eq!(row[0], "checkout");
        assert_eq!(attributes["span.kind"], "SPAN_KIND_SERVER");
        assert_eq!(attributes["status.code"], "STATUS_CODE_UNSET");
        assert!(
            attributes["span.name"]
                .as_str()
                .is_some_and(|name| name.starts_with("op-"))
        );
    }
    let exemplar_trace_ids: Vec<&str> = latest
        .iter()
        .filter_map(|row| row[5].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !exemplar_trace_ids.is_empty()
            && exemplar_trace_ids
                .iter()
                .all(|id| id.starts_with("abababababababab"))
    );

    let overflowed = collector.metric_value("meshlight_span_metrics_overflow_spans_total");
    assert_eq!(
        overflowed,
        Some(20.0),
        "op-5 and op-6, 10 spans each, went to the overflow series"
    );
}

/// The most recent row of each series (rows come newest first).
fn latest_per_series(rows: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .filter(|row| seen.insert((row[0].to_string(), row[1].to_string())))
        .cloned()
        .collect()
}
