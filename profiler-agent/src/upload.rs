//! The profiler's thread: every `upload_interval` it rotates the window, encodes it and
//! uploads the buffered profiles, oldest first, to the collector's Pyroscope ingest.
//!
//! The thread is plain `std`, so rotating and symbolizing (CPU-bound) never sits on an async
//! executor; only the HTTP requests run on its own current-thread tokio runtime, one
//! `block_on` per request.
//!
//! Invariant: the buffer never holds more than `max_buffered_bytes`; what does not fit is
//! dropped oldest first, and counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};

use crate::config::ProfilerConfig;
use crate::encode::{encode, gzip};
use crate::sampler::Sampler;
use crate::{StartError, span};

/// The `spyName` Pyroscope records for uploads of this agent.
pub(crate) const SPY_NAME: &str = "meshlight-profiler";
/// The first wait after a failed upload; it doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// How much of a rejection's body is logged.
const MAX_LOGGED_BODY_CHARS: usize = 200;

/// The agent's counters, shared with [`crate::Profiler::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) windows: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) profiles_uploaded: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) profiles_dropped: AtomicU64,
    pub(crate) buffered_bytes: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

/// Replaces every character outside `[A-Za-z0-9_.:/-]` with `_`, so that a value cannot
/// break the `name{k=v,…}` syntax.
pub(crate) fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Pyroscope's series name: `app{k=v,k2=v2}`, labels sorted by name, empty values left out.
pub(crate) fn series_name(service_name: &str, labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}={}", sanitize(value)))
        .collect();
    format!("{}{{{}}}", sanitize(service_name), pairs.join(","))
}

/// `{endpoint}/ingest?name=…&from=…&until=…&format=pprof&sampleRate=…&spyName=…`.
pub(crate) fn ingest_url(
    endpoint: &str,
    name: &str,
    from: u64,
    until: u64,
    sample_rate: u32,
) -> Result<Url, UrlError> {
    let mut url = Url::parse(&format!("{}/ingest", endpoint.trim_end_matches('/')))?;
    url.query_pairs_mut()
        .append_pair("name", name)
        .append_pair("from", &from.to_string())
        .append_pair("until", &until.to_string())
        .append_pair("format", "pprof")
        .append_pair("sampleRate", &sample_rate.to_string())
        .append_pair("spyName", SPY_NAME);
    Ok(url)
}

/// `url::ParseError`, named through reqwest, which re-exports `Url` but not its error.
pub(crate) type UrlError = <Url as std::str::FromStr>::Err;

/// One encoded profile waiting for upload.
#[derive(Debug)]
struct Pending {
    url: Url,
    body: Vec<u8>,
}

/// What one upload attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Kept and tried again later: no connection, a timeout, 429 or 5xx.
    Retry(String),
    /// Dropped: any other status the collector will answer the same way next time.
    Rejected(StatusCode, String),
}

/// The buffer of encoded profiles and the client that uploads them.
pub(crate) struct Uploader {
    config: ProfilerConfig,
    series: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    buffer: VecDeque<Pending>,
    buffered_bytes: usize,
    backoff: Option<Duration>,
    next_attempt: Instant,
    counters: Arc<Counters>,
}

impl Uploader {
    pub(crate) fn new(config: ProfilerConfig, counters: Arc<Counters>) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Io)?;
        let client = {
            let _entered = runtime.enter();
            // The collector is reached directly: a proxy from HTTP_PROXY would be a surprise
            // for traffic to a node-local or in-cluster collector.
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(config.request_timeout)
                .user_agent(concat!("meshlight-profiler/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|error| StartError::Client(Box::new(error)))?
        };
        let series = series_name(&config.service_name, &config.series_labels());
        Ok(Self {
            config,
            series,
            runtime,
            client,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            backoff: None,
            next_attempt: Instant::now(),
            counters,
        })
    }

    /// Adds a profile; the oldest are dropped while the buffer is over its limit.
    fn push(&mut self, url: Url, body: Vec<u8>) {
        self.buffered_bytes += body.len();
        self.buffer.push_back(Pending { url, body });
        while self.buffered_bytes > self.config.max_buffered_bytes {
            let Some(oldest) = self.buffer.pop_front() else {
                break;
            };
            self.buffered_bytes -= oldest.body.len();
            Counters::add(&self.counters.profiles_dropped, 1);
            tracing::warn!(
                bytes = oldest.body.len(),
                max_buffered_bytes = self.config.max_buffered_bytes,
                "profile buffer full, oldest profile dropped"
            );
        }
        self.publish_buffered();
    }

    fn pop(&mut self) {
        if let Some(sent) = self.buffer.pop_front() {
            self.buffered_bytes -= sent.body.len();
        }
        self.publish_buffered();
    }

    fn publish_buffered(&self) {
        self.counters
            .buffered_bytes
            .store(self.buffered_bytes as u64, Ordering::Relaxed);
    }

    /// Sends buffered profiles, oldest first, while attempts are due and `stop_at` has not
    /// come.
    fn send_due(&mut self, stop_at: Instant) {
        while !self.buffer.is_empty() {
            let now = Instant::now();
            if now < self.next_attempt || now >= stop_at {
                return;
            }
            self.attempt(self.config.request_timeout);
        }
    }

    /// Sends what is buffered until `deadline`, retrying with backoff, then drops the rest.
    fn flush(&mut self, deadline: Instant) {
        self.next_attempt = Instant::now();
        while !self.buffer.is_empty() {
            let now = Instant::now();
            let Some(remaining) = deadline
                .checked_duration_since(now)
                .filter(|left| !left.is_zero())
            else {
                break;
            };
            if self.next_attempt > now {
                // This thread has nothing else to do until the retry or the deadline.
                thread::sleep((self.next_attempt - now).min(remaining));
                continue;
            }
            self.attempt(self.config.request_timeout.min(remaining));
        }
        if !self.buffer.is_empty() {
            let left = self.buffer.len() as u64;
            Counters::add(&self.counters.profiles_dropped, left);
            tracing::warn!(
                profiles = left,
                "profiler shut down before every profile was uploaded"
            );
            self.buffer.clear();
            self.buffered_bytes = 0;
            self.publish_buffered();
        }
    }

    /// One request for the oldest profile.
    fn attempt(&mut self, timeout: Duration) {
        let Some(pending) = self.buffer.front() else {
            return;
        };
        let request = self
            .client
            .post(pending.url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .timeout(timeout)
            .body(pending.body.clone());
        // `send` arms the timeout, which needs the runtime: call it inside `block_on`.
        let outcome = self.runtime.block_on(async {
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => return Outcome::Retry(error_chain(&error)),
            };
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(MAX_LOGGED_BODY_CHARS).collect();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Outcome::Retry(format!("{status}: {body}"))
            } else {
                Outcome::Rejected(status, body)
            }
        });

        match outcome {
            Outcome::Delivered => {
                self.pop();
                Counters::add(&self.counters.profiles_uploaded, 1);
                self.backoff = None;
                self.next_attempt = Instant::now();
            }
            Outcome::Retry(reason) => {
                Counters::add(&self.counters.failed_attempts, 1);
                let backoff = match self.backoff {
                    None => INITIAL_BACKOFF,
                    Some(last) => last.saturating_mul(2),
                }
                .min(self.config.max_backoff);
                if self.backoff.is_none() {
                    tracing::warn!(%reason, retry_in = ?backoff, "profile upload failed, will retry");
                } else {
                    tracing::debug!(%reason, retry_in = ?backoff, "profile upload failed again");
                }
                self.backoff = Some(backoff);
                self.next_attempt = Instant::now() + backoff;
            }
            Outcome::Rejected(status, body) => {
                self.pop();
                Counters::add(&self.counters.failed_attempts, 1);
                Counters::add(&self.counters.profiles_dropped, 1);
                tracing::warn!(%status, %body, "collector rejected a profile, dropped");
            }
        }
    }
}

/// Whole seconds since the Unix epoch; 0 before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// An error with its sources: reqwest's own message is often just "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Clears the span flag however the thread ends, so spans stop taking slots nobody frees.
struct Deactivate;

impl Drop for Deactivate {
    fn drop(&mut self) {
        span::deactivate();
    }
}

/// What the profiler's thread is given.
pub(crate) struct Agent {
    pub(crate) config: ProfilerConfig,
    pub(crate) counters: Arc<Counters>,
    /// A message, or the sender dropped, stops the thread.
    pub(crate) shutdown: Receiver<()>,
    /// Where the thread reports whether it started.
    pub(crate) ready: SyncSender<Result<(), StartError>>,
}

impl Agent {
    /// The thread's body: starts sampling, reports the start on `ready`, then rotates and
    /// uploads until `shutdown` says so.
    pub(crate) fn run(self) {
        let Agent {
            config,
            counters,
            shutdown,
            ready,
        } = self;
        run(&config, counters, &shutdown, &ready);
    }
}

fn run(
    config: &ProfilerConfig,
    counters: Arc<Counters>,
    shutdown: &Receiver<()>,
    ready: &SyncSender<Result<(), StartError>>,
) {
    let _deactivate = Deactivate;
    span::prepare();
    let started = Uploader::new(config.clone(), counters).and_then(|uploader| {
        let sampler = Sampler::start(config.frequency_hz)
            .map_err(|error| StartError::Sampling(Box::new(error)))?;
        Ok((uploader, sampler))
    });
    let (mut uploader, mut sampler) = match started {
        Ok(started) => started,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    span::activate();
    if ready.send(Ok(())).is_err() {
        return;
    }
    tracing::debug!(
        series = %uploader.series,
        frequency_hz = config.frequency_hz,
        "cpu profiler started"
    );

    let mut next_rotation = Instant::now() + config.upload_interval;
    loop {
        let wake = if uploader.buffer.is_empty() {
            next_rotation
        } else {
            next_rotation.min(uploader.next_attempt)
        };
        match shutdown.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next_rotation {
            if sampler.is_running() {
                take_window(&mut sampler, &mut uploader, true);
            }
            next_rotation += config.upload_interval;
            if next_rotation <= now {
                // Rotation fell behind (a slow upload): the next window starts from now.
                next_rotation = now + config.upload_interval;
            }
        }
        uploader.send_due(next_rotation);
    }

    // Shutdown: no new links, the last partial window, then what the deadline allows.
    span::deactivate();
    let deadline = Instant::now() + config.shutdown_timeout;
    if sampler.is_running() {
        take_window(&mut sampler, &mut uploader, false);
    }
    drop(sampler);
    uploader.flush(deadline);
    tracing::debug!("cpu profiler stopped");
}

/// Rotates the window and buffers it.
fn take_window(sampler: &mut Sampler, uploader: &mut Uploader, restart: bool) {
    let window = match sampler.rotate(restart) {
        Ok(window) => window,
        Err(error) => {
            tracing::warn!(%error, "cpu profile window lost");
            return;
        }
    };
    Counters::add(&uploader.counters.windows, 1);
    Counters::add(&uploader.counters.samples, window.sample_count());
    // Both rounded down, so that consecutive windows abut rather than overlap.
    let from = unix_seconds(window.start);
    let until = unix_seconds(window.end()).max(from + 1);
    let body = match gzip(&encode(&window)) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, "cpu profile window could not be compressed");
            return;
        }
    };
    match ingest_url(
        &uploader.config.endpoint,
        &uploader.series,
        from,
        until,
        window.frequency_hz,
    ) {
        Ok(url) => uploader.push(url, body),
        Err(error) => tracing::warn!(%error, "cpu profile upload URL is invalid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_the_series_syntax() {
        assert_eq!(sanitize("eu-west-1a/zone:3.b_c"), "eu-west-1a/zone:3.b_c");
        assert_eq!(sanitize("a,b=c{d}e f\"g\u{e9}"), "a_b_c_d_e_f_g_");
        let labels = BTreeMap::from([
            ("service_name".to_owned(), "checkout".to_owned()),
            ("pod".to_owned(), "checkout-7d9f,x=1}".to_owned()),
            ("namespace".to_owned(), String::new()),
            ("team".to_owned(), "pay ments".to_owned()),
        ]);
        assert_eq!(
            series_name("check{out}", &labels),
            "check_out_{pod=checkout-7d9f_x_1_,service_name=checkout,team=pay_ments}"
        );
    }

    #[test]
    fn window_times_are_whole_seconds_rounded_down() {
        let at = |millis| UNIX_EPOCH + Duration::from_millis(millis);
        assert_eq!(unix_seconds(at(1_999)), 1);
        assert_eq!(unix_seconds(at(2_000)), 2);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn the_ingest_url_encodes_the_name() {
        let url = ingest_url(
            "http://127.0.0.1:4318/",
            "svc{pod=a/b,service_name=svc}",
            1_700_000_000,
            1_700_000_010,
            100,
        )
        .expect("valid");
        assert_eq!(url.path(), "/ingest");
        assert_eq!(
            url.query(),
            Some(
                "name=svc%7Bpod%3Da%2Fb%2Cservice_name%3Dsvc%7D&from=1700000000&until=1700000010\
                 &format=pprof&sampleRate=100&spyName=meshlight-profiler"
            )
        );
        let with_path = ingest_url("http://collector/base", "a{}", 1, 2, 100).expect("valid");
        assert_eq!(with_path.path(), "/base/ingest");
    }

    fn uploader(max_buffered_bytes: usize) -> Uploader {
        let mut config = ProfilerConfig::new("svc");
        config.max_buffered_bytes = max_buffered_bytes;
        Uploader::new(config, Arc::default()).expect("uploader")
    }

    fn url(n: u64) -> Url {
        ingest_url("http://127.0.0.1:9", "svc{}", n, n + 1, 100).expect("valid")
    }

    /// A loopback port nothing listens on: bound, then released.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }

    #[test]
    fn the_buffer_drops_the_oldest_profiles_beyond_its_limit() {
        let mut uploader = uploader(100);
        uploader.push(url(1), vec![1; 40]);
        uploader.push(url(2), vec![2; 40]);
        assert_eq!(uploader.counters.buffered_bytes.load(Ordering::Relaxed), 80);
        uploader.push(url(3), vec![3; 40]);
        let kept: Vec<u8> = uploader
            .buffer
            .iter()
            .map(|pending| pending.body[0])
            .collect();
        assert_eq!(kept, [2, 3]);
        assert_eq!(
            uploader.counters.profiles_dropped.load(Ordering::Relaxed),
            1
        );
        assert_eq!(uploader.counters.buffered_bytes.load(Ordering::Relaxed), 80);

        // A profile larger than the whole buffer cannot be kept either.
        uploader.push(url(4), vec![4; 101]);
        assert!(uploader.buffer.is_empty());
        assert_eq!(
            uploader.counters.profiles_dropped.load(Ordering::Relaxed),
            4
        );
        assert_eq!(uploader.counters.buffered_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unreachable_collector_keeps_the_profile_and_backs_off() {
        let mut uploader = uploader(1000);
        uploader.config.max_backoff = Duration::from_secs(4);
        let endpoint = format!("http://127.0.0.1:{}", closed_port());
        let url = ingest_url(&endpoint, "svc{}", 1, 2, 100).expect("valid");
        uploader.push(url, vec![1; 10]);
        let mut waits = Vec::new();
        for _ in 0..4 {
            let before = Instant::now();
            uploader.attempt(Duration::from_secs(2));
            waits.push(uploader.backoff.expect("backing off"));
            assert!(uploader.next_attempt >= before + waits[waits.len() - 1]);
        }
        assert_eq!(
            waits,
            [1, 2, 4, 4].map(Duration::from_secs),
            "doubling from 1 s up to max_backoff"
        );
        assert_eq!(uploader.buffer.len(), 1);
        assert_eq!(uploader.counters.failed_attempts.load(Ordering::Relaxed), 4);

        // A flush with no time left gives up on what is buffered, and counts it.
        uploader.flush(Instant::now());
        assert!(uploader.buffer.is_empty());
        assert_eq!(
            uploader.counters.profiles_dropped.load(Ordering::Relaxed),
            1
        );
    }
}
