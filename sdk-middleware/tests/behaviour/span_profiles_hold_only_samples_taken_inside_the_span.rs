//! The span ↔ profile link: with the profiler running, a server span gets the Pyroscope
//! `pyroscope.profile.id` attribute, and the collector's profile of that span (or of its
//! trace) holds exactly the CPU samples taken while the span's handler ran: none of the
//! work another thread did at the same time outside any span.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use meshlight_middleware::Telemetry;
use meshlight_profiler::ProfilerConfig;
use meshlight_profiler::span::PROFILE_ID_ATTRIBUTE;

use crate::support::{Collector, text};

const REQUESTS: usize = 3;
const HANDLER_WORK: Duration = Duration::from_millis(400);

/// The handler's CPU work: every sample of a span's profile must be in here.
#[inline(never)]
fn inside_handler_work(duration: Duration) -> u64 {
    burn(duration)
}

/// Work on another thread, outside any span: never in a span's profile.
#[inline(never)]
fn outside_any_span_work(duration: Duration) -> u64 {
    burn(duration)
}

fn burn(duration: Duration) -> u64 {
    let started = Instant::now();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while started.elapsed() < duration {
        for _ in 0..10_000 {
            state = std::hint::black_box(state.rotate_left(7) ^ state.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
    state
}

#[test]
fn a_span_profile_holds_only_the_samples_taken_inside_the_span() {
    let collector = Collector::start();
    let mut config = ProfilerConfig::new("profiled-service");
    config.endpoint = collector.otlp_http_url();
    config.frequency_hz = 250;
    config.upload_interval = Duration::from_secs(1);
    let profiler = meshlight_profiler::start(config).expect("the profiler starts");
    let telemetry = Telemetry::builder()
        .service_name("profiled-service")
        .endpoint(collector.otlp_endpoint())
        .build()
        .expect("telemetry");

    let stop_background = Arc::new(AtomicBool::new(false));
    let background = {
        let stop = stop_background.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(outside_any_span_work(Duration::from_millis(20)));
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("service runtime");
    let addr = runtime.block_on(async {
        let app = Router::new()
            .route("/work", get(|| async { inside_handler_work(HANDLER_WORK).to_string() }))
            .layer(telemetry.telemetry().server_layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    for _ in 0..REQUESTS {
        let (status, _) = crate::support::get(&format!("http://{addr}/work"), &[]);
        assert_eq!(status, 200);
    }
    stop_background.store(true, Ordering::Relaxed);
    background.join().expect("background work");
    let stats = profiler.stats();
    profiler.shutdown();
    drop(telemetry);
    runtime.shutdown_timeout(Duration::from_secs(5));
    assert!(stats.spans_linked >= REQUESTS as u64, "{stats:?}");

    let spans = collector.wait_for_rows(
        r#"SELECT "SpanId", "TraceId", "SpanAttributes" FROM otel_traces WHERE "SpanName" = 'GET /work'"#,
        REQUESTS,
    );
    // The merged profile saw the other thread's work, so its absence below means something.
    let merged = collector.api_get("/api/v1/profiles/merge?format=folded&selector=%7Bservice_name%3D%22profiled-service%22%7D");
    assert!(merged.contains("outside_any_span_work"), "the merged profile:\n{merged}");

    for span in &spans {
        let span_id = text(span, "SpanId");
        assert_eq!(span["SpanAttributes"][PROFILE_ID_ATTRIBUTE], span_id, "{span:?}");
        for path in [format!("/api/v1/profiles/span/{span_id}"), format!("/api/v1/profiles/trace/{}", text(span, "TraceId"))] {
            let folded = collector.api_get(&format!("{path}?format=folded"));
            let stacks: Vec<&str> = folded.lines().collect();
            let mut handler_work = 0;
            let mut total = 0;
            for stack in stacks {
                assert!(!stack.contains("outside_any_span_work"), "{path}: another thread's sample: {stack}");
                let value: u64 = stack.rsplit_once(' ').and_then(|(_, value)| value.parse().ok()).expect("folded value");
                total += value;
                if stack.contains("inside_handler_work") {
                    handler_work += value;
                }
            }
            // Inside the span is everything the link runs: the handler's work, and now and
            // then a sample in the middleware's own polling around it.
            assert!(handler_work * 2 > total, "{path}: most samples are not the handler's work:\n{folded}");
        }
    }
}
