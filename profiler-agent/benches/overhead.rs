//! The profiler's overhead on a CPU-bound service: a fixed single-threaded workload run
//! alternately without and with the agent sampling at 100 Hz and uploading to a local sink
//! (in this process, accepting and discarding), several rounds; prints one table.
//!
//! ```text
//! cargo bench -p meshlight-profiler --bench overhead
//! ```
//!
//! Scale it with `MESHLIGHT_BENCH_ROUNDS` (default 5), `MESHLIGHT_BENCH_ROUND_SECS` (the
//! workload is calibrated to about this long, default 3) or `MESHLIGHT_BENCH_ITERATIONS`
//! (a fixed workload instead), `MESHLIGHT_BENCH_UPLOAD_INTERVAL_SECS` (default 1: a window
//! is rotated, symbolized, encoded and uploaded every second, ten times the default rate,
//! so this is an upper bound) and `MESHLIGHT_BENCH_FREQUENCY_HZ` (default 100).
//!
//! CPU time is the process's user + system time from `/proc/self/stat` (all threads: the
//! workload, the agent's thread, the sink), in ticks of 10 ms (`USER_HZ` is 100 on Linux),
//! over the workload only; starting and shutting down the agent are timed separately.

#[path = "../examples/cpu_burn/workload.rs"]
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use meshlight_profiler::ProfilerConfig;
use workload::burn_cpu;

/// Linux reports process times in `USER_HZ` ticks, 100 per second on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of the whole process, dead threads included.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name and state.
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// `VmRSS` and `VmHWM` in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

/// An ingest endpoint that accepts and discards, on its own thread; counts requests.
fn start_sink() -> (SocketAddr, Arc<AtomicU64>) {
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&requests);
    let (address_sender, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("sink runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind sink");
            address_sender
                .send(listener.local_addr().expect("sink address"))
                .expect("report sink address");
            let app = Router::new().route(
                "/ingest",
                post(move |_body: axum::body::Bytes| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async {}
                }),
            );
            axum::serve(listener, app).await.expect("sink serves");
        });
    });
    (address.recv().expect("sink started"), requests)
}

/// Iterations that take about `seconds` on this machine.
fn calibrate(seconds: f64) -> u64 {
    let probe = 20_000_000;
    // The first run pays for the CPU clocking up; time the second.
    burn_cpu(probe, 3);
    let started = Instant::now();
    burn_cpu(probe, 7);
    let per_iteration = started.elapsed().as_secs_f64() / probe as f64;
    ((seconds / per_iteration) as u64).max(probe)
}

struct Round {
    cpu: f64,
    wall: f64,
    rss: f64,
}

fn run_round(iterations: u64, seed: u64) -> Round {
    let cpu = process_cpu_seconds();
    let wall = Instant::now();
    burn_cpu(iterations, seed);
    Round {
        cpu: process_cpu_seconds() - cpu,
        wall: wall.elapsed().as_secs_f64(),
        rss: memory_mib().0,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let rounds = env_number("MESHLIGHT_BENCH_ROUNDS", 5).max(1);
    let round_secs = env_number("MESHLIGHT_BENCH_ROUND_SECS", 3).max(1);
    let upload_interval = env_number("MESHLIGHT_BENCH_UPLOAD_INTERVAL_SECS", 1).max(1);
    let frequency_hz = env_number("MESHLIGHT_BENCH_FREQUENCY_HZ", 100).clamp(1, 1000) as u32;
    let iterations = match env_number("MESHLIGHT_BENCH_ITERATIONS", 0) {
        0 => calibrate(round_secs as f64),
        fixed => fixed,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (sink, requests) = start_sink();
    let mut rss_before = 0.0;

    let mut config = ProfilerConfig::new("overhead_bench");
    config.endpoint = format!("http://{sink}");
    config.frequency_hz = frequency_hz;
    config.upload_interval = Duration::from_secs(upload_interval);

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut start_stop = Vec::new();
    let mut stats = Vec::new();
    // Round 0 warms both up (page faults, the symbolizer's first load of debug info) and is
    // not counted; later rounds alternate which goes first, so drift hits both alike.
    for round in 0..=rounds {
        let profiled_first = round % 2 == 1;
        for profiled in [profiled_first, !profiled_first] {
            if !profiled {
                let measured = run_round(iterations, round);
                if round == 0 {
                    // Round 0 runs unprofiled first: the process as it is without the agent.
                    rss_before = measured.rss;
                }
                if round > 0 {
                    without.push(measured);
                }
                continue;
            }
            let started = Instant::now();
            let profiler = meshlight_profiler::start(config.clone()).expect("profiler starts");
            let start_secs = started.elapsed().as_secs_f64();
            let measured = run_round(iterations, round);
            let stopping = Instant::now();
            let final_stats = profiler.shutdown();
            let stop_secs = stopping.elapsed().as_secs_f64();
            if round > 0 {
                with.push(measured);
                start_stop.push((start_secs, stop_secs));
                stats.push(final_stats);
            }
        }
    }
    let (_, hwm) = memory_mib();

    let cpu_without = median(without.iter().map(|r| r.cpu).collect());
    let cpu_with = median(with.iter().map(|r| r.cpu).collect());
    let wall_without = median(without.iter().map(|r| r.wall).collect());
    let wall_with = median(with.iter().map(|r| r.wall).collect());
    let rss_without = median(without.iter().map(|r| r.rss).collect());
    let rss_with = median(with.iter().map(|r| r.rss).collect());
    let start_secs = median(start_stop.iter().map(|(start, _)| *start).collect());
    let stop_secs = median(start_stop.iter().map(|(_, stop)| *stop).collect());
    let windows: u64 = stats.iter().map(|s| s.windows).sum();
    let samples: u64 = stats.iter().map(|s| s.samples).sum();
    let uploaded: u64 = stats.iter().map(|s| s.profiles_uploaded).sum();
    let dropped: u64 = stats.iter().map(|s| s.profiles_dropped).sum();

    println!();
    println!(
        "profiler overhead: {rounds} rounds of {iterations} iterations (single thread), \
         {frequency_hz} Hz, a window uploaded every {upload_interval} s, {cores} cores"
    );
    println!();
    println!("| | without agent | with agent | overhead |");
    println!("|---|---:|---:|---:|");
    println!(
        "| median CPU s per round | {cpu_without:.3} | {cpu_with:.3} | {:+.2} % |",
        (cpu_with / cpu_without - 1.0) * 100.0
    );
    println!(
        "| median wall s per round | {wall_without:.3} | {wall_with:.3} | {:+.2} % |",
        (wall_with / wall_without - 1.0) * 100.0
    );
    println!(
        "| VmRSS MiB (before the first start / median at round end) | {rss_before:.1} | {rss_with:.1} | {:+.1} MiB |",
        rss_with - rss_before
    );
    println!();
    println!(
        "after an agent shut down the process keeps {rss_without:.1} MiB (median VmRSS of the \
         unprofiled rounds after round 0); VmHWM at the end {hwm:.1} MiB; agent start {:.1} ms, \
         shutdown (last window + upload) {:.1} ms (medians)",
        start_secs * 1000.0,
        stop_secs * 1000.0
    );
    println!(
        "counted rounds with the agent: {windows} windows, {samples} samples, {uploaded} \
         profiles uploaded, {dropped} dropped; the sink received {} requests in all",
        requests.load(Ordering::Relaxed)
    );
    let per_round_cpu: Vec<String> = without
        .iter()
        .zip(&with)
        .map(|(a, b)| format!("{:.2}/{:.2}", a.cpu, b.cpu))
        .collect();
    println!("CPU s per round, without/with: {}", per_round_cpu.join(" "));
}
