//! OTLP/gRPC receiver: the `Export` method of TraceService, MetricsService and LogsService.
//!
//! The services are written against tonic's server building blocks rather than
//! `opentelemetry-proto`'s generated servers because requests decode as OTLP/HTTP bodies
//! do, with [`Export::decode_protobuf`] (zero-copy, UTF-8 checked per item). Status codes
//! follow the OTLP specification: INVALID_ARGUMENT for undecodable requests,
//! RESOURCE_EXHAUSTED over the size cap, UNAVAILABLE with `RetryInfo` when the collector
//! refuses retryably.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf as _;
use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::{Export, IngestError, Ingestor};
use crate::schema::{Rejections, Signal};

/// One OTLP export service: its name, signal and response type.
pub trait ExportKind: Send + Sync + 'static {
    const SERVICE: &'static str;
    const SIGNAL: Signal;
    type Response: Message + Send + 'static;
    fn response(rejections: &Rejections) -> Self::Response;
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`.
pub struct Traces;
/// `opentelemetry.proto.collector.metrics.v1.MetricsService`.
pub struct Metrics;
/// `opentelemetry.proto.collector.logs.v1.LogsService`.
pub struct Logs;

fn partial(rejections: &Rejections) -> Option<(i64, String)> {
    let rejected = rejections.total();
    (rejected > 0).then(|| (i64::try_from(rejected).unwrap_or(i64::MAX), rejections.message()))
}

impl ExportKind for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
    type Response = trace::v1::ExportTraceServiceResponse;
    fn response(rejections: &Rejections) -> Self::Response {
        trace::v1::ExportTraceServiceResponse {
            partial_success: partial(rejections).map(|(rejected_spans, error_message)| {
                trace::v1::ExportTracePartialSuccess { rejected_spans, error_message }
            }),
        }
    }
}

impl ExportKind for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
    type Response = metrics::v1::ExportMetricsServiceResponse;
    fn response(rejections: &Rejections) -> Self::Response {
        metrics::v1::ExportMetricsServiceResponse {
            partial_success: partial(rejections).map(|(rejected_data_points, error_message)| {
                metrics::v1::ExportMetricsPartialSuccess { rejected_data_points, error_message }
            }),
        }
    }
}

impl ExportKind for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
    type Response = logs::v1::ExportLogsServiceResponse;
    fn response(rejections: &Rejections) -> Self::Response {
        logs::v1::ExportLogsServiceResponse {
            partial_success: partial(rejections).map(|(rejected_log_records, error_message)| {
                logs::v1::ExportLogsPartialSuccess { rejected_log_records, error_message }
            }),
        }
    }
}

/// The tower service tonic routes `/<SERVICE>/Export` to.
pub struct ExportService<K> {
    ingestor: Arc<Ingestor>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ExportService<K> {
    fn clone(&self) -> Self {
        Self { ingestor: self.ingestor.clone(), kind: PhantomData }
    }
}

impl<K: ExportKind> ExportService<K> {
    pub fn new(ingestor: Arc<Ingestor>) -> Self {
        Self { ingestor, kind: PhantomData }
    }
}

impl<K: ExportKind> NamedService for ExportService<K> {
    const NAME: &'static str = K::SERVICE;
}

impl<K: ExportKind> Service<http::Request<Body>> for ExportService<K> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !request.uri().path().ends_with("/Export") {
            return Box::pin(async { Ok(Status::unimplemented("only Export is served").into_http()) });
        }
        let limit = self.ingestor.limits().max_request_bytes;
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Gzip);
        let mut grpc = Grpc::new(WireCodec::<K>(PhantomData))
            .apply_compression_config(accept, EnabledCompressionEncodings::default())
            .apply_max_message_size_config(Some(limit), None);
        let ingestor = self.ingestor.clone();
        let unary = ExportUnary::<K> { ingestor: ingestor.clone(), kind: PhantomData };
        Box::pin(async move {
            let mut response = grpc.unary(unary, request).await;
            report_oversize_as_resource_exhausted(&mut response);
            if let Some(reason) = failure_reason(&response) {
                ingestor.count_failed_request(K::SIGNAL, reason);
            }
            Ok(response)
        })
    }
}

/// tonic answers a frame longer than the cap with OUT_OF_RANGE (and a decompressed message
/// over it with RESOURCE_EXHAUSTED); OTLP and gRPC clients expect RESOURCE_EXHAUSTED for
/// both. OUT_OF_RANGE has no other source in these services.
fn report_oversize_as_resource_exhausted(response: &mut http::Response<Body>) {
    let headers = response.headers_mut();
    let out_of_range = (Code::OutOfRange as i32).to_string();
    if headers.get("grpc-status").is_some_and(|status| status.as_bytes() == out_of_range.as_bytes()) {
        let exhausted = (Code::ResourceExhausted as i32).to_string();
        if let Ok(value) = http::HeaderValue::from_str(&exhausted) {
            headers.insert("grpc-status", value);
        }
    }
}

/// The `requests_failed` reason of a response that refused the whole request as OTLP/HTTP
/// counts it: undecodable or too large. Retryable refusals are counted per item by the
/// ingestor. A message that does not decode gets INVALID_ARGUMENT (from our decoder and
/// conversion); one that does not decompress, or is framed wrongly, gets INTERNAL from
/// tonic, as gRPC's compression spec prescribes. These services give INTERNAL for nothing
/// else.
fn failure_reason(response: &http::Response<Body>) -> Option<&'static str> {
    let status = response.headers().get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    match Code::from_i32(status) {
        Code::InvalidArgument | Code::Internal => Some("invalid"),
        Code::ResourceExhausted => Some("too_large"),
        _ => None,
    }
}

/// tonic's prost codec decodes straight from its `BytesMut` receive buffer, where every
/// zero-copy string field costs a `split_to` + `freeze`. Taking the message as one frozen
/// `Bytes` first makes each field a plain slice: the same zero-copy result, cheaper.
struct WireCodec<K>(PhantomData<fn() -> K>);

impl<K: ExportKind> Codec for WireCodec<K> {
    type Encode = K::Response;
    type Decode = Export;
    type Encoder = tonic_prost::ProstEncoder<K::Response>;
    type Decoder = WireDecoder<K>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

struct WireDecoder<K>(PhantomData<fn() -> K>);

impl<K: ExportKind> Decoder for WireDecoder<K> {
    type Item = Export;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Export::decode_protobuf(K::SIGNAL, bytes)
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }
}

struct ExportUnary<K> {
    ingestor: Arc<Ingestor>,
    kind: PhantomData<fn() -> K>,
}

impl<K: ExportKind> UnaryService<Export> for ExportUnary<K> {
    type Response = K::Response;
    type Future = BoxFuture<tonic::Response<K::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Export>) -> Self::Future {
        let ingestor = self.ingestor.clone();
        Box::pin(async move {
            match ingestor.export(request.into_inner()).await {
                Ok(rejections) => Ok(tonic::Response::new(K::response(&rejections))),
                Err(error) => Err(grpc_status(&error, ingestor.limits().retry_after_secs)),
            }
        })
    }
}

/// The one place ingest errors become gRPC statuses.
fn grpc_status(error: &IngestError, retry_after_secs: u64) -> Status {
    match error {
        IngestError::Invalid(_) => Status::invalid_argument(error.to_string()),
        IngestError::TooLarge { .. } | IngestError::OverMemoryLimit { .. } => {
            Status::resource_exhausted(error.to_string())
        }
        IngestError::Refused(_) | IngestError::Store(_) => Status::with_error_details(
            Code::Unavailable,
            error.to_string(),
            ErrorDetails::with_retry_info(Some(Duration::from_secs(retry_after_secs))),
        ),
    }
}

/// The gRPC routes of all three services.
pub fn routes(ingestor: &Arc<Ingestor>) -> tonic::service::Routes {
    tonic::service::Routes::new(ExportService::<Traces>::new(ingestor.clone()))
        .add_service(ExportService::<Metrics>::new(ingestor.clone()))
        .add_service(ExportService::<Logs>::new(ingestor.clone()))
}
