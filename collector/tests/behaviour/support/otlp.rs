//! OTLP clients for the behaviour tests: requests built from `opentelemetry-proto` types,
//! sent over gRPC (tonic) or HTTP (raw bodies, so tests control every header and byte).

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

/// A string attribute.
pub(crate) fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_nanos() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_nanos() as u64)
}

/// `count` spans of `service` tagged `batch=<batch>`, with ids unique per (batch, index),
/// starting at `start_nanos`.
pub(crate) fn spans(service: &str, batch: u64, count: u64, start_nanos: u64) -> ExportTraceServiceRequest {
    let spans = (0..count)
        .map(|index| {
            let unique = (batch << 32) | index;
            let mut trace_id = vec![0xab; 8];
            trace_id.extend_from_slice(&(unique + 1).to_be_bytes());
            Span {
                trace_id,
                span_id: (unique + 1).to_be_bytes().to_vec(),
                name: format!("op-{}", index % 7),
                kind: 2,
                start_time_unix_nano: start_nanos + index,
                end_time_unix_nano: start_nanos + index + 1_000_000,
                attributes: vec![attribute("batch", &batch.to_string())],
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            schema_url: String::new(),
        }],
    }
}

/// A blocking OTLP/gRPC trace client.
pub(crate) struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    endpoint: String,
    channel: tonic::transport::Channel,
    client: TraceServiceClient<tonic::transport::Channel>,
}

impl GrpcClient {
    pub(crate) fn connect(endpoint: &str) -> GrpcClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        // The lazy channel spawns its connection task on the current runtime.
        let _context = runtime.enter();
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .expect("valid endpoint")
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let client = TraceServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
        GrpcClient { runtime, endpoint: endpoint.to_owned(), channel, client }
    }

    /// Compresses every request from now on.
    pub(crate) fn compress_with(&mut self, encoding: tonic::codec::CompressionEncoding) {
        self.client = self.client.clone().send_compressed(encoding);
    }

    pub(crate) fn export(&mut self, request: ExportTraceServiceRequest) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let client = &mut self.client;
        self.runtime.block_on(async { client.export(request).await.map(tonic::Response::into_inner) })
    }

    /// Sends `message` as one gRPC frame flagged compressed with `encoding`, whatever its
    /// bytes, and returns the reply's `grpc-status`.
    pub(crate) fn export_compressed_frame(&mut self, encoding: &str, message: &[u8]) -> Option<tonic::Code> {
        let frame = [&[1u8][..], &(message.len() as u32).to_be_bytes(), message].concat();
        let request = http::Request::post(format!("{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", self.endpoint))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-encoding", encoding)
            .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(frame))))
            .expect("a valid request");
        let channel = self.channel.clone();
        let reply = self.runtime.block_on(tower::ServiceExt::oneshot(channel, request)).expect("a reply");
        let status = reply.headers().get("grpc-status")?.to_str().ok()?.parse().ok()?;
        Some(tonic::Code::from_i32(status))
    }
}

/// A raw OTLP/HTTP response.
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// POSTs `body` to `<http_endpoint><path>` with the given headers (`None` leaves one out).
pub(crate) fn post(
    http_endpoint: &str,
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> HttpReply {
    try_post(http_endpoint, path, content_type, content_encoding, body).expect("the OTLP/HTTP request and its reply")
}

/// [`post`], with an error when the request cannot be sent or its reply read.
pub(crate) fn try_post(
    http_endpoint: &str,
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<HttpReply, ureq::Error> {
    send(post_request(http_endpoint, path, content_type, content_encoding), body)
}

/// POSTs `body` without declaring its length: chunked transfer encoding.
pub(crate) fn post_chunked(http_endpoint: &str, path: &str, content_type: Option<&str>, mut body: &[u8]) -> HttpReply {
    let request = post_request(http_endpoint, path, content_type, None);
    send(request, ureq::SendBody::from_reader(&mut body)).expect("the OTLP/HTTP request and its reply")
}

fn post_request(
    http_endpoint: &str,
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.post(format!("{http_endpoint}{path}"));
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    if let Some(encoding) = content_encoding {
        request = request.header("Content-Encoding", encoding);
    }
    request
}

fn send(request: ureq::RequestBuilder<ureq::typestate::WithBody>, body: impl ureq::AsSendBody) -> Result<HttpReply, ureq::Error> {
    let mut response = request.send(body)?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?;
    Ok(HttpReply { status: response.status().as_u16(), retry_after, body })
}

/// POSTs a protobuf trace export.
pub(crate) fn post_traces(http_endpoint: &str, request: &ExportTraceServiceRequest) -> HttpReply {
    post(http_endpoint, "/v1/traces", Some("application/x-protobuf"), None, &request.encode_to_vec())
}

/// gzip of `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("in-memory write");
    encoder.finish().expect("in-memory write")
}
