//! A synthetic metric history of a service mesh, sampled every 15 s, written both as
//! OpenMetrics text (for `promtool tsdb create-blocks-from openmetrics`) and as OTLP
//! requests (for Meshlight), so that a real Prometheus and Meshlight hold the same samples.
//!
//! Every service (resource `service.namespace=shop`, `service.name`, `service.instance.id`,
//! so `job="shop/<name>"`, `instance="<name>-0"`, `service_name="<name>"`) reports:
//! - `rpc.server.duration` (unit `s`, Prometheus `rpc_server_duration_seconds`): a
//!   cumulative histogram per `rpc.method`; the second service's second method turns slow
//!   (about 4 s) half-way through;
//! - `rpc.server.requests` (`{request}`, `rpc_server_requests_total`): a monotonic
//!   cumulative sum per `rpc.method` and `outcome` (`ok`, `error`); the first service's first
//!   method restarts half-way, so its counters reset;
//! - `process.memory.usage` (`By`, `process_memory_usage_bytes`): a float gauge;
//! - `queue.depth` (`{item}`, `queue_depth`): an integer gauge, which the third service
//!   stops reporting for 15 % of the time, so lookback and staleness show.
//!
//! Values come from a hash of the series and the step, so a history is reproducible.
//! Sample times sit a quarter second past a whole second, with a per-series phase: no
//! sample lies on the boundary of a window of a query evaluated at whole or half seconds.
//! (PromQL windows were closed on the left before Prometheus 3 and are open now.)

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use prost::Message as _;

use super::otlp::{attribute, post};

/// The Prometheus names of the history's series.
pub(crate) const SERIES_NAMES: [&str; 6] = [
    "rpc_server_duration_seconds_bucket",
    "rpc_server_duration_seconds_sum",
    "rpc_server_duration_seconds_count",
    "rpc_server_requests_total",
    "process_memory_usage_bytes",
    "queue_depth",
];

/// Time between two samples of a series.
pub(crate) const STEP_MS: i64 = 15_000;
/// Steps per OTLP request: ten minutes of every series.
const STEPS_PER_REQUEST: usize = 40;
const BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const SERVICE_NAMES: [&str; 8] = ["checkout", "cart", "catalog", "payment", "shipping", "currency", "email", "frontend"];
const VERBS: [&str; 5] = ["Get", "List", "Create", "Update", "Delete"];
const OUTCOMES: [&str; 2] = ["ok", "error"];
/// OTLP aggregation temporality `CUMULATIVE`.
const CUMULATIVE: i32 = 2;

/// The samples of every series, computed once.
pub(crate) struct MetricHistory {
    /// Time of step 0, before the per-series phase, in milliseconds.
    pub(crate) start_ms: i64,
    pub(crate) steps: usize,
    services: Vec<Service>,
}

struct Service {
    name: String,
    methods: Vec<Method>,
    memory: Series<f64>,
    queue_depth: Series<f64>,
}

struct Method {
    name: String,
    durations: Series<HistogramPoint>,
    /// Per outcome, in [`OUTCOMES`] order.
    requests: [Series<f64>; 2],
}

/// One series' samples by step (`None`: not reported at that step).
struct Series<T> {
    phase_ms: i64,
    /// The step from which cumulative values count anew, as after a process restart.
    restart_step: Option<usize>,
    points: Vec<Option<T>>,
}

#[derive(Clone)]
struct HistogramPoint {
    /// Per bucket, OTLP style: `BOUNDS.len() + 1` counts, not cumulative.
    bucket_counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl MetricHistory {
    /// `services` services (at most eight names, then numbered) with `methods` methods each,
    /// `steps` samples per series from `start_ms`.
    pub(crate) fn new(services: usize, methods: usize, start_ms: i64, steps: usize) -> MetricHistory {
        let services = (0..services).map(|s| Service::new(s, methods, steps)).collect();
        MetricHistory { start_ms, steps, services }
    }

    /// Time just after the last sample of every series.
    pub(crate) fn end_ms(&self) -> i64 {
        self.start_ms + self.steps as i64 * STEP_MS
    }

    /// How many Prometheus series the history holds.
    pub(crate) fn series_count(&self) -> usize {
        let per_method = 2 + BOUNDS.len() + 1 + 2;
        self.services.iter().map(|s| 2 + s.methods.len() * per_method).sum()
    }

    /// How many samples the history holds, over all Prometheus series.
    pub(crate) fn sample_count(&self) -> usize {
        let per_histogram = BOUNDS.len() + 1 + 2;
        self.services
            .iter()
            .map(|service| {
                let methods: usize = service
                    .methods
                    .iter()
                    .map(|m| m.durations.reported() * per_histogram + m.requests.iter().map(Series::reported).sum::<usize>())
                    .sum();
                methods + service.memory.reported() + service.queue_depth.reported()
            })
            .sum()
    }

    /// A PromQL query counting the samples of the history within `range` (such as `2h`)
    /// before its evaluation time: [`MetricHistory::sample_count`] once all are stored.
    pub(crate) fn sample_count_query(range: &str) -> String {
        let counts: Vec<String> = SERIES_NAMES.iter().map(|name| format!("sum(count_over_time({name}[{range}]))")).collect();
        counts.join(" + ")
    }

    /// The history as OpenMetrics text, one family after the other, ending in `# EOF`.
    pub(crate) fn write_openmetrics(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "# TYPE rpc_server_duration_seconds histogram")?;
        for (service, method) in self.methods() {
            let labels = format!("{},rpc_method=\"{}\"", service.labels(), method.name);
            for (at, point) in method.durations.samples(self.start_ms) {
                let time = seconds(at);
                let mut cumulative = 0;
                for (bound, count) in BOUNDS.iter().zip(&point.bucket_counts) {
                    cumulative += count;
                    writeln!(out, "rpc_server_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative} {time}")?;
                }
                writeln!(out, "rpc_server_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {} {time}", point.count)?;
                writeln!(out, "rpc_server_duration_seconds_sum{{{labels}}} {} {time}", point.sum)?;
                writeln!(out, "rpc_server_duration_seconds_count{{{labels}}} {} {time}", point.count)?;
            }
        }
        writeln!(out, "# TYPE rpc_server_requests counter")?;
        for (service, method) in self.methods() {
            for (outcome, series) in OUTCOMES.iter().zip(&method.requests) {
                let labels = format!("{},rpc_method=\"{}\",outcome=\"{outcome}\"", service.labels(), method.name);
                for (at, value) in series.samples(self.start_ms) {
                    writeln!(out, "rpc_server_requests_total{{{labels}}} {value} {}", seconds(at))?;
                }
            }
        }
        for (gauge, family) in ["process_memory_usage_bytes", "queue_depth"].into_iter().enumerate() {
            writeln!(out, "# TYPE {family} gauge")?;
            for service in &self.services {
                for (at, value) in service.gauges()[gauge].samples(self.start_ms) {
                    writeln!(out, "{family}{{{}}} {value} {}", service.labels(), seconds(at))?;
                }
            }
        }
        writeln!(out, "# EOF")
    }

    /// The history as OpenMetrics text in the file `path`.
    pub(crate) fn write_openmetrics_file(&self, path: &Path) {
        let mut file = BufWriter::new(File::create(path).expect("create the OpenMetrics file"));
        self.write_openmetrics(&mut file).and_then(|()| file.flush()).expect("write the OpenMetrics file");
    }

    /// Sends the whole history to an OTLP/HTTP endpoint as protobuf, ten minutes of every
    /// series per request, in time order; every request must be accepted. A request refused
    /// as retryable (429 or 503, the collector's memory limit while it flushes) is sent again
    /// after its `Retry-After`, as OTLP exporters do, for up to a minute.
    pub(crate) fn export_to(&self, http_endpoint: &str) {
        for request in self.otlp_requests() {
            let body = request.encode_to_vec();
            let give_up = Instant::now() + Duration::from_secs(60);
            loop {
                let reply = post(http_endpoint, "/v1/metrics", Some("application/x-protobuf"), None, &body);
                let retryable = matches!(reply.status, 429 | 503) && Instant::now() < give_up;
                if !retryable {
                    assert_eq!(reply.status, 200, "OTLP export refused: {}", String::from_utf8_lossy(&reply.body));
                    break;
                }
                let wait = reply.retry_after.as_deref().and_then(|secs| secs.parse().ok()).unwrap_or(1);
                std::thread::sleep(Duration::from_secs(wait));
            }
        }
    }

    fn otlp_requests(&self) -> impl Iterator<Item = ExportMetricsServiceRequest> + '_ {
        (0..self.steps).step_by(STEPS_PER_REQUEST).map(move |first| {
            let steps = first..(first + STEPS_PER_REQUEST).min(self.steps);
            let resource_metrics = self
                .services
                .iter()
                .map(|service| ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            attribute("service.namespace", "shop"),
                            attribute("service.name", &service.name),
                            attribute("service.instance.id", &service.instance()),
                        ],
                        ..Resource::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope { name: "meshlight.metric_history".into(), ..InstrumentationScope::default() }),
                        metrics: service.otlp_metrics(self.start_ms, steps.clone()),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect();
            ExportMetricsServiceRequest { resource_metrics }
        })
    }

    fn methods(&self) -> impl Iterator<Item = (&Service, &Method)> {
        self.services.iter().flat_map(|service| service.methods.iter().map(move |method| (service, method)))
    }
}

impl Service {
    fn new(index: usize, methods: usize, steps: usize) -> Service {
        let name = SERVICE_NAMES.get(index).map_or_else(|| format!("service{index:02}"), |name| (*name).to_owned());
        let seed = |kind: u64| hash(&[kind, index as u64]);
        let memory = Series::generate(seed(1), steps, None, |step, noise| {
            Some(2e8 + 5e7 * (step as f64 / 30.0 + index as f64).sin() + (noise % 1000) as f64 * 1024.5)
        });
        let gap = (steps * 30 / 100)..(steps * 45 / 100);
        let queue_depth = Series::generate(seed(2), steps, None, |step, noise| {
            (index != 2 || !gap.contains(&step)).then_some((noise % 11) as f64)
        });
        let methods = (0..methods).map(|m| Method::new(index, m, steps)).collect();
        Service { name, methods, memory, queue_depth }
    }

    /// Memory and queue depth, in the order of their families in the OpenMetrics text.
    fn gauges(&self) -> [&Series<f64>; 2] {
        [&self.memory, &self.queue_depth]
    }

    fn instance(&self) -> String {
        format!("{}-0", self.name)
    }

    /// Prometheus labels from the resource, as Meshlight translates them.
    fn labels(&self) -> String {
        format!("instance=\"{}\",job=\"shop/{}\",service_name=\"{}\"", self.instance(), self.name, self.name)
    }

    fn otlp_metrics(&self, start_ms: i64, steps: std::ops::Range<usize>) -> Vec<Metric> {
        let mut durations = Vec::new();
        let mut requests = Vec::new();
        for method in &self.methods {
            let series = &method.durations;
            for step in steps.clone() {
                let Some(point) = &series.points[step] else { continue };
                durations.push(HistogramDataPoint {
                    attributes: vec![attribute("rpc.method", &method.name)],
                    start_time_unix_nano: nanos(series.start_of(start_ms, step)),
                    time_unix_nano: nanos(series.time(start_ms, step)),
                    count: point.count,
                    sum: Some(point.sum),
                    bucket_counts: point.bucket_counts.clone(),
                    explicit_bounds: BOUNDS.to_vec(),
                    ..HistogramDataPoint::default()
                });
            }
            for (outcome, series) in OUTCOMES.iter().zip(&method.requests) {
                let attributes = vec![attribute("rpc.method", &method.name), attribute("outcome", outcome)];
                requests.extend(series.number_points(start_ms, steps.clone(), &attributes));
            }
        }
        let no_attributes = Vec::new();
        vec![
            metric("rpc.server.duration", "s", metric::Data::Histogram(Histogram { data_points: durations, aggregation_temporality: CUMULATIVE })),
            metric(
                "rpc.server.requests",
                "{request}",
                metric::Data::Sum(Sum { data_points: requests, aggregation_temporality: CUMULATIVE, is_monotonic: true }),
            ),
            metric(
                "process.memory.usage",
                "By",
                metric::Data::Gauge(Gauge { data_points: self.memory.number_points(start_ms, steps.clone(), &no_attributes) }),
            ),
            metric(
                "queue.depth",
                "{item}",
                metric::Data::Gauge(Gauge { data_points: self.queue_depth.number_points(start_ms, steps, &no_attributes) }),
            ),
        ]
    }
}

impl Method {
    fn new(service: usize, index: usize, steps: usize) -> Method {
        let name = format!("{}{}", VERBS[index % VERBS.len()], index / VERBS.len());
        let seed = |kind: u64| hash(&[kind, service as u64, index as u64]);
        // The first method of the first service restarts half-way.
        let restart = (service == 0 && index == 0).then_some(steps / 2);
        // Typical latency from 5 ms to 640 ms, and one method that turns slow.
        let typical_seconds = 0.005 * f64::from(1u32 << ((service + index) % 8));
        let slow_from = if service == 1 && index == 1 { steps / 2 } else { usize::MAX };
        let mut total = HistogramPoint { bucket_counts: vec![0; BOUNDS.len() + 1], count: 0, sum: 0.0 };
        let durations = Series::generate(seed(3), steps, restart, |step, noise| {
            if Some(step) == restart {
                total = HistogramPoint { bucket_counts: vec![0; BOUNDS.len() + 1], count: 0, sum: 0.0 };
            }
            let typical = if step >= slow_from { 4.0 } else { typical_seconds };
            for call in 0..20 + noise % 30 {
                // Half to one and a half times the typical latency, in thousandths.
                let seconds = typical * (500 + hash(&[noise, call]) % 1000) as f64 / 1000.0;
                let bucket = BOUNDS.iter().position(|bound| seconds <= *bound).unwrap_or(BOUNDS.len());
                total.bucket_counts[bucket] += 1;
                total.count += 1;
                total.sum += seconds;
            }
            Some(total.clone())
        });
        let requests = [0u64, 1].map(|outcome| {
            let mut total = 0.0;
            Series::generate(seed(4 + outcome), steps, restart, |step, noise| {
                if Some(step) == restart {
                    total = 0.0;
                }
                total += if outcome == 0 { 40 + noise % 60 } else { noise % 4 } as f64;
                Some(total)
            })
        });
        Method { name, durations, requests }
    }
}

impl<T: Clone> Series<T> {
    /// Asks `value(step, noise)` for every step in order; `noise` is a hash of the series
    /// and the step.
    fn generate(seed: u64, steps: usize, restart_step: Option<usize>, mut value: impl FnMut(usize, u64) -> Option<T>) -> Series<T> {
        let phase_ms = (seed % 15) as i64 * 1000 + 250;
        let points = (0..steps).map(|step| value(step, hash(&[seed, step as u64]))).collect();
        Series { phase_ms, restart_step, points }
    }

    fn reported(&self) -> usize {
        self.points.iter().flatten().count()
    }

    fn time(&self, start_ms: i64, step: usize) -> i64 {
        start_ms + step as i64 * STEP_MS + self.phase_ms
    }

    fn samples(&self, start_ms: i64) -> impl Iterator<Item = (i64, &T)> {
        (0..self.points.len()).filter_map(move |step| Some((self.time(start_ms, step), self.points[step].as_ref()?)))
    }

    /// When the cumulative value of `step` started counting: a second before the first
    /// sample, or before the restart.
    fn start_of(&self, start_ms: i64, step: usize) -> i64 {
        match self.restart_step {
            Some(restart) if step >= restart => self.time(start_ms, restart) - 1000,
            _ => self.time(start_ms, 0) - 1000,
        }
    }
}

impl Series<f64> {
    fn number_points(&self, start_ms: i64, steps: std::ops::Range<usize>, attributes: &[KeyValue]) -> Vec<NumberDataPoint> {
        steps
            .filter_map(|step| {
                let value = self.points[step]?;
                Some(NumberDataPoint {
                    attributes: attributes.to_vec(),
                    start_time_unix_nano: nanos(self.start_of(start_ms, step)),
                    time_unix_nano: nanos(self.time(start_ms, step)),
                    value: Some(number_data_point::Value::AsDouble(value)),
                    ..NumberDataPoint::default()
                })
            })
            .collect()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric { name: name.into(), unit: unit.into(), data: Some(data), ..Metric::default() }
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).expect("times after 1970") * 1_000_000
}

/// Unix seconds with milliseconds, as OpenMetrics timestamps and Prometheus's API take them.
pub(crate) fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// SplitMix64 over the words: a reproducible stand-in for randomness.
fn hash(words: &[u64]) -> u64 {
    words.iter().fold(0x9E37_79B9_7F4A_7C15, |state, word| {
        let mut z = (state ^ word).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}
