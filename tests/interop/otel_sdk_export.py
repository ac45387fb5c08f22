#!/usr/bin/env python3
"""Send spans, metrics and logs to a Meshlight collector with the real OpenTelemetry Python SDK.

The telemetry goes through the SDK's own pipeline (tracer/meter/logger providers, batch
processors, metric reader, views) into one of three exporters:

* ``grpc``          the SDK's OTLP/gRPC exporters
* ``http-protobuf`` the SDK's OTLP/HTTP exporters (binary protobuf)
* ``http-json``     OTLP/HTTP with JSON bodies: the SDK has no JSON exporter, so this script
                    encodes with the SDK's own protobuf encoders and converts the message to
                    OTLP/JSON (protobuf JSON mapping, hex trace/span ids, integer enums)

Every exporter is wrapped so that the exact batches it was handed, and its result, are
recorded. The manifest (``--manifest``) is built from those batches encoded with the SDK's
encoders, i.e. from the very protobuf messages that went on the wire, and spells every value
the way Meshlight's tables store it (see docs/interfaces-draft.md). The Rust test
``collector/tests/behaviour/otel_python_sdk_roundtrip.rs`` compares the tables to it.

Exits non-zero unless every export call succeeded.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from opentelemetry import context, trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
    _Gauge,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

EXPORT_TIMEOUT_SECONDS = 10.0
SCOPE_NAME = "meshlight.interop"
SCOPE_VERSION = "1.2.3"

# Counter exports delta sums and everything else cumulative, so both temporalities reach the
# collector. Every instrument class is listed so OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
# in the caller's environment cannot change what the manifest says.
PREFERRED_TEMPORALITY = {
    Counter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.CUMULATIVE,
    _Gauge: AggregationTemporality.CUMULATIVE,
    ObservableCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}

EXPLICIT_HISTOGRAM_NAME = "meshlight.interop.request.duration"
EXPLICIT_HISTOGRAM_BOUNDARIES = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0)
EXPONENTIAL_HISTOGRAM_NAME = "meshlight.interop.payload.size"
# A small max_size forces the SDK to downscale, so Scale and the offsets are not the defaults.
EXPONENTIAL_HISTOGRAM_MAX_SIZE = 16

# Ids of a span that is not part of this export: the target of a link to a remote context.
REMOTE_LINK_TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
REMOTE_LINK_SPAN_ID = 0xEEE19B7EC3C1B174

SPAN_KIND_NAMES = {
    0: "Unspecified",
    1: "Internal",
    2: "Server",
    3: "Client",
    4: "Producer",
    5: "Consumer",
}
STATUS_CODE_NAMES = {0: "Unset", 1: "Ok", 2: "Error"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-endpoint", required=True, help="e.g. http://127.0.0.1:4317")
    parser.add_argument("--http-endpoint", required=True, help="e.g. http://127.0.0.1:4318")
    parser.add_argument("--transport", required=True, choices=["grpc", "http-protobuf", "http-json"])
    parser.add_argument("--manifest", required=True, help="where to write the JSON manifest")
    parser.add_argument("--run-id", required=True, help="makes service.name unique per run")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------
# Exporters
# ---------------------------------------------------------------------------------------------


class ExportFailed(Exception):
    pass


def post_otlp_json(url: str, request_message) -> None:
    """POSTs one OTLP request as OTLP/JSON; raises ExportFailed unless the answer is 200."""
    body = json.dumps(otlp_json_document(request_message)).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    # An empty ProxyHandler: the collector is on loopback, whatever *_proxy variables say.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=EXPORT_TIMEOUT_SECONDS) as response:
            status = response.status
            response_body = response.read()
    except urllib.error.HTTPError as error:
        raise ExportFailed(f"POST {url} -> {error.code}: {error.read()[:2000]!r}") from error
    except OSError as error:
        raise ExportFailed(f"POST {url} failed: {error}") from error
    if status != 200:
        raise ExportFailed(f"POST {url} -> {status}: {response_body[:2000]!r}")


def otlp_json_document(request_message) -> dict:
    """Converts an OTLP protobuf request to the OTLP/JSON encoding.

    The OTLP spec uses the standard protobuf JSON mapping (lowerCamelCase names, 64-bit
    integers as strings, bytes as base64) with two exceptions: enums are integers, and
    traceId/spanId/parentSpanId are lowercase hex rather than base64.
    """
    document = json_format.MessageToDict(request_message, use_integers_for_enums=True)
    hex_encode_ids(document)
    return document


ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_encode_ids(node: Any) -> None:
    # Attribute keys are values of a "key" field, never dict keys, so a user attribute named
    # "traceId" cannot be mistaken for the id field here.
    if isinstance(node, list):
        for item in node:
            hex_encode_ids(item)
        return
    if not isinstance(node, dict):
        return
    for field, value in node.items():
        if field in ID_FIELDS and isinstance(value, str):
            node[field] = base64.b64decode(value).hex()
        else:
            hex_encode_ids(value)


class JsonSpanExporter(SpanExporter):
    def __init__(self, base_url: str):
        self._url = base_url.rstrip("/") + "/v1/traces"

    def export(self, spans):
        try:
            post_otlp_json(self._url, encode_spans(spans))
        except ExportFailed as error:
            print(f"span export failed: {error}", file=sys.stderr)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here


class JsonMetricExporter(MetricExporter):
    def __init__(self, base_url: str):
        super().__init__(preferred_temporality=PREFERRED_TEMPORALITY)
        self._url = base_url.rstrip("/") + "/v1/metrics"

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        try:
            post_otlp_json(self._url, encode_metrics(metrics_data))
        except ExportFailed as error:
            print(f"metric export failed: {error}", file=sys.stderr)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True  # nothing is buffered here

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class JsonLogExporter(LogRecordExporter):
    def __init__(self, base_url: str):
        self._url = base_url.rstrip("/") + "/v1/logs"

    def export(self, batch):
        try:
            post_otlp_json(self._url, encode_logs(batch))
        except ExportFailed as error:
            print(f"log export failed: {error}", file=sys.stderr)
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here


def build_exporters(args: argparse.Namespace):
    """Returns (span exporter, metric exporter, log exporter) for the chosen transport."""
    if args.transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        common = {"endpoint": args.grpc_endpoint, "insecure": True, "timeout": EXPORT_TIMEOUT_SECONDS}
        return (
            OTLPSpanExporter(**common),
            OTLPMetricExporter(preferred_temporality=PREFERRED_TEMPORALITY, **common),
            OTLPLogExporter(**common),
        )
    if args.transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Given explicitly, the HTTP exporters take the full URL including the signal path.
        base = args.http_endpoint.rstrip("/")
        return (
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=EXPORT_TIMEOUT_SECONDS),
            OTLPMetricExporter(
                endpoint=f"{base}/v1/metrics",
                timeout=EXPORT_TIMEOUT_SECONDS,
                preferred_temporality=PREFERRED_TEMPORALITY,
            ),
            OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=EXPORT_TIMEOUT_SECONDS),
        )
    return (
        JsonSpanExporter(args.http_endpoint),
        JsonMetricExporter(args.http_endpoint),
        JsonLogExporter(args.http_endpoint),
    )


class RecordingSpanExporter(SpanExporter):
    """Forwards to the real exporter and remembers each batch and its result."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.batches: list[list] = []
        self.results: list[SpanExportResult] = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.batches.append(list(spans))
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RecordingMetricExporter(MetricExporter):
    """Forwards to the real exporter and remembers each batch and its result.

    PeriodicExportingMetricReader ignores the exporter's result, so this is the only place
    where a failed metric export is visible.
    """

    def __init__(self, inner: MetricExporter):
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.batches: list = []
        self.results: list[MetricExportResult] = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.batches.append(metrics_data)
        self.results.append(result)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class RecordingLogExporter(LogRecordExporter):
    """Forwards to the real exporter and remembers each batch and its result."""

    def __init__(self, inner: LogRecordExporter):
        self.inner = inner
        self.batches: list[list] = []
        self.results: list[LogRecordExportResult] = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.batches.append(list(batch))
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


# ---------------------------------------------------------------------------------------------
# Telemetry
# ---------------------------------------------------------------------------------------------


class TraceStateSampler(Sampler):
    """Samples everything and gives every span a non-empty tracestate.

    Root spans otherwise have an empty tracestate, and TraceState would go untested.
    """

    TRACE_STATE = TraceState([("meshlight", "interop"), ("vendor", "t61rcWkgMzE")])

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        # The SDK starts the span with the sampler's attributes, so they must be passed on.
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes=attributes, trace_state=self.TRACE_STATE)

    def get_description(self) -> str:
        return "TraceStateSampler"


# Span attributes of every type the Python SDK accepts. The SDK (1.45) also accepts bytes,
# mappings and heterogeneous or empty sequences on spans.
EVERY_TYPE_ATTRIBUTES = {
    "str": "héllo wörld ✓",
    "str.empty": "",
    "int": 42,
    "int.negative": -7,
    "int.beyond_f64_precision": 2**53 + 1,
    "int.max": 2**63 - 1,
    "float": 3.25,
    "float.integral": 2.0,
    "float.tenth": 0.1,
    "float.negative": -1234.5678,
    "bool.true": True,
    "bool.false": False,
    "bytes": b"\x00\x01\xfe\xffmeshlight",
    "array.str": ["a", "b", "c d"],
    "array.int": [1, -2, 3],
    # Integral floats are left out of arrays: JSON encoders disagree on 2 versus 2.0.
    "array.float": [1.5, 2.25, -0.125],
    "array.bool": [True, False],
    "array.empty": [],
    # Keys in sorted order, so the JSON object reads the same whether the map is ordered by
    # insertion or by key.
    "map": {"a": "x", "b": 1, "c": [True]},
}


def emit_spans(tracer, base_ns: int):
    """Starts the spans with explicit timestamps and ends all but the client and server span,
    which stay open for the metrics and logs recorded inside them (see end_remaining_spans)."""
    server = tracer.start_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        start_time=base_ns,
        attributes={"http.request.method": "GET", "http.response.status_code": 503, "url.path": "/checkout"},
    )
    server_context = trace.set_span_in_context(server)
    server.add_event(
        "request.received",
        attributes={"net.peer.port": 51234, "client.address": "10.1.2.3"},
        timestamp=base_ns + 1_001,
    )

    client = tracer.start_span(
        "POST payments",
        kind=SpanKind.CLIENT,
        context=server_context,
        start_time=base_ns + 2_000_003,
        attributes=EVERY_TYPE_ATTRIBUTES,
    )
    client_context = trace.set_span_in_context(client)
    client.add_event(
        "retry",
        attributes={"retry.attempt": 1, "retry.backoff_s": 0.25, "retry.final": False, "tags": ["x", "y"]},
        timestamp=base_ns + 3_000_007,
    )
    client.add_event("retry", attributes={"retry.attempt": 2, "retry.final": True}, timestamp=base_ns + 4_500_011)

    # The SDK's OTLP encoder (1.45) does not put a link's tracestate on the wire, so this one
    # arrives as "" whatever is set here; the manifest records what was actually sent.
    remote_context = SpanContext(
        trace_id=REMOTE_LINK_TRACE_ID,
        span_id=REMOTE_LINK_SPAN_ID,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("remote", "yes"), ("congo", "t61rcWkgMzE")]),
    )
    internal = tracer.start_span(
        "serialize payload",
        kind=SpanKind.INTERNAL,
        context=client_context,
        start_time=base_ns + 2_100_013,
        links=[Link(remote_context, attributes={"link.reason": "batched-with", "link.index": 0, "link.weight": 0.5})],
        attributes={"payload.bytes": 1536},
    )
    internal.end(end_time=base_ns + 2_900_017)

    producer = tracer.start_span(
        "publish order",
        kind=SpanKind.PRODUCER,
        context=server_context,
        start_time=base_ns + 5_000_019,
        attributes={"messaging.system": "kafka", "messaging.destination.name": "orders"},
    )
    producer.end(end_time=base_ns + 5_200_023)

    # A span of another trace, linked to the producer span: the usual messaging shape.
    consumer = tracer.start_span(
        "process order",
        kind=SpanKind.CONSUMER,
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        start_time=base_ns + 6_000_029,
        links=[Link(producer.get_span_context(), attributes={"messaging.operation": "receive"})],
    )
    consumer.end(end_time=base_ns + 7_000_031)

    client.set_status(Status(StatusCode.OK))
    spans = {"server": server, "client": client, "internal": internal, "producer": producer, "consumer": consumer}

    try:
        raise ConnectionError("payments: 503 Service Unavailable")
    except ConnectionError as error:
        server.record_exception(error, attributes={"exception.handled": True}, timestamp=base_ns + 8_000_037)
    server.set_status(Status(StatusCode.ERROR, "upstream returned 503"))
    return spans, client_context


def end_remaining_spans(spans, base_ns: int) -> None:
    spans["client"].end(end_time=base_ns + 4_900_041)
    spans["server"].end(end_time=base_ns + 9_000_043)


def record_metrics(meter, client_context) -> None:
    """Records measurements; those inside a sampled span context carry exemplars."""
    requests = meter.create_counter("meshlight.interop.requests", unit="{request}", description="Requests handled")
    in_flight = meter.create_up_down_counter("meshlight.interop.in_flight", unit="{request}", description="Requests in flight")
    temperature = meter.create_gauge("meshlight.interop.temperature", unit="Cel", description="Board temperature")
    duration = meter.create_histogram(EXPLICIT_HISTOGRAM_NAME, unit="ms", description="Request duration")
    payload = meter.create_histogram(EXPONENTIAL_HISTOGRAM_NAME, unit="By", description="Payload size")

    ok = {"http.route": "/checkout", "http.response.status_code": 200}
    failed = {"http.route": "/checkout", "http.response.status_code": 503, "error": True}

    token = context.attach(client_context)
    try:
        requests.add(3, ok)
        requests.add(4, ok)
        requests.add(1, failed)
        in_flight.add(5, {"pool": "primary"})
        in_flight.add(-2, {"pool": "primary"})
        temperature.set(21.5, {"sensor": "board", "zone": 1})
        temperature.set(42.25, {"sensor": "board", "zone": 1})
        for value in (3.0, 7.0, 7.5, 30.0, 120.0):
            duration.record(value, ok)
        # 0 lands in the zero bucket, 0.25 gives a negative bucket index.
        for value in (0.0, 0.25, 1.5, 3.0, 100.0, 1000.0):
            payload.record(value, {"direction": "inbound"})
    finally:
        context.detach(token)


def emit_logs(logger, spans, base_ns: int) -> None:
    """Emits through the logs API directly (the SDK's LoggingHandler is deprecated)."""
    logger.emit(
        timestamp=base_ns + 4_000_047,
        observed_timestamp=base_ns + 4_000_053,
        context=trace.set_span_in_context(spans["client"]),
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body="payment declined for order o-42",
        attributes={"order.id": "o-42", "retry.count": 3, "amount": 19.99, "declined": True, "codes": ["R1", "R7"]},
    )
    logger.emit(
        timestamp=base_ns + 2_500_059,
        observed_timestamp=base_ns + 2_500_061,
        context=trace.set_span_in_context(spans["internal"]),
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        body="serializer fell back to slow path\nsecond line",
        attributes={"serializer": "json", "payload.bytes": 1536},
        event_name="meshlight.interop.fallback",
    )
    # A log outside any span: TraceId and SpanId must come back empty.
    logger.emit(
        timestamp=base_ns + 10_000_067,
        observed_timestamp=base_ns + 10_000_071,
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        body="export finished",
        attributes={"phase": "shutdown"},
    )


# ---------------------------------------------------------------------------------------------
# Manifest: what went on the wire, spelled the way Meshlight's tables store it
# ---------------------------------------------------------------------------------------------


def shortest_float(value: float) -> str:
    """Shortest round-trip decimal without exponent, as Go's FormatFloat(v, 'f', -1, 64) and
    Rust's Display print it: 3.5, 2 for 2.0, 0.1."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def any_value_json(value) -> str:
    """An AnyValue as compact JSON, as it appears inside an array or map attribute."""
    kind = value.WhichOneof("value")
    if kind is None:
        return "null"
    if kind == "string_value":
        return json.dumps(value.string_value, ensure_ascii=False)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return shortest_float(value.double_value)
    if kind == "bytes_value":
        return json.dumps(base64.b64encode(value.bytes_value).decode("ascii"))
    if kind == "array_value":
        return "[" + ",".join(any_value_json(item) for item in value.array_value.values) + "]"
    if kind == "kvlist_value":
        entries = sorted((entry.key, entry.value) for entry in value.kvlist_value.values)
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + any_value_json(item) for key, item in entries) + "}"
    raise ValueError(f"unknown AnyValue kind {kind}")


def any_value_string(value) -> str:
    """An AnyValue as a table stores it (the Collector's AsString)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return any_value_json(value)


def attribute_map(key_values) -> dict[str, str]:
    return {entry.key: any_value_string(entry.value) for entry in key_values}


def rfc3339_nanos(unix_nanos: int) -> str:
    """How the SQL API prints a timestamp inside a list column."""
    seconds, nanos = divmod(unix_nanos, 1_000_000_000)
    whole = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def id_hex(raw: bytes) -> str:
    return raw.hex()


def resource_fields(resource) -> dict:
    attributes = attribute_map(resource.attributes)
    return {"service_name": attributes.get("service.name", ""), "resource_attributes": attributes}


def scope_fields(scope) -> dict:
    return {
        "scope_name": scope.name,
        "scope_version": scope.version,
        "scope_attributes": attribute_map(scope.attributes),
    }


def span_entries(request) -> list[dict]:
    entries = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                entries.append(
                    {
                        **resource_fields(resource_spans.resource),
                        **scope_fields(scope_spans.scope),
                        "trace_id": id_hex(span.trace_id),
                        "span_id": id_hex(span.span_id),
                        "parent_span_id": id_hex(span.parent_span_id),
                        "trace_state": span.trace_state,
                        "flags": span.flags,
                        "name": span.name,
                        "kind": SPAN_KIND_NAMES[span.kind],
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano,
                        "attributes": attribute_map(span.attributes),
                        "dropped_attributes_count": span.dropped_attributes_count,
                        "dropped_events_count": span.dropped_events_count,
                        "dropped_links_count": span.dropped_links_count,
                        "status_code": STATUS_CODE_NAMES[span.status.code],
                        "status_message": span.status.message,
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "time_rfc3339": rfc3339_nanos(event.time_unix_nano),
                                "attributes": attribute_map(event.attributes),
                                "dropped_attributes_count": event.dropped_attributes_count,
                            }
                            for event in span.events
                        ],
                        "links": [
                            {
                                "trace_id": id_hex(link.trace_id),
                                "span_id": id_hex(link.span_id),
                                "trace_state": link.trace_state,
                                "flags": link.flags,
                                "attributes": attribute_map(link.attributes),
                                "dropped_attributes_count": link.dropped_attributes_count,
                            }
                            for link in span.links
                        ],
                    }
                )
    return entries


def number_value(point) -> float:
    kind = point.WhichOneof("value")
    if kind == "as_int":
        return float(point.as_int)
    if kind == "as_double":
        return point.as_double
    raise ValueError("data point without a value")


def exemplar_entries(exemplars) -> list[dict]:
    return [
        {
            "value": number_value(exemplar),
            "time_unix_nano": exemplar.time_unix_nano,
            "time_rfc3339": rfc3339_nanos(exemplar.time_unix_nano),
            "trace_id": id_hex(exemplar.trace_id),
            "span_id": id_hex(exemplar.span_id),
            "filtered_attributes": attribute_map(exemplar.filtered_attributes),
        }
        for exemplar in exemplars
    ]


def optional_double(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


def metric_point_entries(request) -> list[dict]:
    entries = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                common = {
                    **resource_fields(resource_metrics.resource),
                    **scope_fields(scope_metrics.scope),
                    "metric_name": metric.name,
                    "description": metric.description,
                    "unit": metric.unit,
                }
                entries.extend(data_point_entries(metric, common))
    return entries


def data_point_entries(metric, common: dict) -> list[dict]:
    def point_fields(point) -> dict:
        return {
            **common,
            "attributes": attribute_map(point.attributes),
            "start_time_unix_nano": point.start_time_unix_nano,
            "time_unix_nano": point.time_unix_nano,
            "flags": point.flags,
            "exemplars": exemplar_entries(point.exemplars),
        }

    data_kind = metric.WhichOneof("data")
    if data_kind == "gauge":
        return [{**point_fields(p), "table": "otel_metrics_gauge", "value": number_value(p)} for p in metric.gauge.data_points]
    if data_kind == "sum":
        return [
            {
                **point_fields(p),
                "table": "otel_metrics_sum",
                "value": number_value(p),
                "aggregation_temporality": metric.sum.aggregation_temporality,
                "is_monotonic": metric.sum.is_monotonic,
            }
            for p in metric.sum.data_points
        ]
    if data_kind == "histogram":
        return [
            {
                **point_fields(p),
                "table": "otel_metrics_histogram",
                "count": p.count,
                "sum": p.sum,
                "bucket_counts": list(p.bucket_counts),
                "explicit_bounds": list(p.explicit_bounds),
                "min": optional_double(p, "min"),
                "max": optional_double(p, "max"),
                "aggregation_temporality": metric.histogram.aggregation_temporality,
            }
            for p in metric.histogram.data_points
        ]
    if data_kind == "exponential_histogram":
        return [
            {
                **point_fields(p),
                "table": "otel_metrics_exp_histogram",
                "count": p.count,
                "sum": p.sum,
                "scale": p.scale,
                "zero_count": p.zero_count,
                "zero_threshold": p.zero_threshold,
                "positive_offset": p.positive.offset,
                "positive_bucket_counts": list(p.positive.bucket_counts),
                "negative_offset": p.negative.offset,
                "negative_bucket_counts": list(p.negative.bucket_counts),
                "min": optional_double(p, "min"),
                "max": optional_double(p, "max"),
                "aggregation_temporality": metric.exponential_histogram.aggregation_temporality,
            }
            for p in metric.exponential_histogram.data_points
        ]
    raise ValueError(f"metric {metric.name} has unexpected data {data_kind}")


def log_entries(request) -> list[dict]:
    entries = []
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                entries.append(
                    {
                        **resource_fields(resource_logs.resource),
                        **scope_fields(scope_logs.scope),
                        "time_unix_nano": record.time_unix_nano,
                        "observed_time_unix_nano": record.observed_time_unix_nano,
                        "trace_id": id_hex(record.trace_id),
                        "span_id": id_hex(record.span_id),
                        "flags": record.flags,
                        "severity_number": record.severity_number,
                        "severity_text": record.severity_text,
                        "body": any_value_string(record.body),
                        "event_name": record.event_name,
                        "attributes": attribute_map(record.attributes),
                        "dropped_attributes_count": record.dropped_attributes_count,
                    }
                )
    return entries


def build_manifest(args, service_name: str, span_recorder, metric_recorder, log_recorder) -> dict:
    spans = [entry for batch in span_recorder.batches for entry in span_entries(encode_spans(batch))]
    metrics = [entry for batch in metric_recorder.batches for entry in metric_point_entries(encode_metrics(batch))]
    logs = [entry for batch in log_recorder.batches for entry in log_entries(encode_logs(batch))]
    return {
        "transport": args.transport,
        "run_id": args.run_id,
        "service_name": service_name,
        "export_calls": {
            "traces": len(span_recorder.batches),
            "metrics": len(metric_recorder.batches),
            "logs": len(log_recorder.batches),
        },
        "spans": spans,
        "metrics": metrics,
        "logs": logs,
    }


# ---------------------------------------------------------------------------------------------


def require_success(signal: str, flushed: bool, results: Sequence, success) -> list[str]:
    problems = []
    if not flushed:
        problems.append(f"{signal}: force_flush returned False")
    if not results:
        problems.append(f"{signal}: nothing was exported")
    failed = [result for result in results if result != success]
    if failed:
        problems.append(f"{signal}: {len(failed)} of {len(results)} export calls failed: {failed}")
    return problems


def main() -> int:
    args = parse_args()
    service_name = f"interop-{args.transport}-{args.run_id}"
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.version": "0.0.1-interop",
            "deployment.environment.name": "test",
            "meshlight.run_id": args.run_id,
            "meshlight.transport": args.transport,
            "host.cpu.count": 2,
        }
    )
    span_exporter, metric_exporter, log_exporter = build_exporters(args)
    span_recorder = RecordingSpanExporter(span_exporter)
    metric_recorder = RecordingMetricExporter(metric_exporter)
    log_recorder = RecordingLogExporter(log_exporter)

    tracer_provider = TracerProvider(resource=resource, sampler=TraceStateSampler())
    tracer_provider.add_span_processor(BatchSpanProcessor(span_recorder))
    tracer = tracer_provider.get_tracer(SCOPE_NAME, SCOPE_VERSION, attributes={"scope.kind": "tracer"})

    # An infinite interval starts no background thread and collects only on force_flush, so
    # the metrics are exported exactly once (shutdown does not collect again).
    metric_reader = PeriodicExportingMetricReader(metric_recorder, export_interval_millis=math.inf)
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[metric_reader],
        views=[
            View(
                instrument_name=EXPLICIT_HISTOGRAM_NAME,
                aggregation=ExplicitBucketHistogramAggregation(boundaries=EXPLICIT_HISTOGRAM_BOUNDARIES),
            ),
            View(
                instrument_name=EXPONENTIAL_HISTOGRAM_NAME,
                aggregation=ExponentialBucketHistogramAggregation(max_size=EXPONENTIAL_HISTOGRAM_MAX_SIZE),
            ),
        ],
    )
    meter = meter_provider.get_meter(SCOPE_NAME, SCOPE_VERSION)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_recorder))
    logger = logger_provider.get_logger(SCOPE_NAME, SCOPE_VERSION)

    base_ns = time.time_ns()
    spans, client_context = emit_spans(tracer, base_ns)
    record_metrics(meter, client_context)
    emit_logs(logger, spans, base_ns)
    end_remaining_spans(spans, base_ns)

    flush_millis = int(EXPORT_TIMEOUT_SECONDS * 3 * 1000)
    problems = []
    problems += require_success(
        "traces", tracer_provider.force_flush(flush_millis), span_recorder.results, SpanExportResult.SUCCESS
    )
    problems += require_success(
        "metrics", meter_provider.force_flush(flush_millis), metric_recorder.results, MetricExportResult.SUCCESS
    )
    problems += require_success(
        "logs", logger_provider.force_flush(flush_millis), log_recorder.results, LogRecordExportResult.SUCCESS
    )

    manifest = build_manifest(args, service_name, span_recorder, metric_recorder, log_recorder)
    with open(args.manifest, "w", encoding="utf-8") as manifest_file:
        json.dump(manifest, manifest_file, indent=1, ensure_ascii=False)

    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()

    if problems:
        for problem in problems:
            print(f"export failed: {problem}", file=sys.stderr)
        return 1
    print(
        f"{args.transport}: exported {len(manifest['spans'])} spans, {len(manifest['metrics'])} metric points, "
        f"{len(manifest['logs'])} logs as {service_name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
