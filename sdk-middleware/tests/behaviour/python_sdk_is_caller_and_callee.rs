use meshlight_middleware::Settings;
use serde_json::{Value, json};

use crate::support::{Collector, InstrumentedMesh, PythonPeer, text};

/// The Python SDK calls the gateway: its traceparent and baggage are honoured through both
/// gRPC hops, and the Python callee behind inventory reads what the Rust client propagated.
#[test]
fn python_traceparent_and_baggage_are_honoured_end_to_end() {
    let collector = Collector::start();
    let (_callee, upstream) = PythonPeer::callee();
    let mesh = InstrumentedMesh::start(&collector, &Settings::default(), Some(upstream));

    let caller = PythonPeer::call(&mesh.url("/checkout/gadget"), "green");
    let trace_id = caller["trace_id"]
        .as_str()
        .expect("caller trace id")
        .to_owned();
    let hops = caller["response"]["hops"].as_array().expect("hop reports");
    for hop in hops {
        assert_eq!(
            (&hop["trace_id"], &hop["tenant"], &hop["lane"]),
            (&json!(trace_id), &json!("python"), &json!("green"))
        );
    }
    let callee: Value = serde_json::from_str(hops[2]["upstream_body"].as_str().expect("body"))
        .expect("callee JSON");
    assert_eq!(callee["trace_id"], json!(trace_id));
    assert_eq!(callee["baggage"]["tenant"], "python");
    assert_eq!(callee["lane"], "green");

    mesh.stop_and_flush();
    let query = format!(
        r#"SELECT "ParentSpanId" FROM otel_traces WHERE "ServiceName" = 'gateway' AND "SpanKind" = 'Server' AND "TraceId" = '{trace_id}'"#
    );
    let gateway = collector.wait_for_rows(&query, 1);
    assert_eq!(
        text(&gateway[0], "ParentSpanId"),
        caller["span_id"].as_str().expect("caller span id")
    );
}
