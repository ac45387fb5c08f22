//! SIGTERM flushes everything to Parquet; compaction joins small files and retention
//! drops expired partitions, both without changing what queries see.

use std::fs;
use std::time::Duration;

use crate::support::otlp::{attribute, now_nanos, post_traces, spans};
use crate::support::{Collector, poll_until};

const HOUR_NANOS: u64 = 3_600_000_000_000;
const TRACE_FILES: &str = "meshlight_parquet_files{table=\"otel_traces\"}";
const RESOURCES: &str = "meshlight_catalog_entries{catalog=\"resources\"}";

fn count(collector: &Collector) -> Option<u64> {
    collector.sql("SELECT count(*) AS n FROM otel_traces").single_value().as_u64()
}

fn flush(collector: &Collector) {
    let (status, body) = collector.post("/api/v1/admin/flush", "application/json", "").expect("flush");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn sigterm_flushes_the_memtable_and_empties_the_wal() {
    let mut collector = Collector::start();
    assert_eq!(post_traces(&collector.http_endpoint(), &spans("term", 0, 100, now_nanos())).status, 200);
    let status = collector.terminate();
    assert!(status.success(), "exit status {status}");

    // The WAL directory keeps the segment opened after the last flush and at most two
    // spare segments (see `store::wal`), but no record to replay.
    let names: Vec<String> = fs::read_dir(collector.data_dir().join("wal"))
        .expect("wal dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let spares = names.iter().filter(|name| name.starts_with("spare-")).count();
    assert_eq!(names.len() - spares, 1, "the segment opened after the last flush: {names:?}");
    assert!(spares <= 2, "{names:?}");

    collector.restart();
    assert_eq!(count(&collector), Some(100), "every record is in Parquet, none twice");
    assert_eq!(collector.metric_value("meshlight_wal_replayed_records_total"), Some(0.0));
    assert!(collector.metric_value(TRACE_FILES).is_some_and(|n| n >= 1.0));
}

/// SIGTERM waits for the compaction under way but starts no other: a backlog of them, as a
/// restart behind many small files has, is left to the next start instead of holding up the
/// exit (Kubernetes kills a pod that takes longer than its grace period).
#[test]
fn sigterm_leaves_a_backlog_of_compactions_to_the_next_start() {
    const FILES: usize = 60;
    let mut collector = Collector::start_with(&["--compaction-min-files", "1000"]);
    for n in 0..FILES {
        assert_eq!(post_traces(&collector.http_endpoint(), &spans("backlog", n as u64, 10, now_nanos())).status, 200);
        flush(&collector);
    }
    assert_eq!(collector.metric_value(TRACE_FILES), Some(FILES as f64));

    // Two files a compaction: a backlog of FILES - 1, which starts at the first maintenance.
    collector.restart_with(&[
        "--compaction-min-files", "2",
        "--compaction-max-input-files", "2",
        "--maintenance-interval-secs", "1",
    ]);
    poll_until(Duration::from_secs(10), "the first compaction", || match collector.metric_value("meshlight_compactions_total") {
        Some(compactions) if compactions >= 1.0 => Ok(()),
        compactions => Err(format!("{compactions:?} compactions")),
    });
    let status = collector.terminate();
    assert!(status.success(), "exit status {status}");

    let left = parquet_files(&collector.data_dir().join("otel_traces"));
    assert!(left > FILES / 2, "{left} of {FILES} files left: the exit waited for the backlog");
    collector.restart();
    assert_eq!(count(&collector), Some(FILES as u64 * 10), "nothing was lost");
}

/// The Parquet files under `dir`, at any depth.
fn parquet_files(dir: &std::path::Path) -> usize {
    fs::read_dir(dir)
        .expect("read a directory of the data")
        .map(|entry| entry.expect("a directory entry").path())
        .map(|path| {
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|extension| extension == "parquet"))
            }
        })
        .sum()
}

#[test]
fn compaction_concatenates_small_files_and_retention_drops_old_partitions() {
    // Row groups of 800 rows make a flush of 100 spans large enough to be final.
    let collector = Collector::start_with(&[
        "--row-group-rows", "800",
        "--compaction-min-files", "3",
        "--maintenance-interval-secs", "1",
        "--retention-hours", "2",
    ]);
    let now = now_nanos();
    for batch in 0..3 {
        assert_eq!(post_traces(&collector.http_endpoint(), &spans("compact", batch, 100, now)).status, 200);
        flush(&collector);
    }
    poll_until(Duration::from_secs(15), "three flushed files concatenated into one", || {
        let files = collector.metric_value(TRACE_FILES);
        if files == Some(1.0) { Ok(()) } else { Err(format!("{files:?} files")) }
    });
    assert!(collector.metric_value("meshlight_compactions_total").is_some_and(|n| n >= 1.0));
    assert_eq!(collector.metric_value("meshlight_compacted_rows_total{table=\"otel_traces\",method=\"concatenation\"}"), Some(300.0));
    assert_eq!(count(&collector), Some(300), "compaction changes no row");

    let old = now - 5 * HOUR_NANOS;
    assert_eq!(post_traces(&collector.http_endpoint(), &spans("expired", 9, 100, old)).status, 200);
    flush(&collector);
    poll_until(Duration::from_secs(15), "the expired partition dropped", || {
        let rows = collector
            .sql("SELECT count(*) AS n FROM otel_traces WHERE \"ServiceName\" = 'expired'")
            .single_value()
            .as_u64();
        if rows == Some(0) { Ok(()) } else { Err(format!("{rows:?} expired rows")) }
    });
    assert!(collector.metric_value("meshlight_retention_deleted_files_total").is_some_and(|n| n >= 1.0));
    assert_eq!(count(&collector), Some(300), "retention keeps recent data");
}

/// A span stores its resource's attributes by id, and each file holds each resource's
/// attributes once, in its first row of the resource. Here the row that brought them in
/// lands in a partition that retention drops: the other partition's rows keep theirs,
/// after compaction and after a restart that knows them only from the files. A resource
/// whose rows are all in that partition leaves the catalog with them.
#[test]
fn resource_attributes_outlive_the_partition_whose_row_brought_them() {
    let mut collector = Collector::start_with(&[
        "--compaction-min-files", "2",
        "--maintenance-interval-secs", "1",
        "--retention-hours", "2",
    ]);
    let now = now_nanos();
    let mut request = spans("pods", 0, 1, now - 5 * HOUR_NANOS);
    let recent = spans("pods", 1, 50, now);
    request.resource_spans[0].scope_spans[0].spans.extend(recent.resource_spans[0].scope_spans[0].spans.clone());
    request.resource_spans[0].resource.as_mut().expect("a resource").attributes.push(attribute("k8s.pod.name", "pods-7f9c"));
    assert_eq!(post_traces(&collector.http_endpoint(), &request).status, 200);
    assert_eq!(post_traces(&collector.http_endpoint(), &spans("gone", 3, 10, now - 5 * HOUR_NANOS)).status, 200);
    assert_eq!(collector.metric_value(RESOURCES), Some(2.0));
    flush(&collector);
    // A second file of the same resource, for compaction to join to the first.
    assert_eq!(post_traces(&collector.http_endpoint(), &spans("pods", 2, 50, now)).status, 200);
    flush(&collector);
    poll_until(Duration::from_secs(15), "the expired partition dropped and the recent one compacted", || {
        let files = collector.metric_value(TRACE_FILES);
        let resources = collector.metric_value(RESOURCES);
        if files == Some(1.0) && count(&collector) == Some(100) && resources == Some(2.0) {
            Ok(())
        } else {
            Err(format!("{files:?} files, {resources:?} resources"))
        }
    });

    collector.restart();
    assert_eq!(collector.metric_value(RESOURCES), Some(2.0), "rebuilt from the files");
    let pods = collector.sql(
        "SELECT \"ResourceAttributes\"['k8s.pod.name'] AS pod, \"ResourceAttributes\"['service.name'] AS service, count(*) AS n \
         FROM otel_traces GROUP BY 1, 2 ORDER BY 1",
    );
    let rows: Vec<_> = pods.records().map(|row| (row.get("pod").clone(), row.str("service").to_owned(), row.u64("n"))).collect();
    assert_eq!(
        rows,
        vec![(serde_json::Value::String("pods-7f9c".into()), "pods".to_owned(), 50), (serde_json::Value::Null, "pods".to_owned(), 50)],
        "every row has its own resource's attributes",
    );
    let filtered = collector.sql("SELECT count(*) AS n FROM otel_traces WHERE \"ResourceAttributes\"['k8s.pod.name'] = 'pods-7f9c'");
    assert_eq!(filtered.single_value().as_u64(), Some(50), "filters see the filled-in attributes");
}
