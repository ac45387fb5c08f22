//! Burns CPU for a while with the profiler running, then prints what it uploaded.
//!
//! ```text
//! cargo run --release -p meshlight-profiler --example cpu_burn -- --seconds 30 --threads 2
//! ```
//!
//! Configured from the environment like any service (`MESHLIGHT_PROFILER_ENDPOINT`,
//! default `http://127.0.0.1:4318`, and the other `MESHLIGHT_PROFILER_*` variables); the
//! service is `cpu_burn` unless `OTEL_SERVICE_NAME` or `service.name` names another. Each
//! thread burns inside its own linked span, so its samples carry the span's ids.

mod workload;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use workload::burn_cpu;
use meshlight_profiler::config::DEFAULT_SERVICE_NAME;
use meshlight_profiler::{ProfilerConfig, span};

#[derive(Parser)]
#[command(about = "Burn CPU with the Meshlight profiler running")]
struct Args {
    /// How long to burn.
    #[arg(long)]
    seconds: u64,
    /// Threads burning at once.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}


/// Span ids that differ per run and thread, without a random number generator.
fn span_ids(thread: usize) -> ([u8; 16], [u8; 8]) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut trace_id = [0; 16];
    trace_id.copy_from_slice(&nanos.to_be_bytes());
    let span_id = ((nanos as u64) ^ ((thread as u64 + 1) << 48)).to_be_bytes();
    (trace_id, span_id)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut config = ProfilerConfig::from_env()?;
    if config.service_name == DEFAULT_SERVICE_NAME {
        config.service_name = "cpu_burn".to_owned();
    }
    println!(
        "profiling {} at {} Hz, uploading to {} every {:?}",
        config.service_name, config.frequency_hz, config.endpoint, config.upload_interval
    );
    let profiler = meshlight_profiler::start(config)?;

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|thread| {
            std::thread::spawn(move || {
                let (trace_id, span_id) = span_ids(thread);
                let link = span::link(trace_id, span_id);
                if let Some(link) = &link {
                    println!("thread {thread}: span {}", link.profile_id());
                }
                let mut total = 0_u64;
                while Instant::now() < until {
                    let chunk = || burn_cpu(1_000_000, thread as u64 + total);
                    total = total.wrapping_add(match &link {
                        Some(link) => link.run(chunk),
                        None => chunk(),
                    });
                }
                total
            })
        })
        .collect();
    let mut total = 0_u64;
    for worker in workers {
        total = total.wrapping_add(worker.join().map_err(|_| "a worker panicked")?);
    }
    println!("checksum {total:#x}");

    let stats = profiler.shutdown();
    println!("{stats:#?}");
    Ok(())
}
