//! Profile queries on the API port.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/profiles/merge?selector=&from=&to=&type=&format=` | every selected sample merged |
//! | `GET /api/v1/profiles/span/<span_id>?type=&format=` | the samples taken inside one span |
//! | `GET /api/v1/profiles/trace/<trace_id>?type=&format=` | the samples taken inside any span of one trace |
//! | `GET /api/v1/profiles/diff?selector=&base_from=&base_to=&from=&to=&type=` | two ranges as one flamegraph tree with `base`, `target` and `delta` |
//! | `GET /api/v1/profiles/types?selector=&from=&to=` | the sample types stored |
//!
//! `format` is `pprof` (gzipped profile.proto), `folded` (Brendan Gregg's folded stacks),
//! `flamegraph` (a JSON tree, the default) or `top` (functions by self and total value,
//! `limit` rows). Times are Unix seconds, RFC 3339, `now` or `now-<duration>`; the range
//! defaults to the last hour. `type` defaults to `cpu:nanoseconds`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Value as JsonValue, json};
use std::sync::Arc;

use super::ApiState;
use super::prometheus::{parse_duration, parse_time};
use crate::profiles::query::{DEFAULT_SAMPLE_TYPE, MergedResult, ProfileFilter, ProfileQueryError, merge, sample_types};
use crate::profiles::render::{MergedProfile, diff, gzip_pprof};
use crate::profiles::series::Selector;
use crate::query::QueryError;

/// Rows `format=top` returns unless `limit` says otherwise.
const DEFAULT_TOP_ROWS: usize = 20;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
const DEFAULT_RANGE_NANOS: i64 = 3_600 * NANOS_PER_SECOND;

/// The routes, mounted at `/api/v1/profiles`.
pub(super) fn routes() -> Vec<(&'static str, MethodRouter<Arc<ApiState>>)> {
    vec![
        ("/merge", get(merge_route)),
        ("/span/{span_id}", get(span_route)),
        ("/trace/{trace_id}", get(trace_route)),
        ("/diff", get(diff_route)),
        ("/types", get(types_route)),
    ]
}

/// A failed profile request; the one place these become statuses.
#[derive(Debug, thiserror::Error)]
enum ProfileApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Query(#[from] ProfileQueryError),
}

impl IntoResponse for ProfileApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ProfileApiError::BadRequest(_) | ProfileApiError::Query(ProfileQueryError::Query(QueryError::BadQuery(_))) => {
                StatusCode::BAD_REQUEST
            }
            ProfileApiError::Query(ProfileQueryError::TooManyStacks(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ProfileApiError::Query(ProfileQueryError::Query(QueryError::Timeout(_))) => StatusCode::SERVICE_UNAVAILABLE,
            ProfileApiError::Query(
                ProfileQueryError::Query(QueryError::Execution(_) | QueryError::TooManyRows(_)) | ProfileQueryError::Shape(_),
            ) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// How a merged profile is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pprof,
    Folded,
    Flamegraph,
    Top(usize),
}

/// The query-string parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<&str>) -> Self {
        Self(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    fn selector(&self, name: &str) -> Result<Selector, ProfileApiError> {
        Selector::parse(self.get(name).unwrap_or_default()).map_err(ProfileApiError::BadRequest)
    }

    fn sample_type(&self) -> Result<String, ProfileApiError> {
        let sample_type = self.get("type").unwrap_or(DEFAULT_SAMPLE_TYPE);
        match sample_type.split_once(':') {
            Some((kind, unit)) if !kind.is_empty() && !unit.is_empty() => Ok(sample_type.to_owned()),
            _ => Err(ProfileApiError::BadRequest(format!("type {sample_type:?} must be type:unit, e.g. cpu:nanoseconds"))),
        }
    }

    /// `[from, to)` from the two named parameters, defaulting to the hour before now.
    fn range(&self, from: &str, to: &str) -> Result<(i64, i64), ProfileApiError> {
        let now = now_nanos();
        let end = self.get(to).map(|text| parse_instant(text, now)).transpose()?.unwrap_or(now);
        let start = self.get(from).map(|text| parse_instant(text, now)).transpose()?.unwrap_or(end - DEFAULT_RANGE_NANOS);
        if end < start {
            return Err(ProfileApiError::BadRequest(format!("{to} is before {from}")));
        }
        Ok((start, end))
    }

    fn format(&self) -> Result<Format, ProfileApiError> {
        Ok(match self.get("format").unwrap_or("flamegraph") {
            "pprof" => Format::Pprof,
            "folded" => Format::Folded,
            "flamegraph" => Format::Flamegraph,
            "top" => Format::Top(match self.get("limit") {
                None => DEFAULT_TOP_ROWS,
                Some(text) => text
                    .parse()
                    .ok()
                    .filter(|rows| *rows > 0)
                    .ok_or_else(|| ProfileApiError::BadRequest(format!("limit {text:?} must be a positive integer")))?,
            }),
            other => {
                return Err(ProfileApiError::BadRequest(format!("unknown format {other:?}: use pprof, folded, flamegraph or top")));
            }
        })
    }
}

/// Unix seconds, RFC 3339, `now` or `now-<duration>`, in nanoseconds.
fn parse_instant(text: &str, now: i64) -> Result<i64, ProfileApiError> {
    if let Some(rest) = text.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest.strip_prefix('-').map(parse_duration).transpose().map_err(ProfileApiError::BadRequest)?;
        let ago = ago.ok_or_else(|| ProfileApiError::BadRequest(format!("cannot parse time {text:?}: expected now-<duration>")))?;
        return Ok(now - i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX));
    }
    let millis = parse_time(text).map_err(ProfileApiError::BadRequest)?;
    Ok(millis.saturating_mul(1_000_000))
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn merge_route(State(state): State<Arc<ApiState>>, RawQuery(query): RawQuery) -> Result<Response, ProfileApiError> {
    let params = Params::new(query.as_deref());
    let filter = ProfileFilter {
        selector: params.selector("selector")?,
        time_range: Some(params.range("from", "to")?),
        sample_type: params.sample_type()?,
        span_id: None,
        trace_id: None,
    };
    respond(&state, &filter, params.format()?).await
}

async fn span_route(
    State(state): State<Arc<ApiState>>,
    Path(span_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ProfileApiError> {
    let span_id = hex_id(&span_id, 8, "span id")?;
    inside(&state, query.as_deref(), Some(span_id), None).await
}

async fn trace_route(
    State(state): State<Arc<ApiState>>,
    Path(trace_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ProfileApiError> {
    let trace_id = hex_id(&trace_id, 16, "trace id")?;
    inside(&state, query.as_deref(), None, Some(trace_id)).await
}

/// The samples taken inside one span or the spans of one trace, over all time.
async fn inside(
    state: &ApiState,
    query: Option<&str>,
    span_id: Option<String>,
    trace_id: Option<String>,
) -> Result<Response, ProfileApiError> {
    let params = Params::new(query);
    let filter = ProfileFilter {
        selector: params.selector("selector")?,
        time_range: None,
        sample_type: params.sample_type()?,
        span_id,
        trace_id,
    };
    respond(state, &filter, params.format()?).await
}

/// A span or trace id as stored: lowercase hex of `bytes` bytes.
fn hex_id(text: &str, bytes: usize, what: &str) -> Result<String, ProfileApiError> {
    let id = text.to_ascii_lowercase();
    if id.len() != bytes * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ProfileApiError::BadRequest(format!("{what} {text:?} must be {} hex digits", bytes * 2)));
    }
    Ok(id)
}

async fn diff_route(State(state): State<Arc<ApiState>>, RawQuery(query): RawQuery) -> Result<Response, ProfileApiError> {
    let params = Params::new(query.as_deref());
    let sample_type = params.sample_type()?;
    let selector = params.selector("selector")?;
    let base_selector = match params.get("base_selector") {
        Some(_) => params.selector("base_selector")?,
        None => selector.clone(),
    };
    let base = ProfileFilter {
        selector: base_selector,
        time_range: Some(params.range("base_from", "base_to")?),
        sample_type: sample_type.clone(),
        span_id: None,
        trace_id: None,
    };
    let target = ProfileFilter { selector, time_range: Some(params.range("from", "to")?), ..base.clone() };
    let max_stacks = state.profiles.max_query_stacks;
    let base = merge(&state.engine, &base, max_stacks).await?;
    let target = merge(&state.engine, &target, max_stacks).await?;
    Ok(Json(json!({ "sampleType": sample_type, "flamegraph": diff(&base.profile, &target.profile) })).into_response())
}

async fn types_route(State(state): State<Arc<ApiState>>, RawQuery(query): RawQuery) -> Result<Response, ProfileApiError> {
    let params = Params::new(query.as_deref());
    let types = sample_types(&state.engine, &params.selector("selector")?, Some(params.range("from", "to")?)).await?;
    Ok(Json(json!({ "sampleTypes": types })).into_response())
}

async fn respond(state: &ApiState, filter: &ProfileFilter, format: Format) -> Result<Response, ProfileApiError> {
    let merged = merge(&state.engine, filter, state.profiles.max_query_stacks).await?;
    Ok(render(&merged, &filter.sample_type, format))
}

fn render(merged: &MergedResult, sample_type: &str, format: Format) -> Response {
    let profile: &MergedProfile = &merged.profile;
    match format {
        Format::Pprof => {
            let period = merged.period.as_ref().map(|(kind, period)| (split_type(kind), *period));
            let (start, end) = merged.time_span.unwrap_or((0, 0));
            let pprof = profile.to_pprof(split_type(sample_type), period, start, end - start);
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"profile.pb.gz\""),
            ];
            (headers, gzip_pprof(&pprof)).into_response()
        }
        Format::Folded => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], profile.to_folded()).into_response(),
        Format::Flamegraph => Json(json!({ "sampleType": sample_type, "flamegraph": profile.to_flamegraph() })).into_response(),
        Format::Top(limit) => {
            let rows: Vec<JsonValue> = profile
                .top(limit)
                .into_iter()
                .map(|entry| {
                    json!({
                        "function": entry.function,
                        "self": entry.self_value,
                        "total": entry.total_value,
                        "selfShare": entry.self_share,
                        "totalShare": entry.total_share,
                    })
                })
                .collect();
            Json(json!({ "sampleType": sample_type, "functions": rows })).into_response()
        }
    }
}

/// `type:unit` as its two parts.
fn split_type(text: &str) -> (&str, &str) {
    text.split_once(':').unwrap_or((text, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_accept_now_relative_unix_and_rfc3339() {
        let now = 1_700_000_000 * NANOS_PER_SECOND;
        assert_eq!(parse_instant("now", now).ok(), Some(now));
        assert_eq!(parse_instant("now-15m", now).ok(), Some(now - 900 * NANOS_PER_SECOND));
        assert_eq!(parse_instant("1700000000", now).ok(), Some(now));
        assert_eq!(parse_instant("2023-11-14T22:13:20Z", now).ok(), Some(now));
        assert!(parse_instant("now+5m", now).is_err());
        assert!(parse_instant("tomorrow", now).is_err());
    }

    #[test]
    fn ids_must_be_hex_of_the_right_length() {
        assert_eq!(hex_id("00F067AA0BA902B7", 8, "span id").ok().as_deref(), Some("00f067aa0ba902b7"));
        assert!(hex_id("00f067aa0ba902", 8, "span id").is_err());
        assert!(hex_id("zzf067aa0ba902b7", 8, "span id").is_err());
    }
}
