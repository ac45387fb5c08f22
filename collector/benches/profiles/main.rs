//! Profile ingest benchmark: uploads per second (wall and per collector CPU-second) and
//! bytes on disk per sample once the uploads are de-duplicated, flushed and compacted.
//!
//! ```text
//! cargo bench -p meshlight-collector --bench profiles
//! MESHLIGHT_BENCH_PROFILES=200 cargo bench -p meshlight-collector --bench profiles
//! ```
//!
//! The uploads look like the agent's: `MESHLIGHT_BENCH_SERVICES` services (default 20)
//! each with its own call tree of 300 functions, a 10-second window at 100 Hz on two busy
//! threads (about 2 000 samples over some 150 distinct stacks, 15 to 40 frames deep), and a
//! third of the samples labelled with one of a few dozen spans. `MESHLIGHT_BENCH_PROFILES`
//! uploads (default 2 000) are sent from `MESHLIGHT_BENCH_CLIENTS` threads (default 4) to a
//! `meshlight serve` child; each upload is acknowledged only once durable. `cargo bench`
//! passes `--bench` to this binary; arguments are ignored.

#[path = "../../tests/behaviour/support/mod.rs"]
#[allow(unreachable_pub, reason = "the behaviour tests' harness, shared")]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use support::Collector;
use support::otlp::gzip;
use support::profiles::{StackSample, cpu_profile, upload};

const PROFILES_ENV: &str = "MESHLIGHT_BENCH_PROFILES";
const SERVICES_ENV: &str = "MESHLIGHT_BENCH_SERVICES";
const CLIENTS_ENV: &str = "MESHLIGHT_BENCH_CLIENTS";
const PROFILE_TABLES: [&str; 4] = ["profile_samples", "profile_stacks", "profile_locations", "profile_functions"];
const TICK_NANOS: i64 = 10_000_000;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// One service's code: stacks are walks down its call tree.
struct Service {
    name: String,
    functions: Vec<String>,
    stacks: Vec<Vec<usize>>,
}

impl Service {
    fn new(index: usize, rng: &mut StdRng) -> Service {
        let functions: Vec<String> =
            (0..300).map(|f| format!("service_{index}::module_{}::function_{f}", f % 17)).collect();
        let stacks = (0..400)
            .map(|_| {
                let depth = rng.random_range(15..=40);
                // Frames near the root are shared by most stacks, as in real programs.
                (0..depth).map(|level| rng.random_range(0..(level * 8 + 2).min(functions.len()))).collect()
            })
            .collect();
        Service { name: format!("service-{index}"), functions, stacks }
    }

    /// One upload: about 2 000 ticks over the window's ~150 hottest stacks (skewed, as CPU
    /// time is), a third of them inside spans.
    fn upload(&self, rng: &mut StdRng) -> (Vec<u8>, usize, i64) {
        let spans: Vec<(String, String)> =
            (0..40).map(|_| (format!("{:016x}", rng.random::<u64>() | 1), format!("{:032x}", rng.random::<u128>() | 1))).collect();
        let names: Vec<Vec<&str>> = self
            .stacks
            .iter()
            .map(|stack| stack.iter().rev().map(|&f| self.functions[f].as_str()).collect())
            .collect();
        let mut samples = Vec::new();
        let mut ticks = 0;
        while ticks < 2_000 {
            let hot = rng.random_range(0..150_usize);
            let stack = hot * hot / 150;
            let count = rng.random_range(1..=8);
            ticks += count;
            let span = (rng.random_range(0..3) == 0).then(|| &spans[rng.random_range(0..spans.len())]);
            samples.push(StackSample {
                stack: &names[stack],
                cpu_nanos: count * TICK_NANOS,
                span: span.map(|(span_id, trace_id)| (span_id.as_str(), trace_id.as_str())),
            });
        }
        let entries = samples.len();
        (gzip(&cpu_profile(&samples).encode_to_vec()), entries, ticks)
    }
}

fn main() {
    let profiles = setting(PROFILES_ENV, 2_000);
    let services = setting(SERVICES_ENV, 20);
    let clients = setting(CLIENTS_ENV, 4).max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    let mut rng = StdRng::seed_from_u64(7);
    let catalog: Vec<Service> = (0..services).map(|index| Service::new(index, &mut rng)).collect();
    // Encoded ahead of time, so the clients measure the collector rather than the encoder.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let start = now - now % 3_600 - 1_800;
    let mut uploads = Vec::with_capacity(profiles);
    let (mut entries, mut ticks, mut bytes_sent) = (0, 0, 0);
    for index in 0..profiles {
        let service = &catalog[index % services];
        let (body, sample_entries, sample_ticks) = service.upload(&mut rng);
        let window = start + (index / services) as i64 * 10 % 1_700;
        let query = format!(
            "name={}&from={window}&until={}&format=pprof&sampleRate=100",
            support::encode(&format!("{}{{pod={}-0}}", service.name, service.name)),
            window + 10
        );
        entries += sample_entries;
        ticks += sample_ticks;
        bytes_sent += body.len();
        uploads.push((query, body));
    }

    let collector = Collector::start();
    let http = collector.http_endpoint();
    let cpu_before = cpu_seconds(collector.pid());
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                while let Some((query, body)) = uploads.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let reply = upload(&http, query, body);
                    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
                }
            });
        }
    });
    let wall = started.elapsed();
    let cpu = cpu_seconds(collector.pid()) - cpu_before;

    for path in ["/api/v1/admin/flush", "/api/v1/admin/compact"] {
        let (status, body) = collector.post(path, "text/plain", "").expect("admin request");
        assert_eq!(status, 200, "{path}: {body}");
    }
    let table_bytes: Vec<(&str, u64)> =
        PROFILE_TABLES.iter().map(|table| (*table, parquet_bytes(&collector.data_dir().join(table)))).collect();
    let disk: u64 = table_bytes.iter().map(|(_, bytes)| bytes).sum();

    println!("profile ingest, {cores} cores, {clients} client threads, {services} services");
    println!("{:<44} {:>14}", "uploads (acknowledged durable)", profiles);
    println!("{:<44} {:>14}", "pprof sample entries / CPU ticks", format!("{entries} / {ticks}"));
    println!("{:<44} {:>14.1}", "gzipped pprof bytes per upload", bytes_sent as f64 / profiles as f64);
    println!("{:<44} {:>14.1}", "uploads per second (wall)", profiles as f64 / wall.as_secs_f64());
    println!("{:<44} {:>14.1}", "uploads per collector CPU-second", profiles as f64 / cpu);
    println!("{:<44} {:>14.1}", "CPU ticks per second (wall)", ticks as f64 / wall.as_secs_f64());
    for (table, bytes) in &table_bytes {
        println!("{:<44} {:>14}", format!("{table} bytes"), bytes);
    }
    println!("{:<44} {:>14.2}", "bytes on disk per pprof sample entry", disk as f64 / entries as f64);
    println!("{:<44} {:>14.3}", "bytes on disk per CPU tick", disk as f64 / ticks as f64);
    println!("{:<44} {:>14.3}", "bytes on disk / gzipped pprof bytes", disk as f64 / bytes_sent as f64);
}

/// Bytes of the Parquet files under `dir`.
fn parquet_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                parquet_bytes(&path)
            } else if path.extension().is_some_and(|ext| ext == "parquet") {
                entry.metadata().map_or(0, |meta| meta.len())
            } else {
                0
            }
        })
        .sum()
}

/// utime + stime of a process, in seconds (`/proc/<pid>/stat`, `getconf CLK_TCK`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let output = Command::new("getconf").arg("CLK_TCK").output();
    let per_second = output.ok().and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).unwrap_or(100_u64);
    ticks as f64 / per_second as f64
}
