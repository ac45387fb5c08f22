//! Storage and steady-state figures on the mesh data set:
//! - **bytes per span** on disk once compaction has joined each hour into its final files;
//! - **RSS and CPU** of the collector at a steady 10 000 spans/s, CPU also per thread name
//!   (request path, WAL writer, flush, compaction); and CPU per span from ingest to the
//!   hour's final file, the compactions that the steady window does not reach included;
//! - **ingest-to-queryable latency**: from the start of an export to the moment SQL sees the
//!   span, for probe spans sent while the collector carries half of its sustained saturation
//!   rate (measured first, unpaced for `SATURATION_SECS`, so flushing is part of it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshlight_collector::loadgen::{DriverConfig, RequestPool, Shape, StopCondition, send_load, unix_nanos_now};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::{CollectorProcess, POOL_REQUESTS, READY_TIMEOUT, SEED, env_or};

const DISK_SPANS_ENV: &str = "MESHLIGHT_BENCH_DISK_SPANS";
const DEFAULT_DISK_SPANS: u64 = 1_000_000;
const STEADY_SECS_ENV: &str = "MESHLIGHT_BENCH_STEADY_SECS";
const DEFAULT_STEADY_SECS: u64 = 30;
const STEADY_RATE: f64 = 10_000.0;
const PROBES_ENV: &str = "MESHLIGHT_BENCH_PROBES";
const DEFAULT_PROBES: usize = 200;
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const SATURATION_SECS: u64 = 20;

pub(crate) struct StorageResult {
    spans_on_disk: u64,
    parquet_bytes: u64,
    steady: SteadyState,
    queryable_p50: Duration,
    queryable_p99: Duration,
    queryable_max: Duration,
    probes: usize,
    sustained_saturation: f64,
}

struct SteadyState {
    achieved_rate: f64,
    /// The largest sample.
    rss_max: Rss,
    rss_mean_mib: f64,
    cpu_share: f64,
    /// Share of one core per thread name, largest first.
    cpu_share_by_thread: Vec<(String, f64)>,
    /// Collector CPU per acknowledged span, from the start of the load to the end of the
    /// flush and compaction of all of it into the hour's final file.
    cpu_per_span_to_final_file: Duration,
    /// Rows compaction merged on the way to the final file, per acknowledged span.
    merges_per_span: f64,
    /// Rows compaction copied by concatenating files, per acknowledged span.
    copies_per_span: f64,
}

pub(crate) async fn measure() -> anyhow::Result<StorageResult> {
    let pool = Arc::new(RequestPool::generate(Shape::Mesh, SEED, POOL_REQUESTS, 500, unix_nanos_now()));
    eprintln!("ingest bench: mesh bytes per span after compaction");
    let (spans_on_disk, parquet_bytes) = bytes_on_disk(Arc::clone(&pool)).await?;
    eprintln!("ingest bench: mesh steady state at {STEADY_RATE} spans/s");
    let steady = steady_state(Arc::clone(&pool)).await?;
    eprintln!("ingest bench: sustained saturation, then ingest-to-queryable latency at half of it");
    let (sustained_saturation, mut latencies) = queryable_latency(pool).await?;
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Ok(StorageResult {
        spans_on_disk,
        parquet_bytes,
        steady,
        queryable_p50: percentile(0.50),
        queryable_p99: percentile(0.99),
        queryable_max: percentile(1.0),
        probes: latencies.len(),
        sustained_saturation,
    })
}

/// Sends the data set, flushes, compacts every partition as a settled hour would be, and
/// returns (spans stored, Parquet bytes of `otel_traces`).
async fn bytes_on_disk(pool: Arc<RequestPool>) -> anyhow::Result<(u64, u64)> {
    let spans: u64 = env_or(DISK_SPANS_ENV, DEFAULT_DISK_SPANS)?;
    let mut collector = CollectorProcess::start("disk")?;
    collector.wait_ready(READY_TIMEOUT).await?;
    let load = DriverConfig::new(collector.otlp_grpc_url(), StopCondition::TotalSpans(spans));
    send_load(pool, &load).await.context("disk load")?;
    let api = Api::new(&collector.api_url())?;
    api.post("/api/v1/admin/flush").await?;
    api.post("/api/v1/admin/compact").await?;
    let bytes = api.metric("meshlight_parquet_bytes{table=\"otel_traces\"}").await? as u64;
    let stored = api.scalar("SELECT count(*) FROM otel_traces").await?;
    collector.stop()?;
    Ok((stored, bytes))
}

/// Drives 10 000 spans/s and samples the collector's RSS every 500 ms.
async fn steady_state(pool: Arc<RequestPool>) -> anyhow::Result<SteadyState> {
    let seconds: u64 = env_or(STEADY_SECS_ENV, DEFAULT_STEADY_SECS)?;
    let mut collector = CollectorProcess::start("steady")?;
    collector.wait_ready(READY_TIMEOUT).await?;
    let load = DriverConfig {
        spans_per_second: STEADY_RATE,
        ..DriverConfig::new(collector.otlp_grpc_url(), StopCondition::Duration(Duration::from_secs(seconds)))
    };
    let pid = collector.pid();
    let cpu_before = collector.cpu_time()?;
    let threads_before = collector.cpu_time_by_thread_name()?;
    let started = Instant::now();
    let sender = tokio::spawn(async move { send_load(pool, &load).await });
    let mut rss = Vec::new();
    while !sender.is_finished() {
        rss.push(Rss::of(pid)?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = sender.await.context("load task")?.context("steady load")?;
    let cpu = collector.cpu_time()?.saturating_sub(cpu_before);
    let threads = collector.cpu_time_by_thread_name()?;
    let wall = started.elapsed();
    let api = Api::new(&collector.api_url())?;
    api.post("/api/v1/admin/flush").await?;
    api.post("/api/v1/admin/compact").await?;
    let cpu_to_final_file = collector.cpu_time()?.saturating_sub(cpu_before);
    let compacted_rows = |method: &str| format!("meshlight_compacted_rows_total{{table=\"otel_traces\",method=\"{method}\"}}");
    let merged_rows = api.metric_or_zero(&compacted_rows("merge")).await?;
    let copied_rows = api.metric_or_zero(&compacted_rows("concatenation")).await?;
    collector.stop()?;
    let mut cpu_share_by_thread: Vec<(String, f64)> = threads
        .into_iter()
        .map(|(name, cpu)| {
            let before = threads_before.get(&name).copied().unwrap_or_default();
            (name, cpu.saturating_sub(before).as_secs_f64() / wall.as_secs_f64())
        })
        .filter(|(_, share)| *share > 0.0)
        .collect();
    cpu_share_by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(SteadyState {
        achieved_rate: report.acknowledged_spans_per_second(),
        rss_max: rss.iter().copied().max_by(|a, b| a.total_mib.total_cmp(&b.total_mib)).unwrap_or_default(),
        rss_mean_mib: rss.iter().map(|sample| sample.total_mib).sum::<f64>() / rss.len().max(1) as f64,
        cpu_share: cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu_share_by_thread,
        cpu_per_span_to_final_file: cpu_to_final_file.div_f64(report.spans_acknowledged.max(1) as f64),
        merges_per_span: merged_rows / report.spans_acknowledged.max(1) as f64,
        copies_per_span: copied_rows / report.spans_acknowledged.max(1) as f64,
    })
}

/// Measures the sustained saturation rate, then sends probe spans one at a time during
/// background load at half of it; each latency runs from the start of its export (retries
/// included) to the first SQL answer that contains it. Returns (saturation, latencies).
async fn queryable_latency(pool: Arc<RequestPool>) -> anyhow::Result<(f64, Vec<Duration>)> {
    let probes: usize = env_or(PROBES_ENV, DEFAULT_PROBES)?;
    let mut collector = CollectorProcess::start("latency")?;
    collector.wait_ready(READY_TIMEOUT).await?;
    let saturating = DriverConfig::new(
        collector.otlp_grpc_url(),
        StopCondition::Duration(Duration::from_secs(SATURATION_SECS)),
    );
    let saturation = send_load(Arc::clone(&pool), &saturating).await.context("saturation load")?;
    let saturation = saturation.acknowledged_spans_per_second();
    let rate = saturation / 2.0;
    let background_duration = PROBE_INTERVAL * (probes as u32) + Duration::from_secs(30);
    let load = DriverConfig {
        spans_per_second: rate,
        ..DriverConfig::new(collector.otlp_grpc_url(), StopCondition::Duration(background_duration))
    };
    let background = tokio::spawn(async move { send_load(pool, &load).await });
    let api = Api::new(&collector.api_url())?;
    let mut client = TraceServiceClient::connect(collector.otlp_grpc_url()).await.context("probe client")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut latencies = Vec::with_capacity(probes);
    for probe in 0..probes as u64 {
        let span_id = (0x5eed_0000_0000_0000 | probe).to_be_bytes();
        let started = Instant::now();
        while let Err(status) = client.export(probe_request(span_id)).await {
            if status.code() != tonic::Code::Unavailable || started.elapsed() > Duration::from_secs(30) {
                bail!("probe export failed: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let query = format!("SELECT count(*) FROM otel_traces WHERE \"SpanId\" = '{}'", hex::encode(span_id));
        while api.scalar(&query).await? == 0 {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("probe {probe} not queryable after 30 s");
            }
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    background.abort();
    collector.stop()?;
    Ok((saturation, latencies))
}

fn probe_request(span_id: [u8; 8]) -> ExportTraceServiceRequest {
    let now = unix_nanos_now();
    let mut trace_id = vec![0x5e; 8];
    trace_id.extend_from_slice(&span_id);
    let span = Span { trace_id, span_id: span_id.to_vec(), name: "probe".to_owned(), start_time_unix_nano: now, end_time_unix_nano: now, ..Span::default() };
    let service = KeyValue {
        key: "service.name".to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue("probe".to_owned())) }),
        ..KeyValue::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![service], ..Resource::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// Resident memory of a process: anonymous pages are its heap and stacks; file-backed
/// pages are mostly the code of its binary that has run.
#[derive(Clone, Copy, Default)]
struct Rss {
    total_mib: f64,
    anon_mib: f64,
    file_mib: f64,
}

impl Rss {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
        let mib = |field: &str| -> anyhow::Result<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{field} in /proc status"))?;
            Ok(kib / 1024.0)
        };
        Ok(Self { total_mib: mib("VmRSS:")?, anon_mib: mib("RssAnon:")?, file_mib: mib("RssFile:")? })
    }
}

/// The collector's API: SQL scalars, metric values, admin calls.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Self { http, base: base.to_owned() })
    }

    async fn post(&self, path: &str) -> anyhow::Result<()> {
        let response = self.http.post(format!("{}{path}", self.base)).send().await?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.status());
        }
        Ok(())
    }

    async fn scalar(&self, query: &str) -> anyhow::Result<u64> {
        let response = self
            .http
            .post(format!("{}/api/v1/sql", self.base))
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        body["rows"][0][0].as_u64().with_context(|| format!("no count in {body}"))
    }

    /// A series that is not on `/metrics` (a counter never incremented) reads 0.
    async fn metric_or_zero(&self, series: &str) -> anyhow::Result<f64> {
        Ok(self.find_metric(series).await?.unwrap_or(0.0))
    }

    async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        self.find_metric(series).await?.with_context(|| format!("{series} not on /metrics"))
    }

    async fn find_metric(&self, series: &str) -> anyhow::Result<Option<f64>> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()))
    }
}

pub(crate) fn print_table(cores: usize, result: &StorageResult) {
    let steady = &result.steady;
    println!();
    println!("Meshlight storage and steady state: {cores} cores (nproc), mesh data set");
    println!("{:<44} {:>14}", "measure", "value");
    println!("{:<44} {:>14}", "spans stored", result.spans_on_disk);
    println!("{:<44} {:>14}", "otel_traces Parquet bytes after compaction", result.parquet_bytes);
    println!("{:<44} {:>14.1}", "bytes per span on disk", result.parquet_bytes as f64 / result.spans_on_disk.max(1) as f64);
    println!("{:<44} {:>14.0}", "steady state: acknowledged spans/s", steady.achieved_rate);
    println!("{:<44} {:>14.1}", "steady state: RSS max MiB", steady.rss_max.total_mib);
    println!("{:<44} {:>14.1}", "  of which anonymous (heap, stacks)", steady.rss_max.anon_mib);
    println!("{:<44} {:>14.1}", "  of which file-backed (the binary's code)", steady.rss_max.file_mib);
    println!("{:<44} {:>14.1}", "steady state: RSS mean MiB", steady.rss_mean_mib);
    println!("{:<44} {:>13.1}%", "steady state: CPU, share of one core", steady.cpu_share * 100.0);
    for (thread, share) in &steady.cpu_share_by_thread {
        println!("{:<44} {:>13.1}%", format!("  of which {thread} threads"), share * 100.0);
    }
    let to_final_file = steady.cpu_per_span_to_final_file.as_secs_f64();
    println!("{:<44} {:>14.2}", "ingest to final file: CPU µs per span", to_final_file * 1e6);
    println!("{:<44} {:>13.1}%", "  as a share of one core at 10 000 spans/s", to_final_file * STEADY_RATE * 100.0);
    println!("{:<44} {:>14.2}", "  compaction: merges per span", steady.merges_per_span);
    println!("{:<44} {:>14.2}", "  compaction: concatenated copies per span", steady.copies_per_span);
    println!("{:<44} {:>14.0}", "sustained saturation: acknowledged spans/s", result.sustained_saturation);
    println!("{:<44} {:>14.0}", "half saturation: background spans/s", result.sustained_saturation / 2.0);
    println!("{:<44} {:>14}", "ingest-to-queryable probes", result.probes);
    println!("{:<44} {:>14.1}", "ingest-to-queryable p50 ms", result.queryable_p50.as_secs_f64() * 1e3);
    println!("{:<44} {:>14.1}", "ingest-to-queryable p99 ms", result.queryable_p99.as_secs_f64() * 1e3);
    println!("{:<44} {:>14.1}", "ingest-to-queryable max ms", result.queryable_max.as_secs_f64() * 1e3);
    println!(
        "steady state: {STEADY_RATE} spans/s target, RSS sampled every 500 ms, CPU = collector utime+stime / wall time \
         (per thread name: /proc/<pid>/task/*/stat of the threads alive at the end)"
    );
    println!(
        "ingest to final file: collector utime+stime from the start of the steady load to the end of the flush and \
         compaction of every hour it sent into its final file, per acknowledged span; merges and copies: \
         meshlight_compacted_rows_total of otel_traces by method, per acknowledged span"
    );
    println!("ingest-to-queryable: from the start of a one-span export to the first SQL count that includes it");
}
