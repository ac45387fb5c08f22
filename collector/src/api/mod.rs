//! The API port: SQL queries, self-metrics, readiness and health.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/sql` `{"query": "..."}` | JSON `{"columns", "rows"}`, or Arrow IPC with `Accept: application/vnd.apache.arrow.stream` |
//! | `POST /api/v1/admin/flush` | flush the memtable to Parquet and wait |
//! | `POST /api/v1/admin/compact` | merge every partition's files now and wait |
//! | `GET /metrics` | self-metrics, Prometheus text format |
//! | `GET /ready` | 200 once serving, 503 while shutting down |
//! | `GET /health` | 200 while the process runs |
//! | `/api/v1/profiles/merge`, `span/<id>`, `trace/<id>`, `diff`, `types` | profiles as pprof, folded stacks, flamegraph JSON or top functions ([`profiles`]) |
//! | `/api/v1/query`, `query_range`, `series`, `labels`, `label/<name>/values`, `metadata`, `status/buildinfo` | the Prometheus HTTP API over the stored metrics, also under `/prometheus/api/v1/` ([`prometheus`]) |

mod profiles;
mod prometheus;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::query::prometheus::SeriesLabels;
use crate::query::{MetricRows, QueryError, SqlEngine};
use crate::store::Store;
use crate::telemetry::SelfMetrics;

/// Content type of Arrow IPC stream responses.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What the API handlers share.
pub struct ApiState {
    pub engine: SqlEngine,
    /// PromQL's reads of the metric tables, which keep the Parquet footers they opened.
    pub metric_rows: MetricRows,
    /// Stored series' labels, kept between PromQL queries.
    pub series_labels: SeriesLabels,
    /// PromQL limits; queries read the metrics through `metric_rows`.
    pub promql: crate::promql::Engine,
    pub store: Arc<Store>,
    pub metrics: Arc<SelfMetrics>,
    /// Profile query limits.
    pub profiles: crate::config::ProfilesConfig,
    /// False from the moment shutdown begins, so load balancers stop sending.
    pub ready: AtomicBool,
}

/// The API routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut router = Router::new();
    for (path, route) in prometheus::routes() {
        router = router.route(&format!("/api/v1{path}"), route.clone()).route(&format!("/prometheus/api/v1{path}"), route);
    }
    for (path, route) in profiles::routes() {
        router = router.route(&format!("/api/v1/profiles{path}"), route);
    }
    router
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/admin/flush", post(flush))
        .route("/api/v1/admin/compact", post(compact))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    query: String,
}

/// An API failure; the one place API errors become statuses.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Query(QueryError::BadQuery(_)) => StatusCode::BAD_REQUEST,
            ApiError::Query(QueryError::Execution(_) | QueryError::TooManyRows(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Query(QueryError::Timeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

async fn sql(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    request: Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request.map_err(|rejection| QueryError::BadQuery(rejection.body_text()))?;
    let result = state.engine.query(&request.query).await?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = result.to_arrow_ipc().map_err(|error| ApiError::Internal(error.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response());
    }
    Ok(Json(result.to_json()).into_response())
}

async fn flush(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    state.store.flush().await.map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok("flushed")
}

async fn compact(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    state.store.compact_all().await.map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok("compacted")
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode())
}

async fn ready(State(state): State<Arc<ApiState>>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
