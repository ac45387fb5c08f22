//! Acknowledged data is queryable at once from the memtable, stays visible exactly once
//! across a flush, and a trace lookup prunes Parquet row groups with the bloom filter.

use std::time::{Duration, Instant};

use crate::support::otlp::{GrpcClient, now_nanos, spans};
use crate::support::{Collector, poll_until};

#[test]
fn acknowledged_spans_are_queryable_within_a_second_and_once_after_flush() {
    let collector = Collector::start();
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    client.export(spans("fresh", 0, 100, now_nanos())).expect("acknowledged");
    let acknowledged_at = Instant::now();
    poll_until(Duration::from_secs(1), "spans visible after the ack", || {
        let count = collector.sql("SELECT count(*) AS n FROM otel_traces").single_value().as_u64();
        if count == Some(100) { Ok(()) } else { Err(format!("count {count:?}")) }
    });
    println!("queryable {:?} after acknowledgement", acknowledged_at.elapsed());
    assert_eq!(
        collector.metric_value("meshlight_parquet_files{table=\"otel_traces\"}"),
        Some(0.0),
        "nothing was flushed to Parquet yet"
    );

    let (status, body) = collector.post("/api/v1/admin/flush", "application/json", "").expect("flush");
    assert_eq!(status, 200, "{body}");
    assert!(collector.metric_value("meshlight_parquet_files{table=\"otel_traces\"}").is_some_and(|n| n >= 1.0));
    let count = collector.sql("SELECT count(*) AS n FROM otel_traces").single_value().as_u64();
    assert_eq!(count, Some(100), "flushed rows are seen once");

    let trace = collector.sql("SELECT \"TraceId\" FROM otel_traces ORDER BY \"TraceId\" LIMIT 1 OFFSET 50");
    let trace_id = trace.single_value().as_str().expect("a trace id").to_owned();
    let found = collector.sql(&format!("SELECT \"SpanId\" FROM otel_traces WHERE \"TraceId\" = '{trace_id}'"));
    assert_eq!(found.rows.len(), 1);

    // An id between two stored ones: min/max statistics cannot rule it out, the bloom
    // filter can.
    let absent = format!("{}g", &trace_id[..31]);
    let plan = collector.sql(&format!(
        "EXPLAIN ANALYZE SELECT \"SpanId\" FROM otel_traces WHERE \"TraceId\" = '{absent}'"
    ));
    let plan_text = format!("{:?}", plan.rows);
    assert!(
        plan_text.contains("row_groups_pruned_bloom_filter=1 total → 0 matched")
            || plan_text.contains("row_groups_pruned_bloom_filter=1"),
        "the bloom filter pruned the row group: {plan_text}"
    );
}
