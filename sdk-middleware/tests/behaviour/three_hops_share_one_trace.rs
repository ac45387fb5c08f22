use meshlight_middleware::{DURATION_BUCKETS, Settings};
use serde_json::{Value, json};

use crate::support::{Collector, InstrumentedMesh, PythonPeer, get, text};

#[test]
fn one_trace_links_every_hop_and_baggage_and_lane_leave_the_third_hop() {
    let collector = Collector::start();
    let (_callee, upstream) = PythonPeer::callee();
    let mesh = InstrumentedMesh::start(&collector, &Settings::default(), Some(upstream));

    let (status, body) = get(
        &mesh.url("/checkout/widget"),
        &[("x-asm-prefer-tag", "blue"), ("baggage", "tenant=acme")],
    );
    assert_eq!(status, 200, "{body}");
    let hops = body["hops"].as_array().expect("hop reports");
    let services: Vec<&str> = hops
        .iter()
        .map(|hop| hop["service"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(services, ["gateway", "orders", "inventory"]);
    let trace_id = hops[0]["trace_id"].as_str().expect("trace id").to_owned();
    assert_eq!(trace_id.len(), 32);
    for hop in hops {
        assert_eq!(
            (&hop["trace_id"], &hop["lane"], &hop["tenant"]),
            (&json!(trace_id), &json!("blue"), &json!("acme")),
            "{hop}"
        );
    }
    // The Python SDK, called by inventory from a spawned task, saw the same trace, the
    // baggage and the lane header.
    assert_eq!(hops[2]["upstream_status"], 200);
    let callee: Value = serde_json::from_str(hops[2]["upstream_body"].as_str().expect("body"))
        .expect("callee JSON");
    assert_eq!(callee["trace_id"], json!(trace_id));
    assert_eq!(callee["sampled"], true);
    assert_eq!(callee["lane"], "blue");
    assert_eq!(
        callee["baggage"],
        json!({"tenant": "acme", "x-asm-prefer-tag": "blue"})
    );

    mesh.stop_and_flush();

    let spans = collector.wait_for_rows(
        r#"SELECT "ServiceName", "SpanName", "SpanKind", "SpanId", "ParentSpanId", "TraceId", "SpanAttributes" FROM otel_traces ORDER BY "Timestamp""#,
        6,
    );
    let shape: Vec<(&str, &str, &str)> = spans
        .iter()
        .map(|span| {
            (
                text(span, "ServiceName"),
                text(span, "SpanKind"),
                text(span, "SpanName"),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("gateway", "Server", "GET /checkout/{item}"),
            ("gateway", "Client", "demo.Orders/Place"),
            ("orders", "Server", "demo.Orders/Place"),
            ("orders", "Client", "demo.Inventory/Reserve"),
            ("inventory", "Server", "demo.Inventory/Reserve"),
            ("inventory", "Client", "GET"),
        ]
    );
    assert_eq!(
        text(&spans[0], "ParentSpanId"),
        "",
        "the gateway starts the trace"
    );
    for pair in spans.windows(2) {
        assert_eq!(
            text(&pair[1], "ParentSpanId"),
            text(&pair[0], "SpanId"),
            "{} → {}",
            text(&pair[0], "SpanName"),
            text(&pair[1], "SpanName")
        );
    }
    assert!(spans.iter().all(|span| text(span, "TraceId") == trace_id));
    assert_eq!(
        callee["parent_span_id"],
        json!(text(&spans[5], "SpanId")),
        "the callee's parent is inventory's client span"
    );

    let attributes = |index: usize| spans[index]["SpanAttributes"].clone();
    assert_eq!(attributes(0)["http.route"], "/checkout/{item}");
    assert_eq!(attributes(0)["http.response.status_code"], "200");
    assert_eq!(attributes(2)["rpc.system.name"], "grpc");
    assert_eq!(attributes(2)["rpc.method"], "demo.Orders/Place");
    assert_eq!(attributes(2)["rpc.response.status_code"], "OK");
    assert!(
        spans
            .iter()
            .all(|span| span["SpanAttributes"]["meshlight.lane"] == "blue")
    );

    let metrics = collector.wait_for_rows(
        r#"SELECT "ServiceName", "MetricName", "MetricUnit", "Attributes", "Count", "ExplicitBounds" FROM otel_metrics_histogram ORDER BY "ServiceName", "MetricName""#,
        6,
    );
    let series: Vec<(&str, &str)> = metrics
        .iter()
        .map(|row| (text(row, "ServiceName"), text(row, "MetricName")))
        .collect();
    assert_eq!(
        series,
        [
            ("gateway", "http.server.request.duration"),
            ("gateway", "rpc.client.call.duration"),
            ("inventory", "http.client.request.duration"),
            ("inventory", "rpc.server.call.duration"),
            ("orders", "rpc.client.call.duration"),
            ("orders", "rpc.server.call.duration"),
        ]
    );
    for row in &metrics {
        assert_eq!(
            (text(row, "MetricUnit"), &row["Count"]),
            ("s", &json!(1)),
            "{row:?}"
        );
        assert_eq!(
            row["ExplicitBounds"],
            json!(DURATION_BUCKETS),
            "semantic-convention buckets"
        );
        assert_eq!(row["Attributes"]["meshlight.lane"], "blue", "{row:?}");
    }
    assert_eq!(metrics[0]["Attributes"]["http.route"], "/checkout/{item}");
    assert_eq!(metrics[5]["Attributes"]["rpc.method"], "demo.Orders/Place");
    assert_eq!(metrics[5]["Attributes"]["rpc.response.status_code"], "OK");
}
