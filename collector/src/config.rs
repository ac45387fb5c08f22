//! Configuration of `meshlight serve`: a TOML file (`--config`) holding every setting and
//! limit, each of which a command-line flag can override. Defaults work on a laptop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `meshlight serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// OTLP/gRPC listen address.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub otlp_http: SocketAddr,
    /// Query API, `/metrics`, `/ready` and `/health` listen address.
    pub api: SocketAddr,
    /// Where the WAL and the Parquet files live.
    pub data_dir: PathBuf,
    /// Ingest limits.
    pub limits: Limits,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// Parquet files: flush, layout, compaction and retention.
    pub storage: StorageConfig,
    /// SQL query limits.
    pub query: QueryConfig,
    /// RED metrics derived from the spans ingested.
    pub span_metrics: SpanMetricsConfig,
    /// PromQL queries (the Prometheus HTTP API).
    pub promql: PromqlConfig,
    /// Alerting and recording rules, receivers and routes (see `meshlight_alerting::config`).
    pub alerting: meshlight_alerting::AlertingConfig,
    /// Profile ingest (`POST /ingest` on the OTLP/HTTP port) and queries.
    pub profiles: ProfilesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            otlp_grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            api: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("./meshlight-data"),
            limits: Limits::default(),
            wal: WalConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            span_metrics: SpanMetricsConfig::default(),
            promql: PromqlConfig::default(),
            alerting: meshlight_alerting::AlertingConfig::default(),
            profiles: ProfilesConfig::default(),
        }
    }
}

/// Ingest limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body after decompression, in bytes. Larger requests get HTTP 413 or
    /// gRPC RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// Memory that buffered data (memtable plus requests being written) may use. Over it,
    /// ingest refuses with retryable codes (HTTP 503 + Retry-After, gRPC UNAVAILABLE +
    /// RetryInfo) until a flush frees memory. Requests reserve it before they are decoded
    /// (a JSON body: 4 times its size for the parse) and again for their rows; one that
    /// alone would take more gets HTTP 413 or gRPC RESOURCE_EXHAUSTED.
    pub memory_limit_bytes: usize,
    /// Seconds a refused client is told to wait before retrying.
    pub retry_after_secs: u64,
    /// Largest HTTP/2 frame an OTLP/gRPC client may send (16 384 to 16 777 215). A request
    /// arrives in frames of at most this size, each handled on its own, and a connection's
    /// read buffer grows to hold one. The default is the connection's flow-control window
    /// (1 MiB), which bounds what a client may have in flight anyway. HTTP/2's own default,
    /// 16 KiB, cut a request of 500 spec spans (277 KB) into 17 frames; 1 MiB frames took
    /// about 0.1 µs a span, 4 %, off the request path's CPU time.
    pub grpc_max_frame_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 << 20,
            memory_limit_bytes: 512 << 20,
            retry_after_secs: 1,
            grpc_max_frame_bytes: 1 << 20,
        }
    }
}

/// When the WAL is fsynced, trading durability against throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before acknowledging (group commit): acknowledged data survives power loss.
    Always,
    /// Acknowledge after the write reaches the OS, fsync every `fsync_interval_ms`:
    /// survives a process crash, may lose the last interval on power loss.
    Interval,
    /// Never fsync; the OS writes back when it likes. Survives a process crash only.
    Never,
}

/// Write-ahead log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// fsync policy: `always` (default), `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// fsync period for the `interval` policy.
    pub fsync_interval_ms: u64,
    /// Most bytes one group commit writes before acknowledging.
    pub group_commit_max_bytes: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            group_commit_max_bytes: 16 << 20,
        }
    }
}

/// Parquet layout, flush, compaction and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Flush the memtable to Parquet once it holds this many Arrow bytes.
    pub flush_bytes: usize,
    /// …or once its oldest data is this old.
    pub flush_interval_secs: u64,
    /// Most rows in a Parquet row group. Smaller groups prune better and take less memory
    /// to write (a writer holds the compressed row group it is writing); larger ones
    /// compress a little better.
    pub row_group_rows: usize,
    /// zstd level of Parquet files (1–22): of flushes of spans and log records, and of
    /// every merge. Flushes of metrics and profiles, and small ones of spans and log
    /// records, are written uncompressed, since compaction merges them soon. Pages are
    /// small (4096 rows of a column), so higher levels find little more to remove: merging
    /// flushed mesh spans at level 3 took about 10 % more CPU than at 1 for 0.7 % smaller
    /// files.
    pub zstd_level: i32,
    /// While an hour is open, compact once it has this many files of similar size (a
    /// tier); more means fewer rewrites of each byte, but more files for queries to open
    /// and more memory for a merge, which decodes a batch of every input at a time.
    pub compaction_min_files: usize,
    /// Most Parquet bytes one compaction reads. This bounds a compaction's duration and the
    /// size of the files an hour ends with, and so the number of tiers each span climbs,
    /// one rewrite each (memory is not: a merge's grows with its inputs' count, which
    /// `compaction_max_input_files` bounds).
    pub compaction_max_input_bytes: u64,
    /// Most files one compaction joins. A merge holds a batch and the page buffers of every
    /// input at once, about 1 MB each for flushed files, so this bounds its memory
    /// where a backlog of small files (after a restart, or behind a long merge) would
    /// otherwise feed it dozens under `compaction_max_input_bytes`.
    pub compaction_max_input_files: usize,
    /// How often retention runs and hours that are over are checked for compaction (open
    /// hours are compacted as flushes add files).
    pub maintenance_interval_secs: u64,
    /// Delete data older than this many hours; 0 keeps everything.
    pub retention_hours: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            flush_bytes: 10 << 20,
            flush_interval_secs: 60,
            row_group_rows: 32 * 1024,
            zstd_level: 1,
            compaction_min_files: 12,
            compaction_max_input_bytes: 64 << 20,
            compaction_max_input_files: 24,
            maintenance_interval_secs: 30,
            retention_hours: 24 * 7,
        }
    }
}

/// SQL query limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled.
    pub timeout_secs: u64,
    /// Most rows a query may return.
    pub max_rows: usize,
    /// Memory one query engine may use for sorts, joins and aggregations.
    pub memory_limit_bytes: usize,
    /// Memory for the Parquet footers and page indexes kept between SQL queries, as much
    /// again for the file statistics planning uses, and as much again for the footers
    /// PromQL's reads keep: a query then opens no footer it has already read (files never
    /// change once written).
    pub metadata_cache_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self { timeout_secs: 30, max_rows: 100_000, memory_limit_bytes: 1 << 30, metadata_cache_bytes: 64 << 20 }
    }
}

/// RED metrics derived from spans (`traces.span.metrics.calls` and `.duration`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Whether every ingested span updates the derived metrics.
    pub enabled: bool,
    /// How often the cumulative series are written as metrics.
    pub interval_secs: u64,
    /// Series (service × span name × kind × status) before new ones share the overflow series.
    pub max_series: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self { enabled: true, interval_secs: 15, max_series: 10_000 }
    }
}

/// PromQL query limits, with Prometheus's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromqlConfig {
    /// A query running longer fails with a `timeout` error (HTTP 503).
    pub timeout_secs: u64,
    /// Most samples a query may load or return; more fails with an `execution` error (HTTP 422).
    pub max_samples: usize,
    /// How far back an instant selector looks for the latest sample.
    pub lookback_delta_secs: u64,
    /// Memory for stored series' labels kept between queries (an estimate); when full,
    /// the oldest are dropped first.
    pub label_cache_bytes: usize,
    /// Memory for the decoded metric columns (ids, times, values) kept between queries;
    /// when full, the oldest are dropped first. 0 keeps none.
    pub column_cache_bytes: usize,
}

impl Default for PromqlConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 120,
            max_samples: 50_000_000,
            lookback_delta_secs: 300,
            label_cache_bytes: 64 << 20,
            column_cache_bytes: 256 << 20,
        }
    }
}

/// Profile ingest limits and de-duplication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Largest profile after gunzip, in bytes; larger uploads get HTTP 400 (the request body
    /// itself is also capped by `limits.max_request_bytes`, HTTP 413).
    pub max_profile_bytes: usize,
    /// Most samples one profile may hold.
    pub max_samples: usize,
    /// Deepest stack a sample may have.
    pub max_stack_depth: usize,
    /// Function, location and stack ids remembered as already stored in the current hour.
    /// Forgetting one only means storing it once more; it bounds the memory de-duplication
    /// takes (about 16 bytes per entry).
    pub dedup_entries: usize,
    /// Most distinct stacks one profile query may merge.
    pub max_query_stacks: usize,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self {
            max_profile_bytes: 16 << 20,
            max_samples: 500_000,
            max_stack_depth: 1024,
            dedup_entries: 1 << 20,
            max_query_stacks: 200_000,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: &'static str, reason: String },
}

/// The range of `SETTINGS_MAX_FRAME_SIZE` that HTTP/2 allows (RFC 9113, section 6.5.2).
const HTTP2_MIN_MAX_FRAME_SIZE: u32 = 1 << 14;
const HTTP2_MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }

    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| Err(ConfigError::Invalid { setting, reason: reason.to_owned() });
        if self.limits.max_request_bytes == 0 {
            return invalid("limits.max_request_bytes", "must be positive");
        }
        if self.limits.memory_limit_bytes < self.limits.max_request_bytes {
            return invalid("limits.memory_limit_bytes", "must be at least limits.max_request_bytes");
        }
        if !(HTTP2_MIN_MAX_FRAME_SIZE..=HTTP2_MAX_MAX_FRAME_SIZE).contains(&self.limits.grpc_max_frame_bytes) {
            return invalid("limits.grpc_max_frame_bytes", "must be between 16384 and 16777215 (RFC 9113)");
        }
        if self.storage.flush_bytes == 0 || self.storage.flush_bytes > self.limits.memory_limit_bytes {
            return invalid("storage.flush_bytes", "must be positive and at most limits.memory_limit_bytes");
        }
        if !(1..=22).contains(&self.storage.zstd_level) {
            return invalid("storage.zstd_level", "must be between 1 and 22");
        }
        if self.storage.row_group_rows == 0 || self.storage.compaction_min_files < 2 {
            return invalid("storage", "row_group_rows must be positive and compaction_min_files at least 2");
        }
        if self.storage.compaction_max_input_files < 2 {
            return invalid("storage.compaction_max_input_files", "must be at least 2");
        }
        if self.query.timeout_secs == 0 || self.query.max_rows == 0 {
            return invalid("query", "timeout_secs and max_rows must be positive");
        }
        if self.span_metrics.interval_secs == 0 || self.span_metrics.max_series == 0 {
            return invalid("span_metrics", "interval_secs and max_series must be positive");
        }
        if self.promql.timeout_secs == 0 || self.promql.max_samples == 0 || self.promql.lookback_delta_secs == 0 {
            return invalid("promql", "timeout_secs, max_samples and lookback_delta_secs must be positive");
        }
        let profiles = &self.profiles;
        if [profiles.max_profile_bytes, profiles.max_samples, profiles.max_stack_depth, profiles.dedup_entries, profiles.max_query_stacks]
            .contains(&0)
        {
            return invalid("profiles", "every limit must be positive");
        }
        if let Err(error) = self.alerting.validate() {
            return invalid("alerting", &error.to_string());
        }
        Ok(())
    }
}

impl StorageConfig {
    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_secs(self.flush_interval_secs)
    }

    pub(crate) fn maintenance_interval(&self) -> Duration {
        Duration::from_secs(self.maintenance_interval_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_sets_every_section_and_defaults_fill_the_rest() {
        let config: Config = toml::from_str(
            r#"
            api = "127.0.0.1:9000"
            [limits]
            memory_limit_bytes = 1073741824
            [wal]
            fsync = "interval"
            [storage]
            retention_hours = 0
            [query]
            max_rows = 10
            "#,
        )
        .expect("valid config");
        assert_eq!(config.api, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(config.limits.memory_limit_bytes, 1 << 30);
        assert_eq!(config.limits.max_request_bytes, 64 << 20, "default kept");
        assert_eq!(config.wal.fsync, FsyncPolicy::Interval);
        assert_eq!(config.storage.retention_hours, 0);
        assert_eq!(config.query.max_rows, 10);
        config.validate().expect("consistent");
    }

    #[test]
    fn unknown_keys_and_inconsistent_limits_are_refused() {
        let unknown = toml::from_str::<Config>("[storage]\nflush_byte = 1\n");
        assert!(unknown.is_err_and(|error| error.to_string().contains("unknown field `flush_byte`")));

        let mut config = Config::default();
        config.limits.memory_limit_bytes = 1 << 20;
        let error = config.validate().expect_err("memory limit below the request cap");
        assert!(error.to_string().contains("limits.memory_limit_bytes"), "{error}");

        let mut config = Config::default();
        config.storage.compaction_max_input_files = 1;
        let error = config.validate().expect_err("a merge of one file");
        assert!(error.to_string().contains("storage.compaction_max_input_files"), "{error}");

        for frame_bytes in [(1 << 14) - 1, 1 << 24] {
            let mut config = Config::default();
            config.limits.grpc_max_frame_bytes = frame_bytes;
            let error = config.validate().expect_err("a frame size HTTP/2 does not allow");
            assert!(error.to_string().contains("limits.grpc_max_frame_bytes"), "{error}");
        }
    }
}
