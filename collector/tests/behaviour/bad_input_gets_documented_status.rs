//! Every kind of bad input gets its documented status, the collector stays up, and valid
//! items next to invalid ones are stored.

use std::time::Duration;

use bytes::Bytes;
use meshlight_collector::ingest::wire;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::support::{Collector, poll_until};
use crate::support::otlp::{GrpcClient, attribute, gzip, now_nanos, post, post_chunked, post_traces, spans};

const PROTOBUF: Option<&str> = Some("application/x-protobuf");
const JSON: Option<&str> = Some("application/json");
const REFUSED_FOR_MEMORY: &str = "meshlight_ingest_items_refused_total{signal=\"traces\",reason=\"memory_limit\"}";

#[test]
fn malformed_http_requests_get_4xx_and_nothing_is_stored() {
    let collector = Collector::start_with(&["--max-request-bytes", "1048576"]);
    let endpoint = collector.http_endpoint();
    let valid = spans("bad-input", 0, 3, now_nanos()).encode_to_vec();
    // Valid spans, then a second `resource_spans` whose one span is a byte that is no message:
    // spans are decoded only while converting, and that one still fails the whole request.
    let malformed_span = [valid.as_slice(), &[(1 << 3) | 2, 5, (2 << 3) | 2, 3, (2 << 3) | 2, 1, 0xff]].concat();

    /// name, Content-Type, Content-Encoding, body, expected status
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("no content type", None, None, valid.clone(), 415),
        ("text/plain", Some("text/plain"), None, valid.clone(), 415),
        ("unknown encoding", PROTOBUF, Some("br"), valid.clone(), 415),
        ("garbage protobuf", PROTOBUF, None, b"\xff\xff\xff\xff garbage".to_vec(), 400),
        ("a malformed span after valid ones", PROTOBUF, None, malformed_span, 400),
        ("garbage json", JSON, None, b"{\"resourceSpans\": [".to_vec(), 400),
        ("json with a bad hex id", JSON, None, br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#.to_vec(), 400),
        ("corrupt gzip", PROTOBUF, Some("gzip"), b"\x1f\x8b\x08\x00 not really".to_vec(), 400),
        ("one byte over the cap", PROTOBUF, None, vec![0u8; (1 << 20) + 1], 413),
        // Far more than a socket buffer holds: the collector reads the rest of the body
        // before it answers, so the client is not reset before it reads the 413.
        ("well over the cap", PROTOBUF, None, vec![0u8; 8 << 20], 413),
        ("gzip bomb", PROTOBUF, Some("gzip"), gzip(&vec![0u8; 8 << 20]), 413),
    ];
    for (name, content_type, encoding, body, expected) in cases {
        let reply = post(&endpoint, "/v1/traces", content_type, encoding, &body);
        assert_eq!(reply.status, expected, "{name}: {}", String::from_utf8_lossy(&reply.body));
    }
    // Without a declared length the cap holds too, and the rest of the body is read before
    // the 413, as above.
    let reply = post_chunked(&endpoint, "/v1/traces", PROTOBUF, &vec![0u8; 8 << 20]);
    assert_eq!(reply.status, 413, "chunked, well over the cap: {}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("max_request_bytes"));
    // The cap answers as OTLP/HTTP does: a google.rpc.Status in the request's format.
    let reply = post(&endpoint, "/v1/traces", JSON, None, &vec![b' '; (1 << 20) + 1]);
    assert_eq!(reply.status, 413);
    let status: serde_json::Value = serde_json::from_slice(&reply.body).expect("a JSON google.rpc.Status");
    assert_eq!(status["code"], 8, "RESOURCE_EXHAUSTED: {status}");
    // A chunked body under the cap reaches the decoder whole.
    let reply = post_chunked(&endpoint, "/v1/traces", PROTOBUF, b"\xff\xff\xff\xff garbage");
    assert_eq!(reply.status, 400, "chunked garbage: {}", String::from_utf8_lossy(&reply.body));
    let stored = collector.sql("SELECT count(*) AS n FROM otel_traces");
    assert_eq!(stored.single_value().as_u64(), Some(0));
    let failed = collector.metric_value("meshlight_ingest_requests_failed_total{signal=\"traces\",reason=\"invalid\"}");
    assert_eq!(failed, Some(6.0));
    let (status, _) = collector.get("/health").expect("health");
    assert_eq!(status, 200);

    // Media types are case-insensitive.
    let reply = post(&endpoint, "/v1/traces", Some("Application/X-Protobuf"), None, &valid);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

#[test]
fn invalid_items_are_rejected_by_partial_success_and_valid_ones_stored() {
    let collector = Collector::start();
    let mut request = wire::ExportTraceServiceRequest::decode(
        spans("partial", 0, 6, now_nanos()).encode_to_vec().as_slice(),
    )
    .expect("decodes as wire types");
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].trace_id = Bytes::from_static(&[0; 16]);
    spans[2].span_id = Bytes::from_static(&[1, 2, 3]);
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1;
    spans[4].name = Bytes::from_static(b"\xc3\x28 invalid utf-8");

    let reply = post(&collector.http_endpoint(), "/v1/traces", PROTOBUF, None, &request.encode_to_vec());
    assert_eq!(reply.status, 200);
    let response = ExportTraceServiceResponse::decode(reply.body.as_slice()).expect("an OTLP response");
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 4, "{}", partial.error_message);
    for reason in ["invalid_trace_id", "invalid_span_id", "end_before_start", "invalid_utf8"] {
        assert!(partial.error_message.contains(reason), "{reason} in {}", partial.error_message);
    }
    let stored = collector.sql("SELECT count(*) AS n FROM otel_traces WHERE \"ServiceName\" = 'partial'");
    assert_eq!(stored.single_value().as_u64(), Some(2));
    let rejected = collector.metric_value("meshlight_ingest_items_rejected_total{signal=\"traces\",reason=\"invalid_utf8\"}");
    assert_eq!(rejected, Some(1.0));
    let accepted = collector.metric_value("meshlight_ingest_items_accepted_total{signal=\"traces\"}");
    assert_eq!(accepted, Some(2.0));

    // The same over gRPC: partial success in the response, not an error.
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    let mut mixed = crate::support::otlp::spans("partial-grpc", 1, 3, now_nanos());
    mixed.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
    let response = client.export(mixed).expect("partial success is not an error");
    assert_eq!(response.partial_success.map(|p| p.rejected_spans), Some(1));
}

#[test]
fn oversized_grpc_requests_get_resource_exhausted() {
    let collector = Collector::start_with(&["--max-request-bytes", "100000"]);
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    let status = client.export(spans("big", 0, 5_000, now_nanos())).expect_err("over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let small = client.export(spans("big", 1, 10, now_nanos()));
    assert!(small.is_ok(), "the collector keeps serving: {small:?}");
    let failed = collector.metric_value("meshlight_ingest_requests_failed_total{signal=\"traces\",reason=\"too_large\"}");
    assert_eq!(failed, Some(1.0), "counted as over OTLP/HTTP");
}

#[test]
fn grpc_messages_that_do_not_decompress_get_internal_and_are_counted() {
    let collector = Collector::start();
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    let status = client.export_compressed_frame("gzip", b"\x1f\x8b\x08\x00 not really");
    assert_eq!(status, Some(Code::Internal), "gRPC's compression spec: a message that cannot be decompressed");
    let failed = collector.metric_value("meshlight_ingest_requests_failed_total{signal=\"traces\",reason=\"invalid\"}");
    assert_eq!(failed, Some(1.0), "counted as over OTLP/HTTP");
    assert!(client.export(spans("after-bad-gzip", 0, 3, now_nanos())).is_ok(), "the collector keeps serving");
}

#[test]
fn a_request_whose_rows_can_never_fit_in_memory_is_too_large() {
    let collector = Collector::start_with(&["--memory-limit-bytes", "16777216", "--max-request-bytes", "8388608"]);
    // 300 data points under a resource with a 64 KiB attribute: an 80 KB request whose rows
    // repeat the attribute, about 20 MB, over the 16 MiB limit however empty memory is.
    let labels = attribute("k8s.pod.labels", &"x".repeat(64 << 10));
    let points = gauge_points(300, labels.clone());
    assert!(points.encoded_len() < 100_000);
    let reply = post(&collector.http_endpoint(), "/v1/metrics", PROTOBUF, None, &points.encode_to_vec());
    assert_eq!(reply.status, 413, "{}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("memory limit"));

    // Spans hold their resource's attributes once: the same resource over 300 spans gets in.
    let mut request = spans("expanding", 0, 300, now_nanos());
    request.resource_spans[0].resource.as_mut().expect("a resource").attributes.push(labels);
    assert_eq!(post_traces(&collector.http_endpoint(), &request).status, 200);
    let stored = collector.sql("SELECT count(*) AS n FROM otel_traces");
    assert_eq!(stored.single_value().as_u64(), Some(300));

    // Spans whose rows alone take more than the limit, over gRPC.
    let many = spans("expanding", 1, 90_000, now_nanos());
    assert!(many.encoded_len() < 8 << 20);
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    let status = client.export(many).expect_err("over the memory limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// A gauge of `count` data points under a resource with `resource_attribute`.
fn gauge_points(count: u64, resource_attribute: KeyValue) -> ExportMetricsServiceRequest {
    let data_points = (0..count)
        .map(|n| NumberDataPoint { time_unix_nano: now_nanos() + n, value: Some(Value::AsDouble(n as f64)), ..Default::default() })
        .collect();
    let gauge = Metric { name: "expanding".to_owned(), data: Some(Data::Gauge(Gauge { data_points })), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![resource_attribute], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics: vec![gauge], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Parsing JSON takes several times the body's memory, reserved before the parse: under an
/// 8 MiB limit a 3 MB body cannot be parsed, where its rows alone would fit.
#[test]
fn a_json_body_reserves_the_memory_of_its_parse() {
    let collector = Collector::start_with(&[
        "--memory-limit-bytes", "8388608",
        "--max-request-bytes", "4194304",
        "--flush-bytes", "4194304",
    ]);
    let span = |n: u64| {
        serde_json::json!({
            "traceId": format!("{:032x}", n + 1), "spanId": format!("{:016x}", n + 1), "name": "parse",
            "startTimeUnixNano": now_nanos().to_string(), "endTimeUnixNano": (now_nanos() + 1).to_string(),
            "attributes": [{"key": "payload", "value": {"stringValue": "x".repeat(200)}}],
        })
    };
    let request = |spans: Vec<serde_json::Value>| {
        let resource = serde_json::json!({"attributes": [{"key": "service.name", "value": {"stringValue": "json"}}]});
        serde_json::to_vec(&serde_json::json!({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}))
            .expect("serializes")
    };
    let big = request((0..7_000).map(span).collect());
    assert!((2_500_000..4 << 20).contains(&big.len()), "{} bytes", big.len());
    let reply = post(&collector.http_endpoint(), "/v1/traces", JSON, None, &big);
    assert_eq!(reply.status, 413, "{}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("memory limit"));

    // An SDK may omit an empty array's values; such a document gets a second parse that
    // fills them in.
    let mut with_empty_array = span(0);
    with_empty_array["attributes"] = serde_json::json!([{"key": "empty", "value": {"arrayValue": {}}}]);
    let reply = post(&collector.http_endpoint(), "/v1/traces", JSON, None, &request(vec![with_empty_array]));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let stored = collector.sql("SELECT \"SpanAttributes\"['empty'] AS empty FROM otel_traces");
    assert_eq!(stored.single_value().as_str(), Some("[]"));
}

#[test]
fn over_the_memory_limit_ingest_refuses_retryably_until_a_flush_frees_memory() {
    // Each 1.2 MB request reserves about 4 MB of the 8 MiB limit. The memtable never reaches
    // `flush_bytes` (the limit) and never ages into a flush: only the refusals start flushes.
    let collector = Collector::start_with(&[
        "--memory-limit-bytes", "8388608",
        "--max-request-bytes", "2000000",
        "--flush-bytes", "8388608",
        "--flush-interval-secs", "3600",
    ]);
    let big = spans("memory", 0, 15_000, now_nanos());
    assert!(big.encoded_len() > 1_000_000);

    let accepted_until_refused = || {
        for sent in 0..8 {
            let reply = post_traces(&collector.http_endpoint(), &big);
            if reply.status != 200 {
                return (sent, reply);
            }
        }
        panic!("no refusal although memory fills");
    };
    let (accepted_before, refusal) = accepted_until_refused();
    assert_eq!(refusal.status, 503, "{}", String::from_utf8_lossy(&refusal.body));
    assert_eq!(refusal.retry_after.as_deref(), Some("1"));

    // The refusal started a flush: a client that retries gets in.
    poll_until(Duration::from_secs(20), "a retry accepted once the flush has freed memory", || {
        let reply = post_traces(&collector.http_endpoint(), &big);
        if reply.status == 200 { Ok(()) } else { Err(format!("{}", reply.status)) }
    });
    assert!(collector.metric_value("meshlight_pressure_flushes_total").is_some_and(|flushes| flushes >= 1.0));

    // gRPC clients are refused with UNAVAILABLE and RetryInfo.
    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    let status = (0..8)
        .find_map(|_| client.export(big.clone()).err())
        .expect("a refusal once memory fills again");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo in the status details");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    let refused = collector.metric_value(REFUSED_FOR_MEMORY);
    assert!(refused.is_some_and(|items| items >= 30_000.0), "{refused:?}");
    let accepted = collector.sql("SELECT count(*) AS n FROM otel_traces");
    assert!(accepted.single_value().as_u64() > Some(accepted_before * 15_000));
}

/// A refusal while requests in flight, not the memtable, hold the memory starts no flush:
/// it would free little and leave a small file for compaction.
#[test]
fn a_refusal_for_memory_that_requests_in_flight_hold_flushes_nothing() {
    let collector = Collector::start_with(&[
        "--memory-limit-bytes", "8388608",
        "--max-request-bytes", "2000000",
        "--flush-bytes", "8388608",
        "--flush-interval-secs", "3600",
    ]);
    let endpoint = collector.http_endpoint();
    // A few spans in the memtable, so that a flush would have something to write.
    assert_eq!(post_traces(&endpoint, &spans("in-flight", 0, 3, now_nanos())).status, 200);
    // Each reserves about 4 MB of the 8 MiB while it is decoded, and leaves nothing behind:
    // every span has an all-zero trace id and is rejected.
    let mut invalid = spans("in-flight", 1, 15_000, now_nanos());
    for span in &mut invalid.resource_spans[0].scope_spans[0].spans {
        span.trace_id = vec![0; 16];
    }
    poll_until(Duration::from_secs(30), "a refusal while requests are in flight", || {
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| post_traces(&endpoint, &invalid));
            }
        });
        match collector.metric_value(REFUSED_FOR_MEMORY) {
            Some(items) if items > 0.0 => Ok(()),
            items => Err(format!("{items:?} items refused")),
        }
    });
    assert_eq!(collector.metric_value("meshlight_pressure_flushes_total"), Some(0.0));
    assert_eq!(collector.metric_value("meshlight_parquet_files{table=\"otel_traces\"}"), Some(0.0));
    // The requests gave their memory back: a valid one gets in.
    assert_eq!(post_traces(&endpoint, &spans("in-flight", 2, 15_000, now_nanos())).status, 200);
}
