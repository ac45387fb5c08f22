//! The Prometheus HTTP API (`/api/v1/query`, `query_range`, `series`, `labels`,
//! `label/<name>/values`, `metadata`, `query_exemplars`, `status/buildinfo`) over the
//! stored metrics, with Prometheus's response envelope and error types. Parameters come
//! from the URL and, for POST, from a form body, as in Prometheus.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use promql_parser::parser::{self, Expr};
use serde::Serialize;
use serde::ser::{SerializeMap as _, SerializeSeq as _, Serializer};
use serde_json::{Value as JsonValue, json};

use super::ApiState;
use crate::promql::{self, format_value, write_value, ErrorKind, Labels, Millis, Selection, SeriesSource, Value};
use crate::query::prometheus::StoredMetrics;

/// Most points per series a range query may return, as in Prometheus.
const MAX_POINTS_PER_SERIES: i128 = 11_000;

/// The earliest and latest times a request may name (Prometheus's `minTime`/`maxTime`,
/// which clients send for "no bound"), in milliseconds.
const MIN_TIME: Millis = -9_223_309_901_257_974;
const MAX_TIME: Millis = 9_223_309_901_257_974;

/// The routes, mounted at `/api/v1` and at `/prometheus/api/v1`.
pub(super) fn routes() -> Vec<(&'static str, MethodRouter<Arc<ApiState>>)> {
    vec![
        ("/query", get(query).post(query)),
        ("/query_range", get(query_range).post(query_range)),
        ("/series", get(series).post(series)),
        ("/labels", get(labels).post(labels)),
        ("/label/{name}/values", get(label_values)),
        ("/metadata", get(metadata)),
        ("/query_exemplars", get(query_exemplars).post(query_exemplars)),
        ("/status/buildinfo", get(buildinfo)),
    ]
}

/// Request parameters from the query string and a form body; names may repeat (`match[]`).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad_data(format!("missing parameter {name:?}")))
    }

    fn time(&self, name: &str, default: Millis) -> Result<Millis, ApiError> {
        self.get(name).map_or(Ok(default), |text| parse_time(text).map_err(|e| ApiError::bad_data(format!("invalid parameter {name:?}: {e}"))))
    }
}

/// An error in Prometheus's envelope: `{"status": "error", "errorType", "error"}`.
struct ApiError(promql::QueryError);

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self(promql::QueryError::bad_data(message))
    }
}

impl From<promql::QueryError> for ApiError {
    fn from(error: promql::QueryError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.kind {
            ErrorKind::BadData => StatusCode::BAD_REQUEST,
            ErrorKind::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "status": "error", "errorType": self.0.kind.as_str(), "error": self.0.message });
        (status, Json(body)).into_response()
    }
}

fn success(data: impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Success<T> {
        status: &'static str,
        data: T,
    }
    Json(Success { status: "success", data }).into_response()
}

fn now() -> Millis {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// The engine for one request: the configured limits, the timeout shortened by `timeout=`.
fn engine(state: &ApiState, params: &Params) -> Result<promql::Engine, ApiError> {
    let mut engine = state.promql.clone();
    if let Some(timeout) = params.get("timeout") {
        let timeout = parse_duration(timeout).map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        engine.timeout = engine.timeout.min(timeout);
    }
    Ok(engine)
}

fn source(state: &ApiState) -> StoredMetrics<'_> {
    StoredMetrics::new(&state.metric_rows, &state.series_labels, state.promql.max_samples)
}

async fn query(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &body);
    let query = params.required("query")?;
    let at = params.time("time", now())?;
    let value = engine(&state, &params)?.instant(&source(&state), query, at).await?;
    let (result_type, result) = match value {
        Value::Scalar(v) => ("scalar", json!([seconds(at), format_value(v)])),
        Value::String(s) => ("string", json!([seconds(at), s])),
        Value::Vector(samples) => (
            "vector",
            samples.iter().map(|s| json!({ "metric": labels_json(&s.labels), "value": [seconds(at), format_value(s.value)] })).collect(),
        ),
        Value::Matrix(series) => ("matrix", json!(Matrix(&series))),
    };
    Ok(success(json!({ "resultType": result_type, "result": result })))
}

async fn query_range(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &body);
    let query = params.required("query")?;
    let start = parse_time(params.required("start")?).map_err(|e| ApiError::bad_data(format!("invalid parameter \"start\": {e}")))?;
    let end = parse_time(params.required("end")?).map_err(|e| ApiError::bad_data(format!("invalid parameter \"end\": {e}")))?;
    let step = parse_duration(params.required("step")?).map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    let step = Millis::try_from(step.as_millis()).unwrap_or(Millis::MAX);
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    if step <= 0 {
        return Err(ApiError::bad_data("zero or negative query resolution step widths are not accepted. Try a positive integer"));
    }
    if (i128::from(end) - i128::from(start)) / i128::from(step) > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"));
    }
    let series = engine(&state, &params)?.range(&source(&state), query, start, end, step).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RangeResult<'a> {
        result_type: &'static str,
        result: Matrix<'a>,
    }
    Ok(success(RangeResult { result_type: "matrix", result: Matrix(&series) }))
}

/// The label sets of the series that any `match[]` selector selects in `[start, end]`.
async fn matching_series(state: &ApiState, params: &Params, matches: &[&str]) -> Result<BTreeSet<Labels>, ApiError> {
    let (start, end) = (params.time("start", MIN_TIME)?, params.time("end", now())?);
    let source = source(state);
    let mut found = BTreeSet::new();
    for text in matches {
        let Ok(Expr::VectorSelector(selector)) = parser::parse(text) else {
            return Err(ApiError::bad_data(format!("invalid parameter \"match[]\": {text:?} is not a series selector")));
        };
        let matchers = promql::selector_matchers(&selector);
        let selection = Selection { matchers: &matchers, or_matchers: &selector.matchers.or_matchers, start, end };
        found.extend(source.select(selection).await?.into_iter().map(|series| series.labels));
    }
    Ok(found)
}

async fn series(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &body);
    let matches = params.all("match[]");
    if matches.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let found = matching_series(&state, &params, &matches).await?;
    Ok(success(found.iter().map(labels_json).collect::<Vec<_>>()))
}

async fn labels(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &body);
    let matches = params.all("match[]");
    let matches = if matches.is_empty() { vec!["{__name__=~\".+\"}"] } else { matches };
    let found = matching_series(&state, &params, &matches).await?;
    let names: BTreeSet<&str> = found.iter().flat_map(|labels| labels.iter().map(|(name, _)| name)).collect();
    Ok(success(json!(names)))
}

async fn label_values(State(state): State<Arc<ApiState>>, Path(name): Path<String>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &Bytes::new());
    let matches = params.all("match[]");
    if name == promql::METRIC_NAME && matches.is_empty() {
        let (start, end) = (params.time("start", MIN_TIME)?, params.time("end", now())?);
        let names: BTreeSet<String> = source(&state).catalog(start, end).await?.iter().flat_map(|entry| entry.series_names()).collect();
        return Ok(success(json!(names)));
    }
    let matches = if matches.is_empty() { vec!["{__name__=~\".+\"}"] } else { matches };
    let found = matching_series(&state, &params, &matches).await?;
    let values: BTreeSet<&str> = found.iter().map(|labels| labels.get(&name)).filter(|v| !v.is_empty()).collect();
    Ok(success(json!(values)))
}

async fn metadata(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &Bytes::new());
    let limit = match params.get("limit") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(limit) => usize::try_from(limit).ok(),
            Err(_) => return Err(ApiError::bad_data(format!("invalid parameter \"limit\": {text:?} is not a number"))),
        },
    };
    let mut out: BTreeMap<String, Vec<JsonValue>> = BTreeMap::new();
    for entry in source(&state).catalog(MIN_TIME, now()).await? {
        if params.get("metric").is_some_and(|metric| metric != entry.name) {
            continue;
        }
        out.entry(entry.name.clone())
            .or_default()
            .push(json!({ "type": entry.kind.as_str(), "help": entry.description, "unit": entry.unit }));
    }
    let out: BTreeMap<String, Vec<JsonValue>> = out.into_iter().take(limit.unwrap_or(usize::MAX)).collect();
    Ok(success(json!(out)))
}

/// The exemplars of every series the query's selectors select, in `[start, end]`.
async fn query_exemplars(State(state): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let params = Params::new(&uri, &headers, &body);
    let query = params.required("query")?;
    let (start, end) = (params.time("start", MIN_TIME)?, params.time("end", now())?);
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start timestamp"));
    }
    let found = source(&state).query_exemplars(query, start, end).await?;
    let data: Vec<JsonValue> = found
        .iter()
        .map(|(series, exemplars)| {
            let exemplars: Vec<JsonValue> = exemplars
                .iter()
                .map(|e| json!({ "labels": labels_json(&e.labels), "value": format_value(e.value), "timestamp": seconds(e.at) }))
                .collect();
            json!({ "seriesLabels": labels_json(series), "exemplars": exemplars })
        })
        .collect();
    Ok(success(json!(data)))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "meshlight",
    }))
}

fn seconds(t: Millis) -> f64 {
    t as f64 / 1000.0
}

fn labels_json(labels: &Labels) -> JsonValue {
    json!(labels.iter().collect::<BTreeMap<_, _>>())
}

/// Series as Prometheus renders a matrix, serialized straight into the response: a range
/// query's answer can hold millions of points, too many to build as a JSON tree first.
struct Matrix<'a>(&'a [promql::Series]);

impl Serialize for Matrix<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(MatrixSeries))
    }
}

struct MatrixSeries<'a>(&'a promql::Series);

impl Serialize for MatrixSeries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut series = serializer.serialize_map(Some(2))?;
        series.serialize_entry("metric", &MatrixLabels(&self.0.labels))?;
        series.serialize_entry("values", &MatrixPoints(&self.0.points))?;
        series.end()
    }
}

/// Labels as an object; they are already sorted by name.
struct MatrixLabels<'a>(&'a Labels);

impl Serialize for MatrixLabels<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

/// `[[<seconds>, "<value>"], ...]`.
struct MatrixPoints<'a>(&'a [(Millis, f64)]);

impl Serialize for MatrixPoints<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut points = serializer.serialize_seq(Some(self.0.len()))?;
        let mut text = String::new();
        for (t, v) in self.0 {
            text.clear();
            write_value(&mut text, *v);
            points.serialize_element(&(seconds(*t), text.as_str()))?;
        }
        points.end()
    }
}

/// A Unix time in (fractional) seconds or an RFC 3339 time, in milliseconds, clamped to
/// [`MIN_TIME`, `MAX_TIME`]. Prometheus's own renderings of those bounds are accepted.
pub(super) fn parse_time(text: &str) -> Result<Millis, String> {
    match text {
        "-292273086-05-16T16:47:06Z" => return Ok(MIN_TIME),
        "292277025-08-18T07:12:54.999999999Z" => return Ok(MAX_TIME),
        _ => {}
    }
    let millis = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Some((seconds * 1000.0).round() as Millis),
        Ok(_) => None,
        Err(_) => parse_rfc3339(text),
    };
    millis.map(|m| m.clamp(MIN_TIME, MAX_TIME)).ok_or_else(|| format!("cannot parse {text:?} to a valid timestamp"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<Millis> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let bytes = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, c)| bytes.get(*at) != Some(c)) || !matches!(bytes.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?)
        }
    };
    let in_range = |value: i64, max: i64| (0..=max).contains(&value);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !in_range(hour, 23) || !in_range(minute, 59) || !in_range(second, 60) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60) * 1_000) + millis)
}

/// Howard Hinnant's civil-to-days conversion: days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds as a float, or a Prometheus duration such as `15s` or `1m30s`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| format!("cannot parse {text:?} to a valid duration"));
    }
    promql_parser::util::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-15T00:13:20.25+02:00"), Ok(1_700_000_000_250));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn values_are_written_as_prometheus_writes_them() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
