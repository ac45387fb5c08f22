//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON,
//! optionally gzip or zstd compressed.
//!
//! Status codes follow the OTLP specification: 200 with a partial-success body when some
//! items were invalid; 400 for an undecodable request; 413 over the size cap; 415 for an
//! unknown content type or encoding; 503 with `Retry-After` when the collector is out of
//! memory budget, shutting down or cannot write (the client retries, nothing is lost).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
use prost::Message as _;

use super::body_limit::with_body_limit;
use super::decompress::{Encoding, decompress};
use super::{Export, IngestError, Ingestor};
use crate::schema::{Rejections, Signal};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The body format of a request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the error body OTLP/HTTP specifies.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The OTLP/HTTP routes.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    // The cap applies again after decompression; this one bounds what is read at all.
    let body_limit = ingestor.limits().max_request_bytes;
    let routes = Router::new()
        .route("/v1/traces", post(|s, h, b| export(s, h, b, Signal::Traces)))
        .route("/v1/metrics", post(|s, h, b| export(s, h, b, Signal::Metrics)))
        .route("/v1/logs", post(|s, h, b| export(s, h, b, Signal::Logs)));
    with_body_limit(routes, body_limit, refuse).with_state(ingestor)
}

/// The body cap's refusals, as OTLP/HTTP error bodies in the request's format.
fn refuse(headers: &HeaderMap, status: StatusCode, message: String) -> Response {
    error_response(request_format(headers).unwrap_or(Format::Json), status, message, None)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The format a request's Content-Type names, if OTLP/HTTP has it.
fn request_format(headers: &HeaderMap) -> Option<Format> {
    // Media types are case-insensitive (RFC 9110, section 8.3.1).
    match content_type(headers).split(';').next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        PROTOBUF | "application/protobuf" => Some(Format::Protobuf),
        JSON => Some(Format::Json),
        _ => None,
    }
}

async fn export(State(ingestor): State<Arc<Ingestor>>, headers: HeaderMap, body: Bytes, signal: Signal) -> Response {
    let Some(format) = request_format(&headers) else {
        ingestor.count_failed_request(signal, "unsupported_media_type");
        let message = format!("unsupported content type {:?}; use {PROTOBUF} or {JSON}", content_type(&headers));
        return error_response(Format::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, message, None);
    };
    let encoding_header = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::parse(encoding_header) else {
        ingestor.count_failed_request(signal, "unsupported_encoding");
        let message = format!("unsupported content encoding {encoding_header:?}; use gzip or zstd");
        return error_response(format, StatusCode::UNSUPPORTED_MEDIA_TYPE, message, None);
    };

    let result = async {
        let body = decompress(encoding, body, ingestor.limits().max_request_bytes)?;
        let export = match format {
            Format::Protobuf => Export::decode_protobuf(signal, body)?,
            Format::Json => ingestor.decode_json(signal, &body)?,
        };
        ingestor.export(export).await
    }
    .await;

    match result {
        Ok(rejections) => success_response(format, signal, &rejections),
        Err(error) => {
            match error {
                IngestError::Invalid(_) => ingestor.count_failed_request(signal, "invalid"),
                IngestError::TooLarge { .. } | IngestError::OverMemoryLimit { .. } => {
                    ingestor.count_failed_request(signal, "too_large");
                }
                // Refusals are counted per item by the ingestor.
                IngestError::Refused(_) | IngestError::Store(_) => {}
            }
            let status = http_status(&error);
            let retry_after = error.is_retryable().then_some(ingestor.limits().retry_after_secs);
            error_response(format, status, error.to_string(), retry_after)
        }
    }
}

/// The one place ingest errors become HTTP statuses.
fn http_status(error: &IngestError) -> StatusCode {
    match error {
        IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
        IngestError::TooLarge { .. } | IngestError::OverMemoryLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::Refused(_) | IngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn success_response(format: Format, signal: Signal, rejections: &Rejections) -> Response {
    let rejected = i64::try_from(rejections.total()).unwrap_or(i64::MAX);
    let message = if rejected > 0 { rejections.message() } else { String::new() };
    let partial = rejected > 0;
    macro_rules! respond {
        ($response:expr) => {{
            let response = $response;
            match format {
                Format::Protobuf => body_response(StatusCode::OK, PROTOBUF, response.encode_to_vec()),
                Format::Json => body_response(StatusCode::OK, JSON, serde_json::to_vec(&response).unwrap_or_default()),
            }
        }};
    }
    match signal {
        Signal::Traces => respond!(trace::v1::ExportTraceServiceResponse {
            partial_success: partial.then_some(trace::v1::ExportTracePartialSuccess { rejected_spans: rejected, error_message: message }),
        }),
        Signal::Metrics => respond!(metrics::v1::ExportMetricsServiceResponse {
            partial_success: partial.then_some(metrics::v1::ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message: message }),
        }),
        Signal::Logs => respond!(logs::v1::ExportLogsServiceResponse {
            partial_success: partial.then_some(logs::v1::ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: message }),
        }),
    }
}

fn error_response(format: Format, status: StatusCode, message: String, retry_after_secs: Option<u64>) -> Response {
    let rpc_status = RpcStatus { code: grpc_code_for(status), message };
    let mut response = match format {
        Format::Protobuf => body_response(status, PROTOBUF, rpc_status.encode_to_vec()),
        Format::Json => body_response(status, JSON, serde_json::to_vec(&rpc_status).unwrap_or_default()),
    };
    if let Some(seconds) = retry_after_secs {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The `google.rpc.Code` that goes with an HTTP status in an error body.
fn grpc_code_for(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        _ => 2,                                                            // UNKNOWN
    }
}

fn body_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
