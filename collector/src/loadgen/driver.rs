//! Sends a [`RequestPool`] to a collector over OTLP/gRPC with a fixed number of concurrent
//! clients, optionally paced to a target span rate, and reports what the collector did with
//! the spans.
//!
//! Accounting: every span sent ends up in exactly one of *acknowledged* (in an OK response
//! and not rejected), *rejected* (counted in the response's `partial_success`) or *refused*
//! (the request finally failed with a gRPC status, by code). `UNAVAILABLE` and
//! `RESOURCE_EXHAUSTED` are retried, as the OTLP specification asks, after the delay of the
//! status's `google.rpc.RetryInfo` detail if present, else after an exponential backoff.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use super::{RequestPool, unix_nanos_now};

/// First retry delay when the server gives none.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest computed retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest server-requested retry delay honoured; longer requests are cut to this.
const MAX_SERVER_BACKOFF: Duration = Duration::from_secs(30);

/// Longest pause between two requests of one client, whatever the target rate.
const MAX_PACING_PERIOD: Duration = Duration::from_secs(3600);

/// Time allowed to open each connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When a load run stops starting new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCondition {
    /// After this much time.
    Duration(Duration),
    /// Once this many spans were sent (the last request may overshoot by less than one request).
    TotalSpans(u64),
}

/// How to send load.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// OTLP/gRPC endpoint URL, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Concurrent clients, each with its own connection and at most one request in flight.
    pub concurrency: usize,
    /// Target rate in spans per second over all clients; 0 sends as fast as possible.
    pub spans_per_second: f64,
    /// When to stop.
    pub stop: StopCondition,
    /// Compress requests with gzip.
    pub gzip: bool,
    /// Retries of one request on `UNAVAILABLE` / `RESOURCE_EXHAUSTED` before counting it refused.
    pub max_retries: u32,
    /// Client-side deadline of one export call.
    pub request_timeout: Duration,
}

impl DriverConfig {
    /// A configuration with 4 unpaced clients, no compression, 5 retries and a 10 s timeout.
    pub fn new(endpoint: impl Into<String>, stop: StopCondition) -> Self {
        DriverConfig {
            endpoint: endpoint.into(),
            concurrency: 4,
            spans_per_second: 0.0,
            stop,
            gzip: false,
            max_retries: 5,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// The parse error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A connection could not be opened.
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint as configured.
        endpoint: String,
        /// The connection error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The pool holds no span to send.
    #[error("the request pool holds no spans")]
    EmptyPool,
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    NoClients,
    /// `spans_per_second` is negative or not finite.
    #[error("target rate must be a finite, non-negative number of spans per second, got {0}")]
    InvalidRate(f64),
    /// A client task panicked.
    #[error("a load client task panicked")]
    ClientPanicked(#[source] tokio::task::JoinError),
}

/// Requests and spans that finally failed with one gRPC code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Requests refused.
    pub requests: u64,
    /// Spans in those requests.
    pub spans: u64,
}

/// Client-side latency from the first attempt of a request to its OK response (retry waits
/// included), over acknowledged requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Acknowledged requests measured.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl LatencySummary {
    fn from_samples(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest-rank percentile.
        let percentile = |quantile: f64| {
            let rank = (quantile * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        LatencySummary {
            samples: samples.len(),
            p50: percentile(0.50),
            p99: percentile(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Requests sent (retries not counted again).
    pub requests_sent: u64,
    /// Spans sent (retries not counted again).
    pub spans_sent: u64,
    /// Requests answered OK.
    pub requests_acknowledged: u64,
    /// Spans in OK responses minus those the responses rejected.
    pub spans_acknowledged: u64,
    /// Spans rejected through `partial_success.rejected_spans`.
    pub spans_rejected: u64,
    /// Requests that finally failed, by gRPC code name.
    pub refused: BTreeMap<&'static str, Refusals>,
    /// Retries made, by the gRPC code name that caused them.
    pub retries: BTreeMap<&'static str, u64>,
    /// Latency of acknowledged requests.
    pub ack_latency: LatencySummary,
}

impl LoadReport {
    /// Spans refused over all codes.
    pub fn spans_refused(&self) -> u64 {
        self.refused.values().map(|refusals| refusals.spans).sum()
    }

    /// Acknowledged spans per second of elapsed time.
    pub fn acknowledged_spans_per_second(&self) -> f64 {
        per_second(self.spans_acknowledged, self.elapsed)
    }

    /// Sent spans per second of elapsed time.
    pub fn sent_spans_per_second(&self) -> f64 {
        per_second(self.spans_sent, self.elapsed)
    }
}

/// `count` per second of `elapsed` (0 when no time passed).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds == 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "elapsed             {:.2} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            formatter,
            "spans sent          {} ({} requests)",
            self.spans_sent, self.requests_sent
        )?;
        writeln!(
            formatter,
            "spans acknowledged  {} ({} requests)",
            self.spans_acknowledged, self.requests_acknowledged
        )?;
        writeln!(
            formatter,
            "spans rejected      {} (partial success)",
            self.spans_rejected
        )?;
        write!(formatter, "spans refused       {}", self.spans_refused())?;
        for (code, refusals) in &self.refused {
            write!(
                formatter,
                "; {code}: {} spans in {} requests",
                refusals.spans, refusals.requests
            )?;
        }
        writeln!(formatter)?;
        write!(
            formatter,
            "retries             {}",
            self.retries.values().sum::<u64>()
        )?;
        for (code, count) in &self.retries {
            write!(formatter, "; {code}: {count}")?;
        }
        writeln!(formatter)?;
        writeln!(
            formatter,
            "achieved rate       {:.0} acknowledged spans/s ({:.0} sent spans/s)",
            self.acknowledged_spans_per_second(),
            self.sent_spans_per_second()
        )?;
        write!(
            formatter,
            "ack latency         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests",
            milliseconds(self.ack_latency.p50),
            milliseconds(self.ack_latency.p99),
            milliseconds(self.ack_latency.max),
            self.ack_latency.samples
        )
    }
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Sends requests from `pool` as `config` says and reports the outcome.
///
/// Connections are opened before the clock starts. Requests are taken from the pool in
/// sequence (see [`RequestPool::prepare`]); with a target rate, each client sends on its own
/// `tokio` interval, staggered so that the clients together reach the rate, and catches up
/// after a slow response (burst) as long as its connection allows.
pub async fn send_load(
    pool: Arc<RequestPool>,
    config: &DriverConfig,
) -> Result<LoadReport, DriverError> {
    if pool.total_spans() == 0 {
        return Err(DriverError::EmptyPool);
    }
    if config.concurrency == 0 {
        return Err(DriverError::NoClients);
    }
    if !config.spans_per_second.is_finite() || config.spans_per_second < 0.0 {
        return Err(DriverError::InvalidRate(config.spans_per_second));
    }

    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|source| DriverError::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.request_timeout)
        .tcp_nodelay(true);
    let mut clients = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| DriverError::Connect {
                endpoint: config.endpoint.clone(),
                source,
            })?;
        let mut client = TraceServiceClient::new(channel);
        if config.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        clients.push(client);
    }

    let started = Instant::now();
    let deadline = match config.stop {
        // A deadline beyond the clock's range means no deadline.
        StopCondition::Duration(duration) => started.checked_add(duration),
        StopCondition::TotalSpans(_) => None,
    };
    // Each client sends one request per period; together they reach the target rate.
    let pacing_period = (config.spans_per_second > 0.0).then(|| {
        let seconds =
            config.concurrency as f64 * pool.mean_spans_per_request() / config.spans_per_second;
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_PACING_PERIOD)
            .clamp(Duration::from_micros(1), MAX_PACING_PERIOD)
    });
    let shared = Arc::new(SharedState {
        pool,
        config: config.clone(),
        started,
        deadline,
        pacing_period,
        next_sequence: AtomicU64::new(0),
        spans_claimed: AtomicU64::new(0),
    });

    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(client_index, client)| {
            tokio::spawn(run_client(client_index, client, Arc::clone(&shared)))
        })
        .collect();
    let mut totals = ClientStats::default();
    for task in tasks {
        totals.merge(task.await.map_err(DriverError::ClientPanicked)?);
    }
    Ok(totals.into_report(started.elapsed()))
}

/// State all clients of one run share.
struct SharedState {
    pool: Arc<RequestPool>,
    config: DriverConfig,
    started: Instant,
    deadline: Option<Instant>,
    pacing_period: Option<Duration>,
    /// Sequence number of the next request to send.
    next_sequence: AtomicU64,
    /// Spans claimed by clients so far, for [`StopCondition::TotalSpans`].
    spans_claimed: AtomicU64,
}

impl SharedState {
    fn deadline_passed(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// Counts of one client, merged into the [`LoadReport`].
#[derive(Debug, Default)]
struct ClientStats {
    requests_sent: u64,
    spans_sent: u64,
    requests_acknowledged: u64,
    spans_acknowledged: u64,
    spans_rejected: u64,
    refused: BTreeMap<&'static str, Refusals>,
    retries: BTreeMap<&'static str, u64>,
    ack_latencies: Vec<Duration>,
}

impl ClientStats {
    fn merge(&mut self, other: ClientStats) {
        self.requests_sent += other.requests_sent;
        self.spans_sent += other.spans_sent;
        self.requests_acknowledged += other.requests_acknowledged;
        self.spans_acknowledged += other.spans_acknowledged;
        self.spans_rejected += other.spans_rejected;
        for (code, refusals) in other.refused {
            let total = self.refused.entry(code).or_default();
            total.requests += refusals.requests;
            total.spans += refusals.spans;
        }
        for (code, count) in other.retries {
            *self.retries.entry(code).or_default() += count;
        }
        self.ack_latencies.extend(other.ack_latencies);
    }

    fn into_report(self, elapsed: Duration) -> LoadReport {
        LoadReport {
            elapsed,
            requests_sent: self.requests_sent,
            spans_sent: self.spans_sent,
            requests_acknowledged: self.requests_acknowledged,
            spans_acknowledged: self.spans_acknowledged,
            spans_rejected: self.spans_rejected,
            refused: self.refused,
            retries: self.retries,
            ack_latency: LatencySummary::from_samples(self.ack_latencies),
        }
    }
}

async fn run_client(
    client_index: usize,
    mut client: TraceServiceClient<Channel>,
    shared: Arc<SharedState>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut jitter_rng = StdRng::seed_from_u64(client_index as u64);
    let mut ticker = shared.pacing_period.map(|period| {
        let stagger = period.mul_f64(client_index as f64 / shared.config.concurrency as f64);
        let mut interval = tokio::time::interval_at(shared.started + stagger, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        interval
    });
    loop {
        if let Some(ticker) = ticker.as_mut() {
            match shared.deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, ticker.tick())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                None => {
                    ticker.tick().await;
                }
            }
        }
        if shared.deadline_passed() {
            break;
        }
        let sequence = shared.next_sequence.fetch_add(1, Ordering::Relaxed);
        let spans = shared.pool.span_count(sequence);
        if let StopCondition::TotalSpans(total_spans) = shared.config.stop {
            let claimed_before = shared.spans_claimed.fetch_add(spans, Ordering::Relaxed);
            if claimed_before >= total_spans {
                break;
            }
        }
        stats.requests_sent += 1;
        stats.spans_sent += spans;
        export_with_retries(
            &mut client,
            &shared,
            sequence,
            spans,
            &mut stats,
            &mut jitter_rng,
        )
        .await;
    }
    stats
}

/// Sends request `sequence` until it is answered OK, refused with a final code, or out of
/// retries, and records the outcome.
async fn export_with_retries(
    client: &mut TraceServiceClient<Channel>,
    shared: &SharedState,
    sequence: u64,
    spans: u64,
    stats: &mut ClientStats,
    jitter_rng: &mut StdRng,
) {
    let first_attempt = Instant::now();
    let mut retries_done = 0;
    loop {
        // Prepared again per attempt instead of kept for a retry, so that the OK path (by far
        // the common one) copies the pooled request once.
        let request = shared.pool.prepare(sequence, unix_nanos_now());
        let status = match client.export(request).await {
            Ok(response) => {
                let rejected = response
                    .into_inner()
                    .partial_success
                    .map_or(0, |partial| {
                        u64::try_from(partial.rejected_spans).unwrap_or(0)
                    })
                    .min(spans);
                stats.requests_acknowledged += 1;
                stats.spans_acknowledged += spans - rejected;
                stats.spans_rejected += rejected;
                stats.ack_latencies.push(first_attempt.elapsed());
                return;
            }
            Err(status) => status,
        };
        let code = status.code();
        let retryable = matches!(code, Code::Unavailable | Code::ResourceExhausted);
        if retryable && retries_done < shared.config.max_retries && !shared.deadline_passed() {
            *stats.retries.entry(code_name(code)).or_default() += 1;
            tokio::time::sleep(retry_delay(&status, retries_done, jitter_rng)).await;
            retries_done += 1;
            continue;
        }
        let refusals = stats.refused.entry(code_name(code)).or_default();
        refusals.requests += 1;
        refusals.spans += spans;
        return;
    }
}

/// The server's `RetryInfo` delay if it sent one, else exponential backoff with ±20 % jitter.
fn retry_delay(status: &tonic::Status, retries_done: u32, jitter_rng: &mut StdRng) -> Duration {
    if let Some(server_delay) = status
        .get_details_retry_info()
        .and_then(|retry_info| retry_info.retry_delay)
    {
        return server_delay.min(MAX_SERVER_BACKOFF);
    }
    let exponential = INITIAL_BACKOFF
        .saturating_mul(2_u32.saturating_pow(retries_done))
        .min(MAX_BACKOFF);
    exponential.mul_f64(jitter_rng.random_range(0.8..1.2))
}

/// The canonical gRPC name of `code`, as in the gRPC specification.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
