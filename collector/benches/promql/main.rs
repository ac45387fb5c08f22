//! PromQL benchmark: `query_range` latency of the differential test's query corpus,
//! Meshlight against a real Prometheus 2.42 holding the same samples.
//!
//! ```text
//! cargo bench -p meshlight-collector --bench promql
//! MESHLIGHT_BENCH_HOURS=1 MESHLIGHT_BENCH_SERVICES=4 cargo bench -p meshlight-collector --bench promql
//! ```
//!
//! The history is the differential test's ([`MetricHistory`]): by default 20 services with
//! 33 methods each, about 10 000 series, 6 hours at 15 s (plus 10 minutes before the queried
//! range), ending a few minutes before the run. Prometheus (`prometheus` and `promtool` from the Debian package) imports it as
//! OpenMetrics blocks; `meshlight serve` receives it as OTLP over HTTP, is restarted, which
//! flushes it to Parquet, and compacts it, as six-hour-old data would be. Every query of the corpus is
//! then asked of both as a range query over the whole history at `MESHLIGHT_BENCH_STEP_SECS`
//! (default 60), alternately, `MESHLIGHT_BENCH_RUNS` times (default 3); the table shows the
//! median latencies over HTTP, their ratio (Meshlight / Prometheus, below 1 is faster) and
//! whether the answers agree, then the median ratio over the corpus.
//! `MESHLIGHT_BENCH_QUERY` keeps only the queries containing its text.
//! `cargo bench` passes `--bench` to this binary; arguments are ignored.

#[path = "../../tests/behaviour/support/mod.rs"]
#[allow(unreachable_pub, reason = "the behaviour tests' harness, shared")]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::differential::{answer, compare, corpus};
use support::metric_history::{MetricHistory, STEP_MS, seconds};
use support::otlp::now_nanos;
use support::prometheus::Prometheus;
use support::{Collector, encode, poll_until};

const SERVICES_ENV: &str = "MESHLIGHT_BENCH_SERVICES";
const METHODS_ENV: &str = "MESHLIGHT_BENCH_METHODS";
const HOURS_ENV: &str = "MESHLIGHT_BENCH_HOURS";
const STEP_ENV: &str = "MESHLIGHT_BENCH_STEP_SECS";
const RUNS_ENV: &str = "MESHLIGHT_BENCH_RUNS";
/// Only the corpus queries containing this text (for profiling one query).
const QUERY_ENV: &str = "MESHLIGHT_BENCH_QUERY";
/// History before the queried range: the windows at the very first samples are where
/// Prometheus 2.42's counter extrapolation differs from current PromQL's.
const WARM_UP_MS: i64 = 10 * 60_000;

fn main() {
    let (services, methods, hours) = (setting(SERVICES_ENV, 20), setting(METHODS_ENV, 33), setting(HOURS_ENV, 6));
    let (step_secs, runs) = (setting(STEP_ENV, 60), setting(RUNS_ENV, 3).max(1));
    let now_ms = (now_nanos() / 1_000_000) as i64;
    // The queried range starts ten minutes after the first samples, as in the test.
    let steps = (hours * 3_600_000 + WARM_UP_MS as usize) / STEP_MS as usize;
    let start_ms = (now_ms / 60_000 - 5) * 60_000 - steps as i64 * STEP_MS;
    let history = MetricHistory::new(services, methods, start_ms, steps);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "history: {} series, {} samples, {hours} h 10 min at 15 s ({services} services x {methods} methods); {cores} cores",
        history.series_count(),
        history.sample_count()
    );

    let mut collector = Collector::start();
    let started = Instant::now();
    let prometheus = Prometheus::start_with_history(&history, collector.scratch_dir());
    println!("prometheus: imported and ready in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    history.export_to(&collector.http_endpoint());
    collector.restart();
    let end = seconds(history.end_ms() + 500);
    let all_samples = format!("/api/v1/query?query={}&time={end}", encode("count({__name__=~\".+\"})"));
    let series = history.series_count().to_string();
    poll_until(Duration::from_secs(600), "Meshlight holds every series", || {
        let count = answer(collector.get(&all_samples))?;
        if count["data"]["result"][0]["value"][1] == series.as_str() { Ok(()) } else { Err(count.to_string()) }
    });
    // Six-hour-old data has long been compacted (a settled hour is merged at the next
    // maintenance pass); Prometheus's imported blocks are compacted too.
    let (status, body) = collector.post("/api/v1/admin/compact", "text/plain", "").expect("compact");
    assert_eq!(status, 200, "compaction: {body}");
    println!("meshlight: ingested, flushed, compacted and ready in {:.1} s", started.elapsed().as_secs_f64());

    let (range_start, range_end) = (seconds(start_ms + WARM_UP_MS + 500), seconds(history.end_ms() + 500));
    println!("query_range over {hours} h at {step_secs} s steps, median of {runs} runs each (ratio = Meshlight / Prometheus)");
    println!("{:>11} {:>11} {:>7} {:>6}  query", "meshlight", "prometheus", "ratio", "same");
    let mut ratios = Vec::new();
    let only = std::env::var(QUERY_ENV).unwrap_or_default();
    for query in corpus(&seconds(start_ms + steps as i64 * STEP_MS / 2 + 500)).into_iter().filter(|q| q.contains(&only)) {
        let path = format!("/api/v1/query_range?query={}&start={range_start}&end={range_end}&step={step_secs}", encode(&query));
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut our_answer, mut their_answer) = (Value::Null, Value::Null);
        for _ in 0..runs {
            let started = Instant::now();
            our_answer = answer(collector.get(&path)).unwrap_or_else(|e| panic!("{query}: {e}"));
            ours.push(started.elapsed());
            let started = Instant::now();
            their_answer = answer(prometheus.get(&path)).unwrap_or_else(|e| panic!("{query}: {e}"));
            theirs.push(started.elapsed());
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        ratios.push(ratio);
        let same = match compare(&our_answer, &their_answer, false) {
            Ok(_) => "yes".to_owned(),
            Err(difference) => format!("NO ({})", difference.chars().take(120).collect::<String>()),
        };
        println!("{:>9.1}ms {:>9.1}ms {ratio:>7.2} {same:>6}  {query}", millis(ours), millis(theirs));
    }
    ratios.sort_by(f64::total_cmp);
    match ratios.get(ratios.len() / 2) {
        Some(median) => println!("median ratio over {} queries: {median:.2} (target <= 1.0)", ratios.len()),
        None => println!("no query of the corpus contains {only:?}"),
    }
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}


fn median(durations: &mut [Duration]) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
