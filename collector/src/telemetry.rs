//! The collector's own metrics, served on `/metrics`. Every name is declared here, once.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-signal item counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub signal: &'static str,
}

/// Labels of counters that also say why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalReasonLabels {
    pub signal: &'static str,
    pub reason: &'static str,
}

/// Labels of per-table gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

/// Labels of the rows compaction writes: per table, and whether a merge re-encoded them or a
/// concatenation copied them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompactionLabels {
    pub table: &'static str,
    /// `merge` or `concatenation`.
    pub method: &'static str,
}

/// Labels of the in-memory catalogs' gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CatalogLabels {
    pub catalog: &'static str,
}

/// All self-metrics. Cheap to clone handles are inside; share it behind an `Arc`.
pub struct SelfMetrics {
    registry: Registry,
    /// Items (spans, log records, data points) in requests that were decoded.
    pub items_received: Family<SignalLabels, Counter>,
    /// Items stored and acknowledged.
    pub items_accepted: Family<SignalLabels, Counter>,
    /// Items refused with a retryable status (memory limit, shutdown, WAL failure).
    pub items_refused: Family<SignalReasonLabels, Counter>,
    /// Items rejected as invalid through OTLP partial success.
    pub items_rejected: Family<SignalReasonLabels, Counter>,
    /// Whole requests refused before their items could be counted (undecodable, too large…).
    pub requests_failed: Family<SignalReasonLabels, Counter>,
    pub wal_bytes_written: Counter,
    pub wal_fsync_seconds: Histogram,
    pub wal_replayed_records: Counter,
    /// WAL segments found with a torn or corrupt tail on replay.
    pub wal_damaged_segments: Counter,
    /// Bytes skipped on replay: torn or corrupt WAL tails, and records that no longer convert.
    pub wal_skipped_bytes: Counter,
    pub memtable_bytes: Gauge,
    pub flush_seconds: Histogram,
    pub flush_failures: Counter,
    /// Flushes started early because admission refused a request for memory.
    pub pressure_flushes: Counter,
    pub compaction_seconds: Histogram,
    pub compactions: Counter,
    /// Rows written by compactions: divided by the rows ingested, how many times compaction
    /// rewrote (merged) or copied (concatenated) each row.
    pub compacted_rows: Family<CompactionLabels, Counter>,
    pub retention_deleted_files: Counter,
    pub parquet_bytes: Family<TableLabels, Gauge>,
    pub parquet_files: Family<TableLabels, Gauge>,
    /// Entries of the store's in-memory catalogs: `resources` (attributes by `ResourceId`)
    /// and `metrics` (what PromQL lists).
    pub catalog_entries: Family<CatalogLabels, Gauge>,
    /// Spans counted in the span-metrics overflow series because `max_series` was reached.
    pub span_metrics_overflow_spans: Counter,
    /// Span-metrics writes that failed (retried next interval: the series are cumulative).
    pub span_metrics_failed_writes: Counter,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        let duration_buckets = || exponential_buckets(0.0001, 2.0, 20);
        let mut m = SelfMetrics {
            registry: Registry::with_prefix("meshlight"),
            items_received: Family::default(),
            items_accepted: Family::default(),
            items_refused: Family::default(),
            items_rejected: Family::default(),
            requests_failed: Family::default(),
            wal_bytes_written: Counter::default(),
            wal_fsync_seconds: Histogram::new(duration_buckets()),
            wal_replayed_records: Counter::default(),
            wal_damaged_segments: Counter::default(),
            wal_skipped_bytes: Counter::default(),
            memtable_bytes: Gauge::default(),
            flush_seconds: Histogram::new(duration_buckets()),
            flush_failures: Counter::default(),
            pressure_flushes: Counter::default(),
            compaction_seconds: Histogram::new(duration_buckets()),
            compactions: Counter::default(),
            compacted_rows: Family::default(),
            retention_deleted_files: Counter::default(),
            parquet_bytes: Family::default(),
            parquet_files: Family::default(),
            catalog_entries: Family::default(),
            span_metrics_overflow_spans: Counter::default(),
            span_metrics_failed_writes: Counter::default(),
        };
        let registry = &mut m.registry;
        registry.register("ingest_items_received", "Items decoded from requests", m.items_received.clone());
        registry.register("ingest_items_accepted", "Items stored and acknowledged", m.items_accepted.clone());
        registry.register("ingest_items_refused", "Items refused with a retryable status", m.items_refused.clone());
        registry.register("ingest_items_rejected", "Invalid items rejected via partial success", m.items_rejected.clone());
        registry.register("ingest_requests_failed", "Requests refused as a whole", m.requests_failed.clone());
        registry.register("wal_written_bytes", "Bytes appended to the WAL", m.wal_bytes_written.clone());
        registry.register("wal_fsync_seconds", "WAL fsync latency", m.wal_fsync_seconds.clone());
        registry.register("wal_replayed_records", "WAL records replayed at start", m.wal_replayed_records.clone());
        registry.register("wal_damaged_segments", "WAL segments with a torn or corrupt tail at replay", m.wal_damaged_segments.clone());
        registry.register("wal_skipped_bytes", "Bytes of WAL records skipped at replay: torn or corrupt tails, and requests that no longer convert", m.wal_skipped_bytes.clone());
        registry.register("memtable_bytes", "Arrow bytes held in the memtable", m.memtable_bytes.clone());
        registry.register("flush_seconds", "Duration of memtable flushes to Parquet", m.flush_seconds.clone());
        registry.register("flush_failures", "Flushes that failed and will be retried", m.flush_failures.clone());
        registry.register("pressure_flushes", "Flushes started early because ingest was refused for memory", m.pressure_flushes.clone());
        registry.register("compaction_seconds", "Duration of compactions", m.compaction_seconds.clone());
        registry.register("compactions", "Compactions completed", m.compactions.clone());
        registry.register("compacted_rows", "Rows written by compactions, per table and method (merge or concatenation)", m.compacted_rows.clone());
        registry.register("retention_deleted_files", "Parquet files deleted by retention", m.retention_deleted_files.clone());
        registry.register("parquet_bytes", "Bytes of Parquet files per table", m.parquet_bytes.clone());
        registry.register("parquet_files", "Parquet files per table", m.parquet_files.clone());
        registry.register("catalog_entries", "Entries of the store's in-memory catalogs: resources by id, and metrics", m.catalog_entries.clone());
        registry.register("span_metrics_overflow_spans", "Spans counted in the span-metrics overflow series", m.span_metrics_overflow_spans.clone());
        registry.register("span_metrics_failed_writes", "Span-metrics writes that failed", m.span_metrics_failed_writes.clone());
        m
    }
}

impl SelfMetrics {
    /// Adds alerting's metrics, as `meshlight_alerting_*`.
    pub fn register_alerting(&mut self, alerting: &meshlight_alerting::AlertingMetrics) {
        alerting.register(self.registry.sub_registry_with_prefix("alerting"));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
