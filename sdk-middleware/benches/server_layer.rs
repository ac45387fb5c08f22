//! Added latency and allocations per request of the server layer, against the same service
//! without it: unsampled (the caller's traceparent says not sampled), sampled, and sampled
//! with a lane header and baggage. Spans go through the real batch processor to an exporter
//! that discards them, so the numbers are the layer's cost and not an exporter's.
//!
//! `cargo bench -p meshlight-middleware --bench server_layer` runs criterion, then prints a
//! table of its own: nanoseconds per request (median of several runs), the difference to the
//! bare service, and heap allocations per request.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use http::{Request, Response};
use http_body::Body;
use meshlight_middleware::Telemetry;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceBuilder, service_fn};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The request shapes measured, by name.
const CASES: [(&str, Option<&str>, bool); 4] = [
    ("bare service", None, false),
    ("unsampled", Some(UNSAMPLED), false),
    ("sampled", Some(SAMPLED), false),
    ("sampled, lane + baggage", Some(SAMPLED), true),
];

fn request(traceparent: Option<&str>, lane_and_baggage: bool) -> Request<String> {
    let mut request =
        Request::post("/demo.Orders/Place").header("content-type", "application/grpc");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    if lane_and_baggage {
        request = request.header("x-asm-prefer-tag", "canary").header(
            "baggage",
            "tenant=acme,region=eu-west-1,x-asm-prefer-tag=canary",
        );
    }
    request.body(String::new()).unwrap_or_default()
}

/// Calls the service and drains the response body, as a server would; everything here is
/// ready at once, so it is polled with a no-op waker instead of an executor.
fn call<S, B>(service: &mut S, request: Request<String>)
where
    S: Service<Request<String>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(response)) = pin!(service.call(request)).poll(&mut cx) else {
        panic!("the benchmarked service completes at once");
    };
    let mut body = pin!(response.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        black_box(frame.is_ok());
    }
}

fn handler(
    _request: Request<String>,
) -> impl Future<Output = Result<Response<String>, Infallible>> {
    std::future::ready(Ok(Response::builder()
        .header("grpc-status", "0")
        .body(String::new())
        .unwrap_or_default()))
}

/// Runs `case` through the bare or the layered service.
fn run_case(telemetry: &Telemetry, case: usize, iterations: u64) {
    let (_, traceparent, lane) = CASES[case];
    if case == 0 {
        let mut bare = service_fn(handler);
        for _ in 0..iterations {
            call(&mut bare, request(traceparent, lane));
        }
    } else {
        let mut layered = ServiceBuilder::new()
            .layer(telemetry.server_layer())
            .service(service_fn(handler));
        for _ in 0..iterations {
            call(&mut layered, request(traceparent, lane));
        }
    }
}

fn criterion_benches(criterion: &mut Criterion, telemetry: &Telemetry) {
    let mut group = criterion.benchmark_group("server_layer");
    for (case, (name, _, _)) in CASES.iter().enumerate() {
        group.bench_function(*name, |bencher| {
            bencher.iter_custom(|iterations| {
                let started = Instant::now();
                run_case(telemetry, case, iterations);
                started.elapsed()
            });
        });
    }
    group.finish();
}

/// Median nanoseconds per request over `RUNS` runs, and allocations per request, for the
/// bare service and the cases whose name contains `filter`.
fn table(telemetry: &Telemetry, filter: Option<&str>) {
    const RUNS: usize = 15;
    const ITERATIONS: u64 = 20_000;
    println!(
        "\nserver layer, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<26} {:>12} {:>12} {:>16}",
        "case", "ns/request", "added ns", "allocs/request"
    );
    let mut bare_ns = 0.0;
    for (case, (name, _, _)) in CASES.iter().enumerate() {
        if case > 0 && filter.is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        run_case(telemetry, case, ITERATIONS);
        let mut samples: Vec<f64> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                run_case(telemetry, case, ITERATIONS);
                started.elapsed().as_nanos() as f64 / ITERATIONS as f64
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[RUNS / 2];
        let region = Region::new(ALLOCATOR);
        run_case(telemetry, case, ITERATIONS);
        let allocations = region.change().allocations as f64 / ITERATIONS as f64;
        if case == 0 {
            bare_ns = median;
        }
        println!(
            "{name:<26} {median:>12.0} {:>12.0} {allocations:>16.1}",
            median - bare_ns
        );
    }
}

fn main() {
    let guard = Telemetry::builder()
        .service_name("bench")
        .span_exporter(Discard)
        .metric_exporter(Discard)
        .build()
        .unwrap_or_else(|error| panic!("telemetry: {error}"));
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut criterion, &guard);
    criterion.final_summary();
    // The table honours criterion's name filter, so a profile can focus on one case.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    table(&guard, filter.as_deref());
}

/// An exporter that drops what it is given.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

impl PushMetricExporter for Discard {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        black_box(metrics);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}
