use meshlight_middleware::Settings;

use crate::support::{Collector, InstrumentedMesh, get, text};

/// Envoy (Istio's sidecar) forwards Zipkin's multi-header B3 by default.
#[test]
fn envoy_b3_headers_continue_the_same_trace() {
    let collector = Collector::start();
    let mesh = InstrumentedMesh::start(&collector, &Settings::default(), None);

    let envoy = [
        ("x-request-id", "5d8f1c3e-7a2b-4c1d-9e0f-123456789abc"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ];
    let (status, body) = get(&mesh.url("/checkout/b3"), &envoy);
    assert_eq!(status, 200, "{body}");
    for hop in body["hops"].as_array().expect("hop reports") {
        assert_eq!(hop["trace_id"], "80f198ee56343ba864fe8b2a57d3eff7", "{hop}");
    }

    let (status, body) = get(
        &mesh.url("/checkout/b3-single"),
        &[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["hops"][2]["trace_id"], "0000000000000000a3ce929d0e0e4736",
        "64-bit ids are left-padded"
    );

    mesh.stop_and_flush();
    let gateway = collector.wait_for_rows(
        r#"SELECT "ParentSpanId" FROM otel_traces WHERE "ServiceName" = 'gateway' AND "SpanKind" = 'Server' AND "TraceId" = '80f198ee56343ba864fe8b2a57d3eff7'"#,
        1,
    );
    assert_eq!(text(&gateway[0], "ParentSpanId"), "e457b5a2e4d86bd1");
}
