//! Pyroscope-compatible profile ingest: `POST /ingest` on the OTLP/HTTP port.
//!
//! `name=app{k=v,…}` names the series (its labels, with `service_name` taken from the
//! labels or else from the application name), `from`/`until` the profiled window and
//! `format=pprof` the body: a pprof profile, gzipped or not, either as the raw body or as
//! the `profile` part of a `multipart/form-data` body (what Pyroscope's clients send). An
//! upload is stored whole or not at all, and acknowledged only once durable: 200 when
//! stored, 400 with the reason when malformed, 413 over the body cap, 503 with
//! `Retry-After` when the store refuses for now.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use meshlight_profiler::proto::Profile;

use super::model::{Dedup, Rows, to_rows};
use super::pprof::{DecodeLimits, decode};
use super::series::SeriesName;
use crate::config::{Limits, ProfilesConfig};
use crate::ingest::body_limit::{refuse_as_text, with_body_limit};
use crate::schema::{UploadInfo, profile_rows_to_batches};
use crate::store::{NANOS_PER_HOUR, PreparedWrite, Refusal, Store, StoreError};
use crate::telemetry::{SelfMetrics, SignalLabels, SignalReasonLabels};

/// The self-metrics `signal` label of profile samples.
const SIGNAL: &str = "profiles";

/// Why an upload was not stored; [`ProfileIngestError::status`] is the one place these
/// become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ProfileIngestError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(Refusal),
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl ProfileIngestError {
    fn status(&self) -> StatusCode {
        match self {
            ProfileIngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            ProfileIngestError::Refused(_) | ProfileIngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ProfileIngestError::Invalid(_) => "invalid",
            ProfileIngestError::Refused(refusal) => refusal.as_str(),
            ProfileIngestError::Store(StoreError::ShuttingDown) => Refusal::ShuttingDown.as_str(),
            ProfileIngestError::Store(_) => "storage_error",
        }
    }
}

/// The query parameters of one upload.
#[derive(Debug, Default)]
struct Params {
    name: Option<String>,
    from: Option<String>,
    until: Option<String>,
    format: Option<String>,
    sample_rate: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let mut params = Params::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "name" => &mut params.name,
                "from" => &mut params.from,
                "until" => &mut params.until,
                "format" => &mut params.format,
                "sampleRate" => &mut params.sample_rate,
                // Pyroscope clients also send `spyName`, `units` and `aggregationType`,
                // which a pprof body states itself.
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        params
    }
}

/// Stores uploaded profiles; shared by every request.
pub struct ProfileIngestor {
    store: Arc<Store>,
    metrics: Arc<SelfMetrics>,
    config: ProfilesConfig,
    limits: Limits,
    /// Ids stored in the current hour partition.
    dedup: tokio::sync::Mutex<HourlyDedup>,
}

/// De-duplication within one hour partition: a function, location or stack is written once
/// per hour it is used in, so retention, which drops whole hours, never removes one that a
/// kept sample references. Uploads for other hours (late or early) are written whole.
struct HourlyDedup {
    hour: i64,
    ids: Dedup,
}

/// Uploads larger than this are decoded on the blocking pool rather than on an async
/// worker, so that a large profile cannot stall other connections.
const INLINE_DECODE_MAX_BYTES: usize = 256 << 10;

/// The window assumed for an upload that states none: an agent's default interval.
const DEFAULT_WINDOW_NANOS: i64 = 10_000_000_000;

impl ProfileIngestor {
    pub fn new(store: Arc<Store>, metrics: Arc<SelfMetrics>, config: ProfilesConfig, limits: Limits) -> Self {
        let dedup = tokio::sync::Mutex::new(HourlyDedup { hour: i64::MIN, ids: Dedup::new(config.dedup_entries) });
        Self { store, metrics, config, limits, dedup }
    }

    /// Decodes, validates and stores one upload.
    pub async fn ingest(&self, query: &str, content_type: &str, body: Bytes) -> Result<(), ProfileIngestError> {
        let params = Params::parse(query);
        let invalid = |message: String| {
            self.count_failed("invalid");
            ProfileIngestError::Invalid(message)
        };
        let series = SeriesName::parse(params.name.as_deref().unwrap_or_default()).map_err(invalid)?;
        let is_multipart = content_type.starts_with("multipart/form-data");
        match params.format.as_deref() {
            Some("pprof") => {}
            None if is_multipart => {}
            other => return Err(invalid(format!("unsupported format {other:?}: this collector ingests format=pprof"))),
        }
        let limits = DecodeLimits {
            max_decompressed_bytes: self.config.max_profile_bytes,
            max_samples: self.config.max_samples,
            max_stack_depth: self.config.max_stack_depth,
        };
        let inline = body.len() <= INLINE_DECODE_MAX_BYTES;
        let content_type = content_type.to_owned();
        let decode_rows = move || -> Result<(Profile, Rows), String> {
            let profile = decode(profile_part(&content_type, &body)?, &limits).map_err(|error| error.to_string())?;
            let rows = to_rows(&profile);
            Ok((profile, rows))
        };
        let decoded = if inline {
            decode_rows()
        } else {
            tokio::task::spawn_blocking(decode_rows).await.unwrap_or_else(|error| Err(format!("decoding failed: {error}")))
        };
        let (profile, mut rows) = decoded.map_err(invalid)?;
        let window = Window::of(&params, &profile).map_err(invalid)?;
        let samples = profile.sample.len() as u64;
        self.metrics.items_received.get_or_create(&SignalLabels { signal: SIGNAL }).inc_by(samples);

        let upload = UploadInfo {
            timestamp: window.start_nanos,
            duration_nanos: window.duration_nanos,
            profile_id: format!("{:016x}", rand::random::<u64>()),
            service_name: series.service_name.clone(),
            labels: series.labels.clone(),
            period: super::model::profile_period(&profile).or_else(|| window.fallback_period()),
        };
        let hour = window.start_nanos.div_euclid(NANOS_PER_HOUR);
        let result = {
            // Held across the write: an upload must not skip a stack that another upload
            // has let through but not yet made durable.
            let mut dedup = self.dedup.lock().await;
            if dedup.hour < hour {
                *dedup = HourlyDedup { hour, ids: Dedup::new(self.config.dedup_entries) };
            }
            if dedup.hour == hour {
                dedup.ids.retain_new(&mut rows);
            }
            let result = self.write(&upload, &rows).await;
            if result.is_err() && dedup.hour == hour {
                // Nothing of this upload was stored, so the ids it let through are not
                // stored either; forgetting all only costs writing some rows twice.
                dedup.ids.clear();
            }
            result
        };
        if let Err(error) = result {
            self.metrics
                .items_refused
                .get_or_create(&SignalReasonLabels { signal: SIGNAL, reason: error.reason() })
                .inc_by(samples);
            return Err(error);
        }
        self.metrics.items_accepted.get_or_create(&SignalLabels { signal: SIGNAL }).inc_by(samples);
        Ok(())
    }

    async fn write(&self, upload: &UploadInfo, rows: &Rows) -> Result<(), ProfileIngestError> {
        let batches = profile_rows_to_batches(upload, rows);
        let bytes = batches.iter().map(|(_, batch)| batch.get_array_memory_size()).sum::<usize>();
        let admission = self.store.admit(bytes.saturating_mul(2)).map_err(ProfileIngestError::Refused)?;
        let write = PreparedWrite::batches(batches).map_err(ProfileIngestError::Store)?;
        self.store.write(write).await.map_err(|error| match error {
            StoreError::ShuttingDown => ProfileIngestError::Refused(Refusal::ShuttingDown),
            other => ProfileIngestError::Store(other),
        })?;
        drop(admission);
        Ok(())
    }

    fn count_failed(&self, reason: &'static str) {
        self.metrics.requests_failed.get_or_create(&SignalReasonLabels { signal: SIGNAL, reason }).inc();
    }
}

/// The profiled window of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start_nanos: i64,
    duration_nanos: i64,
    /// `sampleRate`, used for the period when the profile states none.
    sample_rate_hz: Option<i64>,
}

impl Window {
    /// `from`/`until` when given, else the profile's own time and duration, else the ten
    /// seconds before now (an agent's default window).
    fn of(params: &Params, profile: &Profile) -> Result<Window, String> {
        let sample_rate_hz = match params.sample_rate.as_deref() {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(hz) if hz > 0 => Some(hz),
                _ => return Err(format!("sampleRate must be a positive integer, not {text:?}")),
            },
        };
        let from = params.from.as_deref().map(parse_unix_time).transpose()?;
        let until = params.until.as_deref().map(parse_unix_time).transpose()?;
        let own = super::model::profile_time(profile);
        let duration = own.duration_nanos.unwrap_or(0);
        let (start_nanos, end_nanos) = match (from, until, own.start_nanos) {
            (Some(from), Some(until), _) => (from, until),
            (Some(from), None, _) => (from, from + duration),
            (None, Some(until), _) => (until - duration, until),
            (None, None, Some(start)) => (start, start + duration),
            (None, None, None) => {
                let now = now_nanos();
                (now - DEFAULT_WINDOW_NANOS, now)
            }
        };
        if end_nanos < start_nanos {
            return Err(format!("until ({end_nanos} ns) is before from ({start_nanos} ns)"));
        }
        Ok(Window { start_nanos, duration_nanos: end_nanos - start_nanos, sample_rate_hz })
    }

    fn fallback_period(&self) -> Option<(String, i64)> {
        self.sample_rate_hz.map(|hz| ("cpu:nanoseconds".to_owned(), 1_000_000_000 / hz))
    }
}

/// A Unix time as Pyroscope accepts it: an integer in seconds, milliseconds, microseconds
/// or nanoseconds, told apart by magnitude.
fn parse_unix_time(text: &str) -> Result<i64, String> {
    let value: i64 = text.parse().map_err(|_| format!("cannot parse time {text:?}: expected Unix seconds"))?;
    let nanos = match value.unsigned_abs() {
        0..100_000_000_000 => value.checked_mul(1_000_000_000),
        100_000_000_000..100_000_000_000_000 => value.checked_mul(1_000_000),
        100_000_000_000_000..100_000_000_000_000_000 => value.checked_mul(1_000),
        _ => Some(value),
    };
    nanos.ok_or_else(|| format!("time {text:?} is out of range"))
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The pprof bytes of a request: the body itself, or the `profile` part of a multipart
/// form.
fn profile_part<'a>(content_type: &str, body: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(parameters) = content_type.strip_prefix("multipart/form-data") else {
        return Ok(body);
    };
    let boundary = parameters
        .split(';')
        .filter_map(|parameter| parameter.trim().strip_prefix("boundary="))
        .map(|boundary| boundary.trim_matches('"'))
        .next()
        .filter(|boundary| !boundary.is_empty())
        .ok_or("multipart/form-data without a boundary")?;
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let headers_end = find(rest, b"\r\n\r\n").ok_or("multipart part without a header end")?;
        let headers = String::from_utf8_lossy(&rest[..headers_end]);
        let content = &rest[headers_end + 4..];
        let content_end = find(content, format!("\r\n{delimiter}").as_bytes()).ok_or("multipart part without a closing boundary")?;
        let is_profile = headers
            .lines()
            .filter(|line| line.to_ascii_lowercase().starts_with("content-disposition:"))
            .any(|line| line.split(';').any(|parameter| parameter.trim() == "name=\"profile\""));
        if is_profile {
            return Ok(&content[..content_end]);
        }
        rest = &content[content_end..];
    }
    Err("multipart/form-data body has no \"profile\" part".to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The `/ingest` route.
pub fn router(ingestor: Arc<ProfileIngestor>) -> Router {
    let body_limit = ingestor.limits.max_request_bytes;
    with_body_limit(Router::new().route("/ingest", post(ingest)), body_limit, refuse_as_text).with_state(ingestor)
}

async fn ingest(
    State(ingestor): State<Arc<ProfileIngestor>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match ingestor.ingest(query.as_deref().unwrap_or_default(), content_type, body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => {
            let mut response = (error.status(), format!("{error}\n")).into_response();
            if error.status() == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ingestor.limits.retry_after_secs));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_told_apart_by_magnitude() {
        assert_eq!(parse_unix_time("1700000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_unix_time("1700000000123"), Ok(1_700_000_000_123_000_000));
        assert_eq!(parse_unix_time("1700000000123456789"), Ok(1_700_000_000_123_456_789));
        assert!(parse_unix_time("soon").is_err());
    }

    #[test]
    fn the_profile_part_of_a_multipart_body_is_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8bPPROF\r\n--XyZ--\r\n";
        assert_eq!(profile_part("multipart/form-data; boundary=XyZ", body), Ok(&b"\x1f\x8bPPROF"[..]));
        assert_eq!(profile_part("application/octet-stream", b"raw"), Ok(&b"raw"[..]));
        assert!(profile_part("multipart/form-data", body).is_err());
        let no_profile = b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ--\r\n";
        assert!(profile_part("multipart/form-data; boundary=XyZ", no_profile).is_err());
    }
}
