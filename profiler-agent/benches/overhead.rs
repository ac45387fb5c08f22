//! The profiler's overhead on a CPU-bound service: the same single-threaded workload run in
//! two processes at the same time, one with the agent sampling at 100 Hz and uploading to a
//! local sink, one without; several rounds; prints one table.
//!
//! ```text
//! cargo bench -p meshlight-profiler --bench overhead
//! ```
//!
//! Scale it with `MESHLIGHT_BENCH_ROUNDS` (default 4), `MESHLIGHT_BENCH_ROUND_SECS` (CPU
//! seconds of workload per process, calibrated; default 40, so that a round's minute and a
//! half of wall time includes the agent replacing its pprof guard) or
//! `MESHLIGHT_BENCH_ITERATIONS` (a fixed workload instead),
//! `MESHLIGHT_BENCH_UPLOAD_INTERVAL_SECS` (default 10, the agent's default; 1 rotates,
//! symbolizes, encodes and uploads a window every second, an upper bound) and
//! `MESHLIGHT_BENCH_FREQUENCY_HZ` (default 100).
//!
//! Why two processes at once, on one CPU: a virtual machine's CPU speed drifts by several
//! percent from one ten-second stretch to the next, and two virtual CPUs drift apart, both
//! more than the overhead measured. So a pair of processes, one with the agent and one
//! without, is pinned to the same CPU with `taskset` (util-linux): the scheduler interleaves
//! them every few milliseconds, both see the same CPU speed at every moment, and the ratio
//! of their CPU times for the same work is the overhead. With two cores or more a second
//! pair runs on the second CPU at the same time, which doubles the pairs measured per
//! round. Without `taskset` the two processes run unpinned side by side.
//!
//! Each process is this binary again (`MESHLIGHT_BENCH_CHILD=with|without`). Its CPU time
//! is the run time of all its threads from `/proc/self/task/*/schedstat`, in nanoseconds,
//! over the workload only; starting the agent and shutting it down are timed separately.
//! The agent's own thread is also reported alone, which splits the overhead into that
//! thread (rotating, symbolizing, encoding, uploading) and the rest (taking the samples,
//! in the signal handler on the workload's thread).

#[path = "../examples/cpu_burn/workload.rs"]
mod workload;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use meshlight_profiler::ProfilerConfig;
use workload::burn_cpu;

/// Tells a child process whether to run the agent: `with` or `without`.
const CHILD_ENV: &str = "MESHLIGHT_BENCH_CHILD";
/// The sink a `with` child uploads to.
const SINK_ENV: &str = "MESHLIGHT_BENCH_SINK";
/// The agent's thread, as `/proc` names it (`comm` keeps 15 bytes of the thread's name).
const AGENT_THREAD: &str = "meshlight-prof";

/// CPU seconds run by the process's live threads, and by those named `only` when given:
/// the first field of a thread's `schedstat` is its time on a CPU in nanoseconds
/// (`/proc/self/stat` counts in 10 ms ticks, too coarse here). No thread ends during a
/// measurement, so none is missed.
fn cpu_seconds(only: Option<&str>) -> f64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let mut nanos = 0_u64;
    for task in tasks.flatten() {
        let path = task.path();
        if let Some(name) = only {
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
        }
        let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0);
    }
    nanos as f64 / 1e9
}

/// `VmRSS` in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

/// What a child measured, one line of `key=value` pairs on its stdout.
#[derive(Debug, Default)]
struct Measured {
    /// CPU seconds of the whole process over the workload.
    cpu: f64,
    /// CPU seconds of the agent's thread over the workload.
    agent_cpu: f64,
    rss_before: f64,
    rss_after: f64,
    start_ms: f64,
    stop_ms: f64,
    windows: u64,
    samples: u64,
    uploaded: u64,
    dropped: u64,
}

impl Measured {
    fn to_line(&self) -> String {
        format!(
            "cpu={} agent_cpu={} rss_before={} rss_after={} start_ms={} stop_ms={} \
             windows={} samples={} uploaded={} dropped={}",
            self.cpu,
            self.agent_cpu,
            self.rss_before,
            self.rss_after,
            self.start_ms,
            self.stop_ms,
            self.windows,
            self.samples,
            self.uploaded,
            self.dropped
        )
    }

    fn from_line(line: &str) -> Self {
        let mut measured = Self::default();
        for pair in line.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let number = value.parse::<f64>().unwrap_or(f64::NAN);
            match key {
                "cpu" => measured.cpu = number,
                "agent_cpu" => measured.agent_cpu = number,
                "rss_before" => measured.rss_before = number,
                "rss_after" => measured.rss_after = number,
                "start_ms" => measured.start_ms = number,
                "stop_ms" => measured.stop_ms = number,
                "windows" => measured.windows = number as u64,
                "samples" => measured.samples = number as u64,
                "uploaded" => measured.uploaded = number as u64,
                "dropped" => measured.dropped = number as u64,
                _ => {}
            }
        }
        measured
    }
}

/// A child's body: the workload once, with or without the agent around it.
fn run_child(profiled: bool, iterations: u64, seed: u64) -> Measured {
    // The first call pays for page faults and the CPU clocking up, in both children alike.
    burn_cpu(iterations / 100, seed);
    let rss_before = rss_mib();
    let mut profiler = None;
    let mut start_ms = 0.0;
    if profiled {
        let mut config = ProfilerConfig::new("overhead_bench");
        config.endpoint = std::env::var(SINK_ENV).expect("the parent names the sink");
        config.frequency_hz = env_number("MESHLIGHT_BENCH_FREQUENCY_HZ", 100).clamp(1, 1000) as u32;
        config.upload_interval =
            Duration::from_secs(env_number("MESHLIGHT_BENCH_UPLOAD_INTERVAL_SECS", 10).max(1));
        let started = Instant::now();
        profiler = Some(meshlight_profiler::start(config).expect("profiler starts"));
        start_ms = started.elapsed().as_secs_f64() * 1000.0;
    }

    let cpu = cpu_seconds(None);
    let agent_cpu = cpu_seconds(Some(AGENT_THREAD));
    burn_cpu(iterations, seed);
    let mut measured = Measured {
        cpu: cpu_seconds(None) - cpu,
        agent_cpu: cpu_seconds(Some(AGENT_THREAD)) - agent_cpu,
        rss_before,
        rss_after: rss_mib(),
        start_ms,
        ..Measured::default()
    };

    if let Some(profiler) = profiler {
        let stopping = Instant::now();
        let stats = profiler.shutdown();
        measured.stop_ms = stopping.elapsed().as_secs_f64() * 1000.0;
        measured.windows = stats.windows;
        measured.samples = stats.samples;
        measured.uploaded = stats.profiles_uploaded;
        measured.dropped = stats.profiles_dropped;
    }
    measured
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

/// Starts this binary as a child, pinned to `cpu` when given.
fn spawn_child(
    profiled: bool,
    iterations: u64,
    seed: u64,
    sink: SocketAddr,
    cpu: Option<usize>,
) -> Child {
    let exe = std::env::current_exe().expect("this binary");
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("--cpu-list").arg(cpu.to_string()).arg(exe);
            taskset
        }
        None => Command::new(exe),
    };
    command
        .arg("--bench")
        .env(CHILD_ENV, if profiled { "with" } else { "without" })
        .env(SINK_ENV, format!("http://{sink}"))
        .env("MESHLIGHT_BENCH_ITERATIONS", iterations.to_string())
        .env("MESHLIGHT_BENCH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a bench child")
}

fn wait_child(child: Child) -> Measured {
    let output = child.wait_with_output().expect("bench child runs");
    assert!(
        output.status.success(),
        "bench child failed: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    Measured::from_line(stdout.lines().last().unwrap_or_default())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The standard error of the mean of `values`: their sample standard deviation over √n.
fn standard_error(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean = mean(values);
    let variance = values
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    (variance / n).sqrt()
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
    let iterations = env_number("MESHLIGHT_BENCH_ITERATIONS", 0);
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let seed = env_number("MESHLIGHT_BENCH_SEED", 1);
        println!("{}", run_child(role == "with", iterations, seed).to_line());
        return;
    }

    let rounds = env_number("MESHLIGHT_BENCH_ROUNDS", 4).max(1);
    let round_secs = env_number("MESHLIGHT_BENCH_ROUND_SECS", 40).max(1);
    let upload_interval = env_number("MESHLIGHT_BENCH_UPLOAD_INTERVAL_SECS", 10).max(1);
    let frequency_hz = env_number("MESHLIGHT_BENCH_FREQUENCY_HZ", 100).clamp(1, 1000);
    let iterations = match iterations {
        0 => calibrate(round_secs as f64),
        fixed => fixed,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (sink, requests) = start_sink();
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    // One pair per CPU when pinned (at most two: the rest of the machine stays free for the
    // sink); one unpinned pair otherwise.
    let cpus: Vec<Option<usize>> = match (pinned, cores) {
        (true, 1) => vec![Some(0)],
        (true, _) => vec![Some(0), Some(1)],
        (false, _) => vec![None],
    };

    let mut pairs = Vec::new();
    for round in 0..rounds {
        let children: Vec<(Child, Child)> = cpus
            .iter()
            .map(|&cpu| {
                (
                    spawn_child(false, iterations, round, sink, cpu),
                    spawn_child(true, iterations, round, sink, cpu),
                )
            })
            .collect();
        for (without, with) in children {
            pairs.push((wait_child(without), wait_child(with)));
        }
    }

    let of = |pick: &dyn Fn(&(Measured, Measured)) -> f64| median(pairs.iter().map(pick).collect());
    // Each pair's CPU overhead in percent.
    let cpu_ratios: Vec<f64> = pairs
        .iter()
        .map(|(without, with)| (with.cpu / without.cpu - 1.0) * 100.0)
        .collect();
    let cpu_without = of(&|(without, _)| without.cpu);
    let cpu_with = of(&|(_, with)| with.cpu);
    let agent_share = mean(
        &pairs
            .iter()
            .map(|(without, with)| with.agent_cpu / without.cpu * 100.0)
            .collect::<Vec<_>>(),
    );
    let total = mean(&cpu_ratios);
    let sum = |pick: fn(&Measured) -> u64| pairs.iter().map(|(_, with)| pick(with)).sum::<u64>();

    println!();
    println!(
        "profiler overhead: {} pairs of processes ({rounds} rounds of {} at once), {iterations} \
         iterations each (single thread, about {round_secs} CPU s), {frequency_hz} Hz, a window \
         uploaded every {upload_interval} s, {cores} cores, {}",
        pairs.len(),
        cpus.len(),
        if pinned {
            "the two processes of a pair pinned to one CPU"
        } else {
            "unpinned"
        }
    );
    println!();
    println!("| median per pair | without agent | with agent | overhead (mean of the pairs) |");
    println!("|---|---:|---:|---:|");
    println!("| CPU s of the workload | {cpu_without:.3} | {cpu_with:.3} | {total:+.2} % |");
    println!(
        "| of which the agent's thread | | {:.3} | {agent_share:+.2} % |",
        of(&|(_, with)| with.agent_cpu)
    );
    println!(
        "| VmRSS MiB before the agent starts / at the end of the workload | {:.1} | {:.1} | {:+.1} MiB |",
        of(&|(_, with)| with.rss_before),
        of(&|(_, with)| with.rss_after),
        of(&|(_, with)| with.rss_after - with.rss_before)
    );
    println!();
    println!(
        "agent start {:.1} ms, shutdown (last window + upload) {:.1} ms (medians); {} windows, \
         {} samples, {} profiles uploaded, {} dropped; the sink received {} requests",
        of(&|(_, with)| with.start_ms),
        of(&|(_, with)| with.stop_ms),
        sum(|with| with.windows),
        sum(|with| with.samples),
        sum(|with| with.uploaded),
        sum(|with| with.dropped),
        requests.load(Ordering::Relaxed)
    );
    let per_round: Vec<String> = pairs
        .iter()
        .zip(&cpu_ratios)
        .map(|((without, with), ratio)| {
            format!("{:.3}/{:.3} ({ratio:+.2} %)", without.cpu, with.cpu)
        })
        .collect();
    println!("CPU s per pair, without/with: {}", per_round.join(", "));
    println!(
        "CPU overhead over the pairs: mean {total:+.2} % ± {:.2} % (standard error), median {:+.2} %",
        standard_error(&cpu_ratios),
        median(cpu_ratios)
    );
}
