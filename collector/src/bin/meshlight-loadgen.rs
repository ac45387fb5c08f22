//! `meshlight-loadgen`: sends synthetic OTLP/gRPC trace load to a collector and reports how
//! much of it was acknowledged, rejected and refused, and how fast.
//!
//! ```text
//! meshlight-loadgen --endpoint http://127.0.0.1:4317 --shape mesh --rate 10000 --duration-secs 60
//! meshlight-loadgen --shape spec --total-spans 1000000 --concurrency 8 --gzip
//! meshlight-loadgen --shape mesh --describe          # what the generated data looks like
//! meshlight-loadgen --shape mesh --print-sample      # one trace as OTLP JSON
//! ```
//!
//! Exits with status 1 when no span was acknowledged.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use meshlight_collector::loadgen::{
    DriverConfig, Generator, RequestPool, RequestStatistics, Shape, StopCondition, send_load,
    unix_nanos_now,
};

/// Run length when neither `--duration-secs` nor `--total-spans` is given.
const DEFAULT_DURATION_SECS: u64 = 10;

/// Send synthetic OTLP/gRPC trace load to a collector.
#[derive(Debug, Parser)]
#[command(name = "meshlight-loadgen", version)]
struct Args {
    /// OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,

    /// Trace shape: `mesh` (realistic 20-service traces) or `spec` (OpenTelemetry benchmark spans).
    #[arg(long, default_value = "mesh")]
    shape: Shape,

    /// Target spans per second over all clients; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0, value_name = "SPANS_PER_SEC")]
    rate: f64,

    /// Stop after this many seconds (default 10 unless --total-spans is given).
    #[arg(long, conflicts_with = "total_spans")]
    duration_secs: Option<u64>,

    /// Stop after sending this many spans.
    #[arg(long)]
    total_spans: Option<u64>,

    /// Spans per request (mesh requests hold whole traces, so slightly more).
    #[arg(long, default_value_t = 500)]
    batch_spans: usize,

    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,

    /// Seed of the trace generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,

    /// Distinct requests generated up front and sent in a cycle (trace ids are re-keyed and
    /// timestamps moved forward on every cycle).
    #[arg(long, default_value_t = 64)]
    pool_requests: usize,

    /// Retries of a request refused with UNAVAILABLE or RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,

    /// Client-side timeout of one export call, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,

    /// Print statistics of the generated request pool and exit without sending.
    #[arg(long)]
    describe: bool,

    /// Print one generated trace as OTLP JSON and exit without sending.
    #[arg(long, conflicts_with = "describe")]
    print_sample: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    if args.print_sample {
        let mut generator = Generator::new(args.shape, args.seed);
        let sample = generator.request(1, unix_nanos_now());
        let json = serde_json::to_string_pretty(&sample).context("encoding the sample as JSON")?;
        return print_ignoring_closed_pipe(&json);
    }

    let generation_started = std::time::Instant::now();
    let pool = RequestPool::generate(
        args.shape,
        args.seed,
        args.pool_requests,
        args.batch_spans,
        unix_nanos_now(),
    );
    let statistics = RequestStatistics::from_requests(pool.requests());
    if args.describe {
        let generator = Generator::new(args.shape, args.seed);
        println!("shape                 {}", args.shape);
        println!(
            "data set              {} services, {} operations",
            generator.service_count(),
            generator.operation_count()
        );
        println!("{statistics}");
        return Ok(());
    }

    let stop = match (args.duration_secs, args.total_spans) {
        (_, Some(total_spans)) => StopCondition::TotalSpans(total_spans),
        (Some(seconds), None) => StopCondition::Duration(Duration::from_secs(seconds)),
        (None, None) => StopCondition::Duration(Duration::from_secs(DEFAULT_DURATION_SECS)),
    };
    let config = DriverConfig {
        endpoint: args.endpoint.clone(),
        concurrency: args.concurrency,
        spans_per_second: args.rate,
        stop,
        gzip: args.gzip,
        max_retries: args.max_retries,
        request_timeout: Duration::from_secs(args.timeout_secs),
    };
    let stop_description = match stop {
        StopCondition::Duration(duration) => format!("after {} s", duration.as_secs()),
        StopCondition::TotalSpans(total_spans) => format!("after {total_spans} spans"),
    };
    let rate = if args.rate > 0.0 {
        format!("{} spans/s", args.rate)
    } else {
        "unlimited".to_owned()
    };
    eprintln!(
        "meshlight-loadgen: {} shape, pool of {} requests ({:.0} spans and {:.0} bytes per request, generated in {:.1} s), \
         sending to {} with {} clients, rate {rate}, stop {stop_description}{}",
        args.shape,
        pool.len(),
        pool.mean_spans_per_request(),
        statistics.encoded_bytes as f64 / pool.len().max(1) as f64,
        generation_started.elapsed().as_secs_f64(),
        args.endpoint,
        args.concurrency,
        if args.gzip { ", gzip" } else { "" },
    );

    let report = send_load(Arc::new(pool), &config)
        .await
        .context("sending load")?;
    println!("{report}");
    if report.spans_acknowledged == 0 {
        bail!("no span was acknowledged");
    }
    Ok(())
}

/// Prints `text` to stdout; a reader that went away (`| head`) is not an error.
fn print_ignoring_closed_pipe(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to stdout"),
    }
}
