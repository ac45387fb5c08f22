//! The profiler end to end against a local ingest server: windows are uploaded on their
//! interval, failures are retried, rejections dropped, and shutdown flushes the last window.
//!
//! pprof's profiler is process-wide, so the tests take turns through [`PROFILER`].

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use flate2::read::GzDecoder;
use meshlight_profiler::proto::{Profile, Sample};
use meshlight_profiler::{ProfilerConfig, StartError, span};
use prost::Message as _;

static PROFILER: Mutex<()> = Mutex::new(());

fn one_profiler_at_a_time() -> MutexGuard<'static, ()> {
    PROFILER.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Debug)]
struct Received {
    query: String,
    content_type: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order; 200 once they are used up.
    statuses: VecDeque<StatusCode>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<Script>>;

/// An ingest endpoint on 127.0.0.1 that records requests and answers from a script.
struct Collector {
    address: SocketAddr,
    script: Shared,
}

impl Collector {
    fn start(statuses: &[StatusCode]) -> Self {
        let script: Shared = Arc::new(Mutex::new(Script {
            statuses: statuses.iter().copied().collect(),
            received: Vec::new(),
        }));
        let state = Arc::clone(&script);
        let (address_sender, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                address_sender
                    .send(listener.local_addr().expect("address"))
                    .expect("report address");
                let app = Router::new()
                    .route("/ingest", post(ingest))
                    .with_state(state);
                axum::serve(listener, app).await.expect("serve");
            });
        });
        Self {
            address: address.recv().expect("server started"),
            script,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
            .clone()
    }
}

async fn ingest(
    State(script): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
    script.received.push(Received {
        query: query.unwrap_or_default(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: body.to_vec(),
    });
    script.statuses.pop_front().unwrap_or(StatusCode::OK)
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("query")
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn query_value(query: &str, key: &str) -> String {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("{key} missing from {query}"))
}

fn decode(body: &[u8]) -> Profile {
    let mut decoded = Vec::new();
    GzDecoder::new(body)
        .read_to_end(&mut decoded)
        .expect("gzipped body");
    Profile::decode(decoded.as_slice()).expect("pprof body")
}

fn names(profile: &Profile, sample: &Sample) -> Vec<String> {
    let mut names = Vec::new();
    for &location_id in &sample.location_id {
        let location = profile
            .location
            .iter()
            .find(|location| location.id == location_id)
            .expect("location");
        for line in &location.line {
            let function = profile
                .function
                .iter()
                .find(|function| function.id == line.function_id)
                .expect("function");
            names.push(profile.string_table[function.name as usize].clone());
        }
    }
    names
}

fn label(profile: &Profile, sample: &Sample, key: &str) -> Option<String> {
    sample
        .label
        .iter()
        .find(|label| profile.string_table[label.key as usize] == key)
        .map(|label| profile.string_table[label.str as usize].clone())
}

#[inline(never)]
fn burn_in_test(until: Instant) -> u64 {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    while Instant::now() < until {
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
    }
    std::hint::black_box(state)
}

fn config(collector: &Collector) -> ProfilerConfig {
    let mut config = ProfilerConfig::new("upload-test");
    config.endpoint = collector.endpoint();
    config.frequency_hz = 250;
    config.pod = Some("web-0".to_owned());
    config
        .labels
        .insert("region".to_owned(), "eu west".to_owned());
    config
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn shutdown_retries_a_refused_upload_and_flushes_the_last_window() {
    let _turn = one_profiler_at_a_time();
    let collector = Collector::start(&[StatusCode::SERVICE_UNAVAILABLE]);
    let mut config = config(&collector);
    // No window ends on its own: the only upload is the one shutdown makes.
    config.upload_interval = Duration::from_secs(3600);
    let started_at = unix_now();
    let profiler = meshlight_profiler::start(config).expect("starts");

    let link = span::link([0x11; 16], [0x22; 8]).expect("a slot");
    assert_eq!(link.profile_id(), "2222222222222222");
    link.run(|| burn_in_test(Instant::now() + Duration::from_millis(600)));
    drop(link);
    let running = profiler.stats();
    assert_eq!(running.windows, 0);
    assert_eq!(running.spans_linked, 1);

    let stats = profiler.shutdown();
    assert_eq!(stats.windows, 1);
    assert_eq!(stats.failed_attempts, 1, "{stats:?}");
    assert_eq!(stats.profiles_uploaded, 1, "{stats:?}");
    assert_eq!(stats.profiles_dropped, 0);
    assert_eq!(stats.buffered_bytes, 0);
    assert!(stats.samples > 0);
    assert!(
        span::link([1; 16], [1; 8]).is_none(),
        "no profiler, no link"
    );

    let received = collector.received();
    assert_eq!(received.len(), 2, "the 503, then the retry");
    assert_eq!(received[0].query, received[1].query);
    assert_eq!(received[0].body, received[1].body);
    let request = &received[1];
    assert_eq!(request.content_type, "application/octet-stream");
    assert_eq!(
        query_value(&request.query, "name"),
        "upload-test{pod=web-0,region=eu_west,service_name=upload-test}"
    );
    assert_eq!(query_value(&request.query, "format"), "pprof");
    assert_eq!(query_value(&request.query, "sampleRate"), "250");
    assert_eq!(query_value(&request.query, "spyName"), "meshlight-profiler");
    let from: u64 = query_value(&request.query, "from").parse().expect("from");
    let until: u64 = query_value(&request.query, "until").parse().expect("until");
    assert!(
        started_at <= from && from < until && until <= unix_now() + 1,
        "{from}..{until}"
    );

    let profile = decode(&request.body);
    assert_eq!(profile.period, 4_000_000);
    assert_eq!(profile.string_table[0], "");
    let labelled: Vec<&Sample> = profile
        .sample
        .iter()
        .filter(|sample| label(&profile, sample, "span_id").is_some())
        .collect();
    assert!(!labelled.is_empty(), "samples of the linked span");
    for sample in labelled {
        assert_eq!(
            label(&profile, sample, "span_id").as_deref(),
            Some("2222222222222222")
        );
        assert_eq!(label(&profile, sample, "trace_id"), Some("11".repeat(16)));
        let names = names(&profile, sample);
        assert!(
            names.iter().any(|name| name.ends_with("burn_in_test")),
            "{names:?}"
        );
    }
}

#[test]
fn windows_are_uploaded_every_interval() {
    let _turn = one_profiler_at_a_time();
    let collector = Collector::start(&[]);
    let mut config = config(&collector);
    config.upload_interval = Duration::from_millis(300);
    let profiler = meshlight_profiler::start(config).expect("starts");

    let deadline = Instant::now() + Duration::from_secs(30);
    // The profiler counts an upload once it reads the answer, after the collector has it.
    while collector.received().len() < 3 || profiler.stats().profiles_uploaded < 3 {
        assert!(Instant::now() < deadline, "three windows within 30 s: {:?}", profiler.stats());
        burn_in_test(Instant::now() + Duration::from_millis(50));
    }
    let stats = profiler.stats();
    assert!(stats.windows >= 3, "{stats:?}");
    let stats = profiler.shutdown();
    assert_eq!(stats.failed_attempts, 0);
    assert_eq!(stats.profiles_dropped, 0);
    assert_eq!(stats.profiles_uploaded, stats.windows);

    let received = collector.received();
    assert_eq!(received.len() as u64, stats.windows);
    let mut last_from = 0;
    for request in &received {
        let from: u64 = query_value(&request.query, "from").parse().expect("from");
        assert!(from >= last_from, "windows in order");
        last_from = from;
        let profile = decode(&request.body);
        assert!(profile.duration_nanos > 0);
        assert!(
            profile.duration_nanos < 5_000_000_000,
            "{}",
            profile.duration_nanos
        );
    }
    let burned = received
        .iter()
        .map(|request| decode(&request.body))
        .any(|profile| {
            profile.sample.iter().any(|sample| {
                names(&profile, sample)
                    .iter()
                    .any(|n| n.ends_with("burn_in_test"))
            })
        });
    assert!(burned, "the burning shows up");
}

#[test]
fn a_rejected_profile_is_dropped_not_retried() {
    let _turn = one_profiler_at_a_time();
    let collector = Collector::start(&[StatusCode::BAD_REQUEST]);
    let mut config = config(&collector);
    config.upload_interval = Duration::from_secs(3600);
    let profiler = meshlight_profiler::start(config).expect("starts");
    burn_in_test(Instant::now() + Duration::from_millis(100));
    let stats = profiler.shutdown();
    assert_eq!(stats.windows, 1);
    assert_eq!(stats.profiles_dropped, 1);
    assert_eq!(stats.failed_attempts, 1);
    assert_eq!(stats.profiles_uploaded, 0);
    assert_eq!(collector.received().len(), 1);
}

#[test]
fn only_one_profiler_runs_per_process() {
    let _turn = one_profiler_at_a_time();
    let collector = Collector::start(&[]);
    let first = meshlight_profiler::start(config(&collector)).expect("starts");
    let second = meshlight_profiler::start(config(&collector));
    assert!(
        matches!(second, Err(StartError::AlreadyRunning)),
        "{second:?}"
    );
    drop(first);
    let again =
        meshlight_profiler::start(config(&collector)).expect("starts after the first stopped");
    again.shutdown();
}

#[test]
fn an_invalid_configuration_starts_nothing() {
    let mut config = ProfilerConfig::new("svc");
    config.frequency_hz = 0;
    let error = meshlight_profiler::start(config).expect_err("invalid");
    assert!(matches!(error, StartError::Config(_)), "{error}");
    assert!(error.to_string().contains("frequency_hz"), "{error}");
}
