//! `meshlight`: the collector binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use meshlight_collector::api::ARROW_STREAM;
use meshlight_collector::config::{Config, FsyncPolicy};
use meshlight_collector::promql;
use meshlight_collector::server;

/// Environment variable naming the config file (same as `--config`).
const CONFIG_ENV: &str = "MESHLIGHT_CONFIG";
/// Environment variable with the API URL for client commands (same as `--api`).
const API_ENV: &str = "MESHLIGHT_API";
/// glibc malloc arenas the collector's threads share (see [`limit_malloc_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: i32 = 2;

#[derive(Debug, Parser)]
#[command(name = "meshlight", version, about = "Meshlight: an observability pipeline for microservices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: OTLP ingest, the embedded store and the query API.
    Serve(Box<ServeArgs>),
    /// Run a SQL query against a running collector and print the result.
    Sql(SqlArgs),
    /// Run Prometheus's PromQL test scripts (`.test` files) against the PromQL engine.
    Promqltest(PromqltestArgs),
    /// Work with Prometheus rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Evaluate rule files against any Prometheus-compatible API and send the alerts,
    /// without a collector.
    Alerts(Box<AlertsArgs>),
    /// Fetch a merged CPU profile from a running collector.
    Profile(ProfileArgs),
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Check rule files; errors are reported with file, line and column.
    Check {
        /// Rule files or globs.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// Every setting of the config file can be overridden by its flag.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long, env = CONFIG_ENV)]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long)]
    otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    otlp_http: Option<SocketAddr>,
    /// Query API, /metrics, /ready and /health listen address [default: 127.0.0.1:7070].
    #[arg(long)]
    api: Option<SocketAddr>,
    /// Data directory for the WAL and Parquet files [default: ./meshlight-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// limits.max_request_bytes: largest decompressed request [default: 67108864].
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// limits.memory_limit_bytes: buffered bytes above which ingest refuses retryably [default: 536870912].
    #[arg(long)]
    memory_limit_bytes: Option<usize>,
    /// limits.retry_after_secs: back-off advertised to refused clients [default: 1].
    #[arg(long)]
    retry_after_secs: Option<u64>,
    /// limits.grpc_max_frame_bytes: largest HTTP/2 frame an OTLP/gRPC client may send [default: 1048576].
    #[arg(long)]
    grpc_max_frame_bytes: Option<u32>,
    /// wal.fsync: when the WAL is fsynced [default: always].
    #[arg(long, value_enum)]
    fsync: Option<FsyncPolicy>,
    /// wal.fsync_interval_ms: fsync period of the interval policy [default: 100].
    #[arg(long)]
    fsync_interval_ms: Option<u64>,
    /// wal.group_commit_max_bytes: most bytes per group commit [default: 16777216].
    #[arg(long)]
    group_commit_max_bytes: Option<usize>,
    /// storage.flush_bytes: memtable size that triggers a flush to Parquet [default: 10485760].
    #[arg(long)]
    flush_bytes: Option<usize>,
    /// storage.flush_interval_secs: memtable age that triggers a flush [default: 60].
    #[arg(long)]
    flush_interval_secs: Option<u64>,
    /// storage.row_group_rows: most rows per Parquet row group [default: 32768].
    #[arg(long)]
    row_group_rows: Option<usize>,
    /// storage.zstd_level: zstd level of Parquet files (flushes that compaction merges are uncompressed), 1–22 [default: 1].
    #[arg(long)]
    zstd_level: Option<i32>,
    /// storage.compaction_min_files: files of similar size in an open hour that trigger compaction [default: 12].
    #[arg(long)]
    compaction_min_files: Option<usize>,
    /// storage.compaction_max_input_bytes: most bytes one compaction reads [default: 67108864].
    #[arg(long)]
    compaction_max_input_bytes: Option<u64>,
    /// storage.compaction_max_input_files: most files one compaction joins [default: 24].
    #[arg(long)]
    compaction_max_input_files: Option<usize>,
    /// storage.maintenance_interval_secs: how often retention runs and finished hours are compacted [default: 30].
    #[arg(long)]
    maintenance_interval_secs: Option<u64>,
    /// storage.retention_hours: delete data older than this; 0 keeps all [default: 168].
    #[arg(long)]
    retention_hours: Option<u64>,
    /// query.timeout_secs: SQL query timeout [default: 30].
    #[arg(long)]
    query_timeout_secs: Option<u64>,
    /// query.max_rows: most rows a query may return [default: 100000].
    #[arg(long)]
    query_max_rows: Option<usize>,
    /// query.memory_limit_bytes: memory for sorts, joins and aggregations [default: 1073741824].
    #[arg(long)]
    query_memory_limit_bytes: Option<usize>,
    /// query.metadata_cache_bytes: memory for Parquet footers and page indexes kept between SQL queries, as much for file statistics, and as much for PromQL's footers [default: 67108864].
    #[arg(long)]
    query_metadata_cache_bytes: Option<usize>,
    /// span_metrics.enabled: derive RED metrics from ingested spans [default: true].
    #[arg(long)]
    span_metrics: Option<bool>,
    /// span_metrics.interval_secs: how often span-derived metrics are written [default: 15].
    #[arg(long)]
    span_metrics_interval_secs: Option<u64>,
    /// span_metrics.max_series: series before the overflow series [default: 10000].
    #[arg(long)]
    span_metrics_max_series: Option<usize>,
    /// promql.timeout_secs: PromQL query timeout [default: 120].
    #[arg(long)]
    promql_timeout_secs: Option<u64>,
    /// promql.max_samples: most samples a PromQL query may load or return [default: 50000000].
    #[arg(long)]
    promql_max_samples: Option<usize>,
    /// promql.lookback_delta_secs: how far back an instant selector looks [default: 300].
    #[arg(long)]
    promql_lookback_delta_secs: Option<u64>,
    /// promql.label_cache_bytes: memory for stored series' labels kept between queries [default: 67108864].
    #[arg(long)]
    promql_label_cache_bytes: Option<usize>,
    /// promql.column_cache_bytes: memory for decoded metric columns kept between queries [default: 268435456].
    #[arg(long)]
    promql_column_cache_bytes: Option<usize>,
    /// alerting.rules: rule files or globs, evaluated continuously; repeatable.
    #[arg(long = "rules")]
    rules: Vec<String>,
    /// A webhook receiver that gets every alert the config's routes send nowhere else.
    #[arg(long)]
    alert_webhook: Option<String>,
    /// profiles.max_profile_bytes: largest profile after gunzip [default: 16777216].
    #[arg(long)]
    max_profile_bytes: Option<usize>,
    /// profiles.max_samples: most samples in one profile [default: 500000].
    #[arg(long)]
    max_profile_samples: Option<usize>,
    /// profiles.max_stack_depth: deepest stack a sample may have [default: 1024].
    #[arg(long)]
    max_stack_depth: Option<usize>,
    /// profiles.dedup_entries: stack, location and function ids remembered per hour [default: 1048576].
    #[arg(long)]
    profile_dedup_entries: Option<usize>,
    /// profiles.max_query_stacks: most distinct stacks one profile query merges [default: 200000].
    #[arg(long)]
    profile_max_query_stacks: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        fn set<T>(target: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *target = value;
            }
        }
        set(&mut config.otlp_grpc, self.otlp_grpc);
        set(&mut config.otlp_http, self.otlp_http);
        set(&mut config.api, self.api);
        set(&mut config.data_dir, self.data_dir);
        set(&mut config.limits.max_request_bytes, self.max_request_bytes);
        set(&mut config.limits.memory_limit_bytes, self.memory_limit_bytes);
        set(&mut config.limits.retry_after_secs, self.retry_after_secs);
        set(&mut config.limits.grpc_max_frame_bytes, self.grpc_max_frame_bytes);
        set(&mut config.wal.fsync, self.fsync);
        set(&mut config.wal.fsync_interval_ms, self.fsync_interval_ms);
        set(&mut config.wal.group_commit_max_bytes, self.group_commit_max_bytes);
        set(&mut config.storage.flush_bytes, self.flush_bytes);
        set(&mut config.storage.flush_interval_secs, self.flush_interval_secs);
        set(&mut config.storage.row_group_rows, self.row_group_rows);
        set(&mut config.storage.zstd_level, self.zstd_level);
        set(&mut config.storage.compaction_min_files, self.compaction_min_files);
        set(&mut config.storage.compaction_max_input_bytes, self.compaction_max_input_bytes);
        set(&mut config.storage.compaction_max_input_files, self.compaction_max_input_files);
        set(&mut config.storage.maintenance_interval_secs, self.maintenance_interval_secs);
        set(&mut config.storage.retention_hours, self.retention_hours);
        set(&mut config.query.timeout_secs, self.query_timeout_secs);
        set(&mut config.query.max_rows, self.query_max_rows);
        set(&mut config.query.memory_limit_bytes, self.query_memory_limit_bytes);
        set(&mut config.query.metadata_cache_bytes, self.query_metadata_cache_bytes);
        set(&mut config.span_metrics.enabled, self.span_metrics);
        set(&mut config.span_metrics.interval_secs, self.span_metrics_interval_secs);
        set(&mut config.span_metrics.max_series, self.span_metrics_max_series);
        set(&mut config.promql.timeout_secs, self.promql_timeout_secs);
        set(&mut config.promql.max_samples, self.promql_max_samples);
        set(&mut config.promql.lookback_delta_secs, self.promql_lookback_delta_secs);
        set(&mut config.promql.label_cache_bytes, self.promql_label_cache_bytes);
        set(&mut config.promql.column_cache_bytes, self.promql_column_cache_bytes);
        set(&mut config.profiles.max_profile_bytes, self.max_profile_bytes);
        set(&mut config.profiles.max_samples, self.max_profile_samples);
        set(&mut config.profiles.max_stack_depth, self.max_stack_depth);
        set(&mut config.profiles.dedup_entries, self.profile_dedup_entries);
        set(&mut config.profiles.max_query_stacks, self.profile_max_query_stacks);
        if !self.rules.is_empty() {
            config.alerting.rules = self.rules;
        }
        if let Some(url) = &self.alert_webhook {
            config.alerting.add_default_webhook(url)?;
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// Base URL of the collector's API.
    #[arg(long, env = API_ENV, default_value = "http://127.0.0.1:7070")]
    api: String,
    /// Print the rows as the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The SQL statement (quote table columns: "ServiceName").
    query: String,
}

async fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/sql", args.api.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url).json(&serde_json::json!({ "query": args.query }));
    if !args.json {
        request = request.header(reqwest::header::ACCEPT, ARROW_STREAM);
    }
    let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await.context("reading the response")?;
    if !status.is_success() {
        anyhow::bail!("query failed ({status}): {}", String::from_utf8_lossy(&body));
    }
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(&body[..], None).context("decoding the result")?;
    let batches = reader.collect::<Result<Vec<_>, _>>().context("decoding the result")?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    println!("{rows} row(s)");
    Ok(())
}

/// How `meshlight profile` prints a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileFormat {
    /// Gzipped pprof (profile.proto), for `go tool pprof` and other pprof readers.
    Pprof,
    /// Folded stacks, one `root;…;leaf value` line per stack, for flamegraph.pl.
    Folded,
    /// The flamegraph tree as JSON.
    Flamegraph,
    /// Functions by self and total value.
    Top,
}

#[derive(Debug, Args)]
struct ProfileArgs {
    /// Base URL of the collector's API.
    #[arg(long, env = API_ENV, default_value = "http://127.0.0.1:7070")]
    api: String,
    /// Label selector, e.g. '{service_name="cpu_burn", pod=~"web-.*"}'.
    #[arg(long, default_value = "{}")]
    selector: String,
    /// Start of the range: Unix seconds, RFC 3339, or now-<duration> [default: now-1h].
    #[arg(long)]
    from: Option<String>,
    /// End of the range [default: now].
    #[arg(long)]
    to: Option<String>,
    /// Sample type as type:unit.
    #[arg(long = "type", default_value = "cpu:nanoseconds")]
    sample_type: String,
    /// Only the samples taken inside this span (16 hex digits); ignores the range.
    #[arg(long, conflicts_with = "trace_id")]
    span_id: Option<String>,
    /// Only the samples taken inside spans of this trace (32 hex digits); ignores the range.
    #[arg(long)]
    trace_id: Option<String>,
    #[arg(long, value_enum, default_value = "top")]
    format: ProfileFormat,
    /// Rows printed by --format top.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Write the profile to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

async fn run_profile(args: ProfileArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};

    let base = args.api.trim_end_matches('/');
    let url = match (&args.span_id, &args.trace_id) {
        (Some(span_id), _) => format!("{base}/api/v1/profiles/span/{span_id}"),
        (None, Some(trace_id)) => format!("{base}/api/v1/profiles/trace/{trace_id}"),
        (None, None) => format!("{base}/api/v1/profiles/merge"),
    };
    let format = match args.format {
        ProfileFormat::Pprof => "pprof",
        ProfileFormat::Folded => "folded",
        ProfileFormat::Flamegraph => "flamegraph",
        ProfileFormat::Top => "top",
    };
    let limit = args.limit.to_string();
    let mut query = vec![("selector", args.selector.as_str()), ("type", &args.sample_type), ("format", format), ("limit", &limit)];
    query.extend(args.from.as_deref().map(|from| ("from", from)));
    query.extend(args.to.as_deref().map(|to| ("to", to)));
    let response = reqwest::Client::new().get(&url).query(&query).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await.context("reading the response")?;
    if !status.is_success() {
        anyhow::bail!("profile query failed ({status}): {}", String::from_utf8_lossy(&body));
    }
    let text = match args.format {
        ProfileFormat::Top => {
            let top: serde_json::Value = serde_json::from_slice(&body).context("decoding the response")?;
            format_top(&top).into_bytes()
        }
        _ => body.to_vec(),
    };
    match &args.output {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None if args.format == ProfileFormat::Pprof && std::io::stdout().is_terminal() => {
            anyhow::bail!("a pprof profile is binary: redirect standard output or use --output FILE");
        }
        None => std::io::stdout().write_all(&text).context("writing to standard output")?,
    }
    Ok(())
}

/// The `top` response as a table, the way `go tool pprof -top` prints one.
fn format_top(top: &serde_json::Value) -> String {
    let mut out = format!("{:>14} {:>7} {:>14} {:>7}  function\n", "self", "self%", "total", "total%");
    for row in top["functions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>14} {:>6.2}% {:>14} {:>6.2}%  {}\n",
            row["self"].as_i64().unwrap_or_default(),
            row["selfShare"].as_f64().unwrap_or_default() * 100.0,
            row["total"].as_i64().unwrap_or_default(),
            row["totalShare"].as_f64().unwrap_or_default() * 100.0,
            row["function"].as_str().unwrap_or_default(),
        ));
    }
    out
}

#[derive(Debug, Args)]
struct PromqltestArgs {
    /// `.test` files, or directories whose `.test` files run in name order.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also list every failing case.
    #[arg(long, short)]
    verbose: bool,
}

/// Prints per file the eval cases run, passed, failed and skipped (native histograms),
/// and fails when any supported case fails.
async fn run_promqltest(args: PromqltestArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.retain(|p| p.extension().is_some_and(|ext| ext == "test"));
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    println!("{:<40} {:>6} {:>6} {:>6} {:>7}", "file", "ran", "passed", "failed", "skipped");
    let (mut ran, mut passed, mut skipped, mut failures) = (0, 0, 0, Vec::new());
    for file in &files {
        let script = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let report = promql::test_format::run(&script).await;
        let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        println!("{name:<40} {:>6} {:>6} {:>6} {:>7}", report.ran(), report.passed, report.failed.len(), report.skipped);
        ran += report.ran();
        passed += report.passed;
        skipped += report.skipped;
        failures.extend(report.failed.into_iter().map(|failure| format!("{name}: {failure}")));
    }
    println!("{:<40} {ran:>6} {passed:>6} {:>6} {skipped:>7}", "total", failures.len());
    if ran > 0 {
        println!("passed {:.1}% of the cases run (skipped cases need native histograms)", 100.0 * passed as f64 / ran as f64);
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if args.verbose {
        failures.iter().for_each(|failure| println!("FAIL {failure}"));
    } else {
        println!("{} failing case(s); --verbose lists them", failures.len());
    }
    Ok(ExitCode::FAILURE)
}

/// Checks each file like `promtool check rules`; fails when any has an error.
fn check_rules(files: &[String]) -> ExitCode {
    let mut failed = false;
    for file in files {
        println!("Checking {file}");
        match meshlight_alerting::rulefile::load(std::slice::from_ref(file)) {
            Ok(groups) => {
                let rules: usize = groups.iter().map(|group| group.rules.len()).sum();
                println!("  SUCCESS: {rules} rules found");
            }
            Err(errors) => {
                failed = true;
                println!("  FAILED:");
                for error in errors {
                    println!("{error}");
                }
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

#[derive(Debug, Args)]
struct AlertsArgs {
    /// Base URL of a Prometheus HTTP API (`/api/v1/query` is appended): a Prometheus, or a
    /// collector's `http://HOST:7070`.
    #[arg(long)]
    query_url: String,
    /// Rule files or globs; repeatable (adds to the config file's `alerting.rules`).
    #[arg(long = "rules")]
    rules: Vec<String>,
    /// TOML file whose `[alerting]` section holds receivers, routes and intervals.
    #[arg(long, env = CONFIG_ENV)]
    config: Option<PathBuf>,
    /// A webhook receiver that gets every alert the config's routes send nowhere else.
    #[arg(long)]
    alert_webhook: Option<String>,
    /// OTLP/HTTP base URL (`/v1/metrics` is appended) where recording-rule results and
    /// `ALERTS` are written; without it they are computed and not stored.
    #[arg(long)]
    write_url: Option<String>,
    /// Where `/api/v1/rules`, `/api/v1/alerts`, `/-/reload` and `/metrics` are served.
    #[arg(long, default_value = "127.0.0.1:7071")]
    api: SocketAddr,
    /// Where the alert state is kept across restarts.
    #[arg(long, default_value = "./meshlight-alerting")]
    data_dir: PathBuf,
}

async fn run_alerts(args: AlertsArgs) -> anyhow::Result<()> {
    use meshlight_alerting::query::{DiscardWriter, HttpQuery, SampleWriter};
    use meshlight_alerting::{Alerting, AlertingMetrics};

    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?.alerting,
        None => meshlight_alerting::AlertingConfig::default(),
    };
    config.rules.extend(args.rules);
    if let Some(url) = &args.alert_webhook {
        config.add_default_webhook(url)?;
    }
    let backend = Arc::new(HttpQuery::new(&args.query_url, config.query_timeout)?);
    let writer: Arc<dyn SampleWriter> = match &args.write_url {
        Some(url) => Arc::new(meshlight_collector::alerting::OtlpHttpWriter::new(url, config.query_timeout)?),
        None => Arc::new(DiscardWriter),
    };
    let metrics = Arc::new(AlertingMetrics::default());
    let alerting = Arc::new(Alerting::new(config, backend, writer, Some(args.data_dir), metrics.clone())?);
    let mut registry = prometheus_client::registry::Registry::with_prefix("meshlight_alerting");
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let router = meshlight_alerting::api::router(alerting.clone()).route(
        "/metrics",
        axum::routing::get(move || async move {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            text
        }),
    );
    let listener = tokio::net::TcpListener::bind(args.api).await.with_context(|| format!("cannot listen on {}", args.api))?;
    tracing::info!(api = %args.api, query_url = %args.query_url, "meshlight alerts ready");
    tokio::spawn(server::reload_on_hangup(alerting.clone()));
    let api = tokio::spawn(axum::serve(listener, router).into_future());
    alerting.run(server::termination_signal()).await;
    api.abort();
    Ok(())
}

fn main() -> anyhow::Result<ExitCode> {
    limit_malloc_arenas();
    tokio::runtime::Runtime::new().context("starting tokio")?.block_on(run())
}

async fn run() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            server::serve(config, server::termination_signal()).await?;
        }
        Command::Sql(args) => run_sql(args).await?,
        Command::Promqltest(args) => return run_promqltest(args).await,
        Command::Rules { command: RulesCommand::Check { files } } => return Ok(check_rules(&files)),
        Command::Alerts(args) => run_alerts(*args).await?,
        Command::Profile(args) => run_profile(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// At most [`MALLOC_ARENAS`] glibc malloc arenas, set before any thread starts.
///
/// glibc gives each thread that allocates while another holds an arena an arena of its own,
/// up to eight per core. Arrow buffers are built on the ingest threads and freed on the
/// flush thread, and every arena keeps the free space its frees leave: at 10 000 spans/s
/// the default arenas held about 30 MiB more than two do. Sharing arenas costs some lock
/// contention: about 4 % more CPU per span at 50 000 spans/s.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning, and no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
