//! Ingest benchmark: collector CPU spent per durably ingested span, next to the CPU cost of
//! only decoding the same OTLP payloads.
//!
//! ```text
//! cargo bench -p meshlight-collector --bench ingest
//! MESHLIGHT_BENCH_SPANS=1000000 MESHLIGHT_BENCH_SHAPES=mesh cargo bench -p meshlight-collector --bench ingest
//! cargo bench --profile dist -p meshlight-collector --bench ingest   # the deployment build
//! ```
//!
//! For every shape (spec, mesh) one row of:
//! - **decode-only**: the request pool encoded with prost, then
//!   `ExportTraceServiceRequest::decode` over all payloads on one thread, repeated until that
//!   thread used at least `MESHLIGHT_BENCH_DECODE_SECS` of CPU; CPU time of that thread alone
//!   (`/proc/thread-self/schedstat`, nanoseconds), so the number is a per-core ceiling.
//! - **durable ingest**: `meshlight serve` started on free ports with a fresh data directory
//!   and default settings (fsync always), a warm-up, then the same pool sent as fast as
//!   possible by `MESHLIGHT_BENCH_CLIENTS` in-process gRPC clients until
//!   `MESHLIGHT_BENCH_SPANS` spans were sent. Cost is the collector process's utime + stime
//!   (`/proc/<pid>/stat`, all threads, `CLK_TCK` resolution) read just before the run and just
//!   after the last acknowledgement, so work still pending after it is not counted.
//!
//! Absolute numbers depend on the machine; the table header says how many cores it had.
//! `cargo bench` passes `--bench` to this binary; arguments are ignored.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshlight_collector::loadgen::{
    DriverConfig, LoadReport, RequestPool, RequestStatistics, Shape, StopCondition, per_second, send_load,
    span_count, unix_nanos_now,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

mod storage;

/// Spans sent per shape in the measured durable-ingest run.
const SPANS_ENV: &str = "MESHLIGHT_BENCH_SPANS";
const DEFAULT_SPANS: u64 = 200_000;

/// Concurrent in-process gRPC clients.
const CLIENTS_ENV: &str = "MESHLIGHT_BENCH_CLIENTS";
const DEFAULT_CLIENTS: usize = 4;

/// Spans per request.
const BATCH_SPANS_ENV: &str = "MESHLIGHT_BENCH_BATCH_SPANS";
const DEFAULT_BATCH_SPANS: usize = 500;

/// Comma-separated shapes to measure.
const SHAPES_ENV: &str = "MESHLIGHT_BENCH_SHAPES";
const DEFAULT_SHAPES: &str = "spec,mesh";

/// Minimum thread CPU seconds of the decode-only measurement.
const DECODE_SECS_ENV: &str = "MESHLIGHT_BENCH_DECODE_SECS";
const DEFAULT_DECODE_SECS: f64 = 2.0;

/// Distinct requests generated per shape (sent in a cycle).
const POOL_REQUESTS: usize = 64;

/// Generator seed, fixed so that runs compare.
const SEED: u64 = 1;

/// Warm-up spans sent before the measured run, as a fraction of the measured spans.
const WARM_UP_FRACTION: u64 = 20;

/// How long the collector may take to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the collector may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// `sysconf(_SC_CLK_TCK)` on every Linux architecture we run on, if `getconf` is missing.
const DEFAULT_CLOCK_TICKS_PER_SECOND: u64 = 100;

struct BenchConfig {
    spans: u64,
    clients: usize,
    batch_spans: usize,
    shapes: Vec<Shape>,
    decode_cpu: Duration,
}

impl BenchConfig {
    fn from_env() -> anyhow::Result<Self> {
        let shapes = env_or(SHAPES_ENV, DEFAULT_SHAPES.to_owned())?
            .split(',')
            .map(|name| name.trim().parse::<Shape>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {SHAPES_ENV}"))?;
        Ok(BenchConfig {
            spans: env_or(SPANS_ENV, DEFAULT_SPANS)?,
            clients: env_or(CLIENTS_ENV, DEFAULT_CLIENTS)?,
            batch_spans: env_or(BATCH_SPANS_ENV, DEFAULT_BATCH_SPANS)?,
            shapes,
            decode_cpu: Duration::from_secs_f64(env_or(DECODE_SECS_ENV, DEFAULT_DECODE_SECS)?),
        })
    }
}

fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={value:?}: {error}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(error) => Err(error).with_context(|| format!("reading {name}")),
    }
}

fn main() -> anyhow::Result<()> {
    let config = BenchConfig::from_env()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;

    let mut results = Vec::new();
    for &shape in &config.shapes {
        eprintln!("ingest bench: generating {shape} pool");
        let pool = Arc::new(RequestPool::generate(
            shape,
            SEED,
            POOL_REQUESTS,
            config.batch_spans,
            unix_nanos_now(),
        ));
        let statistics = RequestStatistics::from_requests(pool.requests());
        eprintln!("ingest bench: {shape} decode-only");
        let decode = measure_decode_only(pool.requests(), config.decode_cpu)?;
        eprintln!(
            "ingest bench: {shape} durable ingest of {} spans",
            config.spans
        );
        let ingest = runtime
            .block_on(measure_durable_ingest(shape, Arc::clone(&pool), &config))
            .with_context(|| format!("durable ingest of the {shape} shape"))?;
        results.push(ShapeResult {
            shape,
            statistics,
            decode,
            ingest,
        });
    }
    print_table(cores, &config, &results);

    if config.shapes.contains(&Shape::Mesh) {
        let storage = runtime.block_on(storage::measure())?;
        storage::print_table(cores, &storage);
    }
    Ok(())
}

/// Everything measured for one shape; one table row.
struct ShapeResult {
    shape: Shape,
    statistics: RequestStatistics,
    decode: DecodeOnlyResult,
    ingest: DurableIngestResult,
}

impl ShapeResult {
    /// Durable-ingest cost relative to decode-only cost, as spans-per-CPU-second ratio.
    fn ingest_to_decode_ratio(&self) -> f64 {
        let decode_rate = self.decode.spans_per_cpu_second();
        if decode_rate == 0.0 {
            0.0
        } else {
            self.ingest.acknowledged_spans_per_collector_cpu_second() / decode_rate
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decode-only

struct DecodeOnlyResult {
    spans: u64,
    thread_cpu: Duration,
    clock: ThreadCpuClock,
}

impl DecodeOnlyResult {
    fn spans_per_cpu_second(&self) -> f64 {
        per_second(self.spans, self.thread_cpu)
    }
}

fn measure_decode_only(
    requests: &[ExportTraceServiceRequest],
    min_cpu: Duration,
) -> anyhow::Result<DecodeOnlyResult> {
    let payloads: Vec<Vec<u8>> = requests.iter().map(Message::encode_to_vec).collect();
    // Warm-up: page in the payloads and let the allocator reach its steady state.
    decode_all(&payloads)?;

    let clock = ThreadCpuClock::detect();
    let cpu_start = clock.now()?;
    let mut spans = 0;
    let thread_cpu = loop {
        spans += decode_all(&payloads)?;
        let used = clock.now()?.saturating_sub(cpu_start);
        if used >= min_cpu {
            break used;
        }
    };
    Ok(DecodeOnlyResult {
        spans,
        thread_cpu,
        clock,
    })
}

/// Decodes every payload once (dropping the result is part of the cost); returns spans seen.
fn decode_all(payloads: &[Vec<u8>]) -> anyhow::Result<u64> {
    let mut spans = 0;
    for payload in payloads {
        let request = ExportTraceServiceRequest::decode(payload.as_slice())
            .context("decoding a payload we encoded")?;
        spans += span_count(std::hint::black_box(&request)) as u64;
    }
    Ok(spans)
}

/// Where the CPU time of the current thread is read from.
#[derive(Debug, Clone, Copy)]
enum ThreadCpuClock {
    /// `/proc/thread-self/schedstat`: nanoseconds on CPU.
    Schedstat,
    /// `/proc/thread-self/stat`: utime + stime in clock ticks.
    StatTicks { ticks_per_second: u64 },
}

impl ThreadCpuClock {
    fn detect() -> Self {
        if fs::read_to_string("/proc/thread-self/schedstat").is_ok() {
            ThreadCpuClock::Schedstat
        } else {
            ThreadCpuClock::StatTicks {
                ticks_per_second: clock_ticks_per_second(),
            }
        }
    }

    fn now(self) -> anyhow::Result<Duration> {
        match self {
            ThreadCpuClock::Schedstat => {
                let text = fs::read_to_string("/proc/thread-self/schedstat")
                    .context("reading schedstat")?;
                let nanos: u64 = text
                    .split_whitespace()
                    .next()
                    .context("empty schedstat")?
                    .parse()
                    .context("parsing schedstat")?;
                Ok(Duration::from_nanos(nanos))
            }
            ThreadCpuClock::StatTicks { ticks_per_second } => {
                let ticks = cpu_ticks_from_stat("/proc/thread-self/stat")?;
                Ok(ticks_to_duration(ticks, ticks_per_second))
            }
        }
    }

    fn describe(self) -> String {
        match self {
            ThreadCpuClock::Schedstat => {
                "CPU time of the decoding thread (/proc/thread-self/schedstat, ns)".to_owned()
            }
            ThreadCpuClock::StatTicks { ticks_per_second } => {
                format!(
                    "CPU time of the decoding thread (/proc/thread-self/stat, CLK_TCK={ticks_per_second})"
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durable ingest

struct DurableIngestResult {
    report: LoadReport,
    collector_cpu: Duration,
}

impl DurableIngestResult {
    fn acknowledged_spans_per_collector_cpu_second(&self) -> f64 {
        per_second(self.report.spans_acknowledged, self.collector_cpu)
    }
}

async fn measure_durable_ingest(
    shape: Shape,
    pool: Arc<RequestPool>,
    config: &BenchConfig,
) -> anyhow::Result<DurableIngestResult> {
    let mut collector = CollectorProcess::start(shape.name())?;
    collector.wait_ready(READY_TIMEOUT).await?;

    let warm_up_spans = (config.spans / WARM_UP_FRACTION).max(config.batch_spans as u64);
    let warm_up = DriverConfig {
        concurrency: config.clients,
        ..DriverConfig::new(
            collector.otlp_grpc_url(),
            StopCondition::TotalSpans(warm_up_spans),
        )
    };
    send_load(Arc::clone(&pool), &warm_up)
        .await
        .context("warm-up load")?;

    let measured = DriverConfig {
        concurrency: config.clients,
        ..DriverConfig::new(
            collector.otlp_grpc_url(),
            StopCondition::TotalSpans(config.spans),
        )
    };
    let cpu_before = collector.cpu_time()?;
    let report = send_load(pool, &measured).await.context("measured load")?;
    let cpu_after = collector.cpu_time()?;

    collector.stop()?;
    if report.spans_acknowledged == 0 {
        bail!("the collector acknowledged no span:\n{report}");
    }
    Ok(DurableIngestResult {
        report,
        collector_cpu: cpu_after.saturating_sub(cpu_before),
    })
}

/// A `meshlight serve` child process on free local ports with its own data directory.
///
/// Besides what this benchmark reads (`cpu_time`), it exposes the pid, the data directory and
/// the API URL for measurements such as on-disk bytes, RSS and query latency.
struct CollectorProcess {
    child: Child,
    data_dir: PathBuf,
    log_path: PathBuf,
    otlp_grpc: SocketAddr,
    api: SocketAddr,
    clock_ticks_per_second: u64,
}

impl CollectorProcess {
    /// Starts the collector with default settings; `label` names the data directory.
    fn start(label: &str) -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(format!(
            "meshlight-bench-ingest-{}-{label}",
            std::process::id()
        ));
        let data_dir = scratch.join("data");
        let log_path = scratch.join("collector.log");
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .with_context(|| format!("removing {}", scratch.display()))?;
        }
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

        let [otlp_grpc, otlp_http, api] = free_local_addresses()?;
        let child = Command::new(env!("CARGO_BIN_EXE_meshlight"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--otlp-grpc", &otlp_grpc.to_string()])
            .args(["--otlp-http", &otlp_http.to_string()])
            .args(["--api", &api.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .spawn()
            .context("starting meshlight serve")?;
        Ok(CollectorProcess {
            child,
            data_dir,
            log_path,
            otlp_grpc,
            api,
            clock_ticks_per_second: clock_ticks_per_second(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn otlp_grpc_url(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }

    fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Polls `GET /ready` until it answers 200, the process exits, or `timeout` passes.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .context("building HTTP client")?;
        let ready_url = format!("{}/ready", self.api_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("polling the collector process")?
            {
                bail!(
                    "the collector exited with {status} before it was ready; log: {}",
                    self.log_path.display()
                );
            }
            let answered_ready = http
                .get(&ready_url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if answered_ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{ready_url} not ready after {timeout:?}; log: {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU time (user + system, all threads) the collector used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let ticks = cpu_ticks_from_stat(&format!("/proc/{}/stat", self.pid()))?;
        Ok(ticks_to_duration(ticks, self.clock_ticks_per_second))
    }

    /// CPU time the collector's live threads used so far, summed per thread name (as the
    /// kernel keeps it, cut to 15 bytes: `meshlight-compa` is the compaction thread). Threads
    /// that have exited are not counted.
    fn cpu_time_by_thread_name(&self) -> anyhow::Result<BTreeMap<String, Duration>> {
        let mut by_name = BTreeMap::new();
        for task in fs::read_dir(format!("/proc/{}/task", self.pid())).context("listing the collector's threads")? {
            let task = task.context("listing the collector's threads")?.path();
            // A thread may exit between the listing and the reads.
            let (Ok(name), Ok(ticks)) =
                (fs::read_to_string(task.join("comm")), cpu_ticks_from_stat(&task.join("stat").to_string_lossy()))
            else {
                continue;
            };
            *by_name.entry(name.trim().to_owned()).or_default() += ticks_to_duration(ticks, self.clock_ticks_per_second);
        }
        Ok(by_name)
    }

    /// Sends SIGTERM, waits for a clean exit and removes the data directory.
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill -TERM")?;
        if !signalled.success() {
            bail!("kill -TERM {pid} failed with {signalled}");
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let exit_status = loop {
            if let Some(status) = self.child.try_wait().context("waiting for the collector")? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the collector did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; log: {}",
                    self.log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !exit_status.success() {
            bail!(
                "the collector exited with {exit_status} after SIGTERM; log: {}",
                self.log_path.display()
            );
        }
        if let Some(scratch) = self.data_dir.parent() {
            fs::remove_dir_all(scratch)
                .with_context(|| format!("removing {}", scratch.display()))?;
        }
        Ok(())
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        // Only reached with the child still running when a measurement failed; the data
        // directory and log are kept for inspection.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Three distinct free loopback addresses (held together so that they differ; free again
/// on return, so another process could take one in between, which is unlikely on a bench host).
fn free_local_addresses() -> anyhow::Result<[SocketAddr; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").context("finding a free port")?,
        TcpListener::bind("127.0.0.1:0").context("finding a free port")?,
        TcpListener::bind("127.0.0.1:0").context("finding a free port")?,
    ];
    Ok([
        listeners[0].local_addr()?,
        listeners[1].local_addr()?,
        listeners[2].local_addr()?,
    ])
}

/// utime + stime, in clock ticks, from a `/proc/.../stat` file.
fn cpu_ticks_from_stat(path: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces; fields after its closing parenthesis
    // start at field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
    let after_command = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("parsing {path}"))?;
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let field = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("{path} is too short"))?
            .parse()
            .with_context(|| format!("parsing {path}"))
    };
    Ok(field(11)? + field(12)?)
}

fn ticks_to_duration(ticks: u64, ticks_per_second: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64)
}

/// `sysconf(_SC_CLK_TCK)` via `getconf` (no libc binding needed), 100 if unavailable.
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_CLOCK_TICKS_PER_SECOND)
}

// ---------------------------------------------------------------------------------------------
// Report

/// One table column: a header and how to render a row's cell.
struct Column {
    header: &'static str,
    cell: fn(&ShapeResult) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        header: "shape",
        cell: |result| result.shape.to_string(),
    },
    Column {
        header: "spans/req",
        cell: |result| {
            format!(
                "{:.0}",
                result.statistics.spans as f64 / result.statistics.requests.max(1) as f64
            )
        },
    },
    Column {
        header: "OTLP B/span",
        cell: |result| format!("{:.0}", result.statistics.encoded_bytes_per_span()),
    },
    Column {
        header: "decode spans/CPU-s",
        cell: |result| format!("{:.0}", result.decode.spans_per_cpu_second()),
    },
    Column {
        header: "ingest spans/collector-CPU-s",
        cell: |result| {
            format!(
                "{:.0}",
                result.ingest.acknowledged_spans_per_collector_cpu_second()
            )
        },
    },
    Column {
        header: "ingest/decode",
        cell: |result| format!("{:.3}", result.ingest_to_decode_ratio()),
    },
    Column {
        header: "collector CPU-s",
        cell: |result| format!("{:.2}", result.ingest.collector_cpu.as_secs_f64()),
    },
    Column {
        header: "acked spans/s",
        cell: |result| {
            format!(
                "{:.0}",
                result.ingest.report.acknowledged_spans_per_second()
            )
        },
    },
    Column {
        header: "ack p50 ms",
        cell: |result| {
            format!(
                "{:.2}",
                result.ingest.report.ack_latency.p50.as_secs_f64() * 1_000.0
            )
        },
    },
    Column {
        header: "ack p99 ms",
        cell: |result| {
            format!(
                "{:.2}",
                result.ingest.report.ack_latency.p99.as_secs_f64() * 1_000.0
            )
        },
    },
    Column {
        header: "acked",
        cell: |result| result.ingest.report.spans_acknowledged.to_string(),
    },
    Column {
        header: "rejected",
        cell: |result| result.ingest.report.spans_rejected.to_string(),
    },
    Column {
        header: "refused",
        cell: |result| result.ingest.report.spans_refused().to_string(),
    },
];

fn print_table(cores: usize, config: &BenchConfig, results: &[ShapeResult]) {
    println!();
    println!(
        "Meshlight ingest benchmark: {cores} cores (nproc), {} spans per shape, {} clients, {}-span requests, fsync always",
        config.spans, config.clients, config.batch_spans
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|result| COLUMNS.iter().map(|column| (column.cell)(result)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(index, column)| {
            rows.iter()
                .map(|row| row[index].len())
                .chain([column.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = COLUMNS
        .iter()
        .zip(&widths)
        .map(|(column, &width)| format!("{:>width$}", column.header))
        .collect();
    println!("{}", header.join("  "));
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:>width$}"))
            .collect();
        println!("{}", cells.join("  "));
    }
    println!();
    if let Some(first) = results.first() {
        println!(
            "decode: prost decode of the same payloads, {}",
            first.decode.clock.describe()
        );
    }
    println!(
        "ingest: acknowledged spans / collector utime+stime (/proc/<pid>/stat, CLK_TCK={}), \
         read before the first and after the last acknowledgement",
        clock_ticks_per_second()
    );
    println!(
        "ingest/decode: fraction of the decode-only rate that durable ingest reaches per CPU-second"
    );
}
