//! OTLP ingest: decode, validate, convert to Arrow, admit against the memory limit, and
//! hand to the store; answered only once the store has made the data durable.
//!
//! Both transports ([`otlp_grpc`], [`otlp_http`]) end in [`Ingestor::export`], so limits,
//! validation, partial success and self-metrics behave the same on either.

pub(crate) mod body_limit;
mod decompress;
pub mod envelope;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod protobuf;
pub mod span;
pub mod wire;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use prost::Message as _;

use crate::config::Limits;
use crate::schema::{
    Rejections, Signal, Table, logs_to_batch, metric_data_points, metrics_to_batches,
    traces_to_batch,
};
use crate::spanmetrics::SpanMetrics;
use crate::store::{Admission, PreparedWrite, Refusal, Store, StoreError};
use crate::telemetry::{SelfMetrics, SignalLabels, SignalReasonLabels};

/// Requests larger than this are converted on the blocking pool rather than on an async
/// worker, so that a 64 MiB request cannot stall other connections.
const INLINE_CONVERSION_MAX_BYTES: usize = 1 << 20;

/// A decoded OTLP export request, and the protobuf it was decoded from (which the WAL
/// logs).
#[derive(Debug)]
pub struct Export {
    request: Request,
    protobuf: Bytes,
}

#[derive(Debug)]
enum Request {
    Traces(envelope::TraceExport),
    Metrics(wire::ExportMetricsServiceRequest),
    Logs(wire::ExportLogsServiceRequest),
}

/// Why a request was not (entirely) accepted. Each maps to one HTTP and one gRPC status
/// (see [`otlp_http`] and [`otlp_grpc`]).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request is malformed; retrying it cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The decompressed request is larger than `limits.max_request_bytes`.
    #[error("request exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// Decoding the request, or its rows, would take more than `limits.memory_limit_bytes`
    /// even with nothing else buffered: no retry can succeed.
    #[error("the request would take about {estimate} bytes of memory, over the {limit}-byte memory limit")]
    OverMemoryLimit { estimate: usize, limit: usize },
    /// Refused before writing (memory limit, shutdown): retry later.
    #[error("{0}")]
    Refused(Refusal),
    /// The store could not make the data durable: retry later.
    #[error("storage unavailable: {0}")]
    Store(StoreError),
}

impl From<protobuf::WireError> for IngestError {
    fn from(error: protobuf::WireError) -> Self {
        IngestError::Invalid(format!("protobuf: {error}"))
    }
}

impl IngestError {
    /// Whether the client should retry (OTLP: 429/502/503/504, UNAVAILABLE…).
    pub fn is_retryable(&self) -> bool {
        matches!(self, IngestError::Refused(_) | IngestError::Store(_))
    }
}

impl Export {
    /// Decodes an OTLP protobuf body.
    pub fn decode_protobuf(signal: Signal, body: Bytes) -> Result<Export, IngestError> {
        let invalid = |error: prost::DecodeError| IngestError::from(protobuf::WireError::Decode(error));
        let request = match signal {
            Signal::Traces => Request::Traces(envelope::TraceExport::decode(&body)?),
            Signal::Metrics => Request::Metrics(wire::ExportMetricsServiceRequest::decode(body.clone()).map_err(invalid)?),
            Signal::Logs => Request::Logs(wire::ExportLogsServiceRequest::decode(body.clone()).map_err(invalid)?),
        };
        Ok(Export { request, protobuf: body })
    }

    /// A metrics request the collector made itself (span-derived metrics, alert states).
    pub fn metrics(request: wire::ExportMetricsServiceRequest) -> Export {
        let protobuf = Bytes::from(request.encode_to_vec());
        Export { request: Request::Metrics(request), protobuf }
    }

    /// Decodes an OTLP/JSON body (hex ids, lowerCamelCase names, enums as integers), the
    /// way `how` says.
    ///
    /// JSON is parsed with `opentelemetry-proto`'s serde types and re-encoded as protobuf
    /// for the one conversion path: JSON is the slow path and this keeps a single source of
    /// truth for validation and conversion. [`JsonParse::Typed`] answers `Ok(None)` for a
    /// document that omits a list's `values`, which [`JsonParse::FillingOmittedLists`]
    /// parses.
    pub fn decode_json(signal: Signal, body: &[u8], how: JsonParse) -> Result<Option<Export>, IngestError> {
        use opentelemetry_proto::tonic::collector as otlp;
        let protobuf = match signal {
            Signal::Traces => parse_json::<otlp::trace::v1::ExportTraceServiceRequest>(body, how)?.map(|r| r.encode_to_vec()),
            Signal::Metrics => parse_json::<otlp::metrics::v1::ExportMetricsServiceRequest>(body, how)?.map(|r| r.encode_to_vec()),
            Signal::Logs => parse_json::<otlp::logs::v1::ExportLogsServiceRequest>(body, how)?.map(|r| r.encode_to_vec()),
        };
        protobuf.map(|protobuf| Export::decode_protobuf(signal, Bytes::from(protobuf))).transpose()
    }

    pub fn signal(&self) -> Signal {
        match self.request {
            Request::Traces(_) => Signal::Traces,
            Request::Metrics(_) => Signal::Metrics,
            Request::Logs(_) => Signal::Logs,
        }
    }

    /// Memory the request's rows may take in Arrow, which admission reserves: about three
    /// times the protobuf, plus what every item repeats of its scope, and of its resource
    /// where rows repeat it. A small request of many data points under large resource
    /// attributes expands many times over; spans and log records carry their resource's
    /// attributes once (see `store::resources`).
    fn arrow_bytes_estimate(&self) -> usize {
        let repeated = match &self.request {
            Request::Traces(request) => request
                .resource_spans
                .iter()
                .map(|r| {
                    let scopes = r.scope_spans.iter().map(|s| (s.scope.as_ref(), s.spans.len()));
                    repeated_bytes(r.resource.as_ref(), ResourceRows::First, scopes)
                })
                .fold(0, usize::saturating_add),
            Request::Logs(request) => request
                .resource_logs
                .iter()
                .map(|r| {
                    let scopes = r.scope_logs.iter().map(|s| (s.scope.as_ref(), s.log_records.len()));
                    repeated_bytes(r.resource.as_ref(), ResourceRows::First, scopes)
                })
                .fold(0, usize::saturating_add),
            Request::Metrics(request) => request
                .resource_metrics
                .iter()
                .map(|r| {
                    let scopes = r.scope_metrics.iter().map(|s| {
                        let points: u64 = s.metrics.iter().map(metric_data_points).sum();
                        (s.scope.as_ref(), usize::try_from(points).unwrap_or(usize::MAX))
                    });
                    repeated_bytes(r.resource.as_ref(), ResourceRows::Every, scopes)
                })
                .fold(0, usize::saturating_add),
        };
        self.protobuf.len().saturating_mul(3).saturating_add(repeated)
    }

    /// Spans, data points or log records in the request.
    pub fn item_count(&self) -> u64 {
        let count: usize = match &self.request {
            Request::Traces(request) => request.span_count(),
            Request::Logs(request) => request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
            Request::Metrics(request) => {
                return request
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .map(metric_data_points)
                    .sum();
            }
        };
        count as u64
    }

    /// Converts the valid items to batches, counting the others in `rejections`. Fails if
    /// a span that was left encoded turns out to be malformed.
    pub(crate) fn to_batches(&self, rejections: &mut Rejections) -> Result<Vec<(Table, RecordBatch)>, IngestError> {
        Ok(match &self.request {
            Request::Traces(request) => traces_to_batch(request, rejections)?
                .map(|batch| vec![(Table::Traces, batch)])
                .unwrap_or_default(),
            Request::Logs(request) => logs_to_batch(request, rejections)
                .map(|batch| vec![(Table::Logs, batch)])
                .unwrap_or_default(),
            Request::Metrics(request) => metrics_to_batches(request, rejections),
        })
    }
}

/// How [`Export::decode_json`] parses a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonParse {
    /// Straight into the typed request: at its peak about [`JSON_TYPED_PARSE_FACTOR`]
    /// times the body's size.
    Typed,
    /// Through a `serde_json::Value` whose omitted lists are filled in first (see
    /// [`fill_omitted_value_lists`]): about [`JSON_VALUE_PARSE_FACTOR`] times the body.
    FillingOmittedLists,
}

impl JsonParse {
    /// The memory the parse takes at its peak, for a body of `bytes`.
    fn memory_estimate(self, bytes: usize) -> usize {
        bytes.saturating_mul(match self {
            JsonParse::Typed => JSON_TYPED_PARSE_FACTOR,
            JsonParse::FillingOmittedLists => JSON_VALUE_PARSE_FACTOR,
        })
    }
}

/// See [`JsonParse::Typed`].
const JSON_TYPED_PARSE_FACTOR: usize = 4;

/// See [`JsonParse::FillingOmittedLists`].
const JSON_VALUE_PARSE_FACTOR: usize = 20;

/// Parses `body` as `T` the way `how` says; `Ok(None)` if a [`JsonParse::Typed`] parse
/// found a list without its `values` (see [`fill_omitted_value_lists`]).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], how: JsonParse) -> Result<Option<T>, IngestError> {
    let invalid = |error: serde_json::Error| IngestError::Invalid(format!("json: {error}"));
    match how {
        JsonParse::Typed => match serde_json::from_slice(body) {
            Ok(request) => Ok(Some(request)),
            // The one mismatch the second parse repairs: any other invalid document is
            // answered at once, not parsed again under a larger reservation.
            Err(error) if error.is_data() && error.to_string().contains("missing field `values`") => Ok(None),
            Err(error) => Err(invalid(error)),
        },
        JsonParse::FillingOmittedLists => {
            let mut json: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
            fill_omitted_value_lists(&mut json);
            serde_json::from_value(json).map(Some).map_err(invalid)
        }
    }
}

/// Protobuf JSON lets an encoder omit an empty repeated field, and SDKs do send an empty
/// array as `{"arrayValue": {}}`; `opentelemetry-proto`'s serde types require `values` there,
/// so it is filled in before they see the document.
fn fill_omitted_value_lists(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                if let ("arrayValue" | "kvlistValue", serde_json::Value::Object(list)) = (key.as_str(), &mut *value) {
                    list.entry("values").or_insert_with(|| serde_json::Value::Array(Vec::new()));
                }
                fill_omitted_value_lists(value);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fill_omitted_value_lists),
        _ => {}
    }
}

/// Which rows of a table hold their resource's attributes.
#[derive(Clone, Copy)]
enum ResourceRows {
    /// The first of each resource's rows in a batch (spans, log records).
    First,
    /// Every row (metric data points).
    Every,
}

/// Bytes that the items under one resource repeat from it and from their scope, given each
/// scope and its item count (see [`Export::arrow_bytes_estimate`]). The encoded sizes stand
/// for the rendered ones.
fn repeated_bytes<'a>(
    resource: Option<&wire::Resource>,
    rows: ResourceRows,
    scopes: impl Iterator<Item = (Option<&'a wire::InstrumentationScope>, usize)>,
) -> usize {
    let resource_len = resource.map_or(0, |r| r.encoded_len());
    let (once, per_item) = match rows {
        ResourceRows::First => (resource_len, 0),
        ResourceRows::Every => (0, resource_len),
    };
    scopes
        .map(|(scope, items)| (per_item + scope.map_or(0, |s| s.encoded_len())).saturating_mul(items))
        .fold(once, usize::saturating_add)
}

/// The ingest pipeline shared by both transports.
pub struct Ingestor {
    store: Arc<Store>,
    metrics: Arc<SelfMetrics>,
    limits: Limits,
    /// Fed with every acknowledged span, when enabled.
    span_metrics: Option<Arc<SpanMetrics>>,
}

impl Ingestor {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<SelfMetrics>,
        limits: Limits,
        span_metrics: Option<Arc<SpanMetrics>>,
    ) -> Self {
        Self { store, metrics, limits, span_metrics }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a request refused before it could be decoded (too large, undecodable…).
    pub fn count_failed_request(&self, signal: Signal, reason: &'static str) {
        let labels = SignalReasonLabels { signal: signal.as_str(), reason };
        self.metrics.requests_failed.get_or_create(&labels).inc();
    }

    /// Decodes an OTLP/JSON body, reserving the memory that parsing it takes first: the
    /// parsed document takes several times the text. A document that omits a list's
    /// `values` gets a second parse that fills them in, under a larger reservation.
    pub fn decode_json(&self, signal: Signal, body: &[u8]) -> Result<Export, IngestError> {
        let parse = |how: JsonParse| {
            let _parsing = self.reserve_for_decoding(signal, how.memory_estimate(body.len()))?;
            Export::decode_json(signal, body, how)
        };
        match parse(JsonParse::Typed)? {
            Some(export) => Ok(export),
            None => parse(JsonParse::FillingOmittedLists)?
                .ok_or_else(|| IngestError::Invalid("json: not an OTLP export request".to_owned())),
        }
    }

    /// Reserves `estimate` bytes for decoding a request: refused like a request's rows
    /// ([`Self::export`]), and counted as a failed request since its items are not known yet.
    fn reserve_for_decoding(&self, signal: Signal, estimate: usize) -> Result<Admission<'_>, IngestError> {
        self.check_could_ever_fit(estimate)?;
        self.store.admit(estimate).map_err(|refusal| {
            self.count_failed_request(signal, refusal.as_str());
            IngestError::Refused(refusal)
        })
    }

    /// `OverMemoryLimit` if `estimate` bytes are more than the memory limit: no retry can
    /// get them admitted.
    fn check_could_ever_fit(&self, estimate: usize) -> Result<(), IngestError> {
        let limit = self.limits.memory_limit_bytes;
        if estimate > limit { Err(IngestError::OverMemoryLimit { estimate, limit }) } else { Ok(()) }
    }

    /// Stores the valid items of `export` and returns what was rejected as invalid (for the
    /// partial-success response).
    pub async fn export(&self, export: Export) -> Result<Rejections, IngestError> {
        let signal = export.signal();
        let estimate = export.arrow_bytes_estimate();
        self.check_could_ever_fit(estimate)?;
        let encoded_len = export.protobuf.len();
        let items = export.item_count();
        let labels = SignalLabels { signal: signal.as_str() };
        self.metrics.items_received.get_or_create(&labels).inc_by(items);

        let admission = match self.store.admit(estimate) {
            Ok(admission) => admission,
            Err(refusal) => {
                self.count_refused(signal, refusal.as_str(), items);
                return Err(IngestError::Refused(refusal));
            }
        };

        let derive_span_metrics = self.span_metrics.is_some();
        let convert = move || {
            let mut rejections = Rejections::default();
            let batches = export.to_batches(&mut rejections)?;
            let spans = batches
                .iter()
                .find(|(table, _)| derive_span_metrics && *table == Table::Traces)
                .map(|(_, batch)| batch.clone());
            let write = PreparedWrite::otlp(signal, export.protobuf, batches).map_err(IngestError::Store)?;
            Ok::<_, IngestError>((write, rejections, spans))
        };
        let prepared = if encoded_len <= INLINE_CONVERSION_MAX_BYTES {
            convert()
        } else {
            tokio::task::spawn_blocking(convert)
                .await
                .map_err(|error| IngestError::Invalid(format!("conversion failed: {error}")))?
        };
        let (write, rejections, spans) = prepared?;

        for (reason, count) in rejections.by_reason() {
            let labels = SignalReasonLabels { signal: signal.as_str(), reason: reason.as_str() };
            self.metrics.items_rejected.get_or_create(&labels).inc_by(count);
        }
        let valid_items = items - rejections.total();
        if let Err(error) = self.store.write(write).await {
            let reason = match error {
                StoreError::ShuttingDown => Refusal::ShuttingDown.as_str(),
                _ => "storage_error",
            };
            self.count_refused(signal, reason, valid_items);
            return Err(match error {
                StoreError::ShuttingDown => IngestError::Refused(Refusal::ShuttingDown),
                other => IngestError::Store(other),
            });
        }
        drop(admission);
        self.metrics.items_accepted.get_or_create(&labels).inc_by(valid_items);
        // Only acknowledged spans count: a refused request will be retried by its client.
        if let (Some(span_metrics), Some(spans)) = (&self.span_metrics, spans) {
            if encoded_len <= INLINE_CONVERSION_MAX_BYTES {
                span_metrics.record(&spans);
            } else {
                // Like its conversion, a large request is counted off the async workers.
                let span_metrics = span_metrics.clone();
                tokio::task::spawn_blocking(move || span_metrics.record(&spans));
            }
        }
        Ok(rejections)
    }

    fn count_refused(&self, signal: Signal, reason: &'static str, items: u64) {
        let labels = SignalReasonLabels { signal: signal.as_str(), reason };
        self.metrics.items_refused.get_or_create(&labels).inc_by(items);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::test_data::{attribute, request_with, span, string};

    /// A pod's resource (labels, annotations) over a request of spans: the spans hold its
    /// attributes once, so the reservation must not count them once per span, yet must
    /// still cover what the rows take.
    #[test]
    fn the_memory_estimate_of_spans_counts_their_resource_once() {
        let mut request = request_with((0..2000).map(|n| span(n, 1_700_000_000_000_000_000 + n)).collect());
        let resource = request.resource_spans[0].resource.as_mut().expect("a resource");
        resource.attributes.extend((0..64).map(|n| attribute(&format!("k8s.pod.label.{n}"), string(&"v".repeat(60)))));
        let export = Export::decode_protobuf(Signal::Traces, Bytes::from(request.encode_to_vec())).expect("decodes");

        let estimate = export.arrow_bytes_estimate();
        let batches = export.to_batches(&mut Rejections::default()).expect("converts");
        let rows: usize = batches.iter().map(|(_, batch)| batch.get_array_memory_size()).sum();
        assert!(rows <= estimate, "the rows take {rows} bytes, more than the {estimate} reserved");
        let protobuf = export.protobuf.len();
        assert!(estimate < 4 * protobuf, "{estimate} bytes reserved for a request of {protobuf}");
    }
}
