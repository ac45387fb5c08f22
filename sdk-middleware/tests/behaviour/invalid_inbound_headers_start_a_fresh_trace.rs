use meshlight_middleware::Settings;

use crate::support::{Collector, InstrumentedMesh, get};

const BOGUS_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn malformed_context_headers_never_fail_the_request() {
    let collector = Collector::start();
    let mesh = InstrumentedMesh::start(&collector, &Settings::default(), None);
    let oversize_baggage = format!("tenant=acme,padding={}", "x".repeat(9000));
    let cases: [(&str, &[(&str, &str)]); 6] = [
        (
            "truncated traceparent",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9",
            )],
        ),
        (
            "all-zero trace id",
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
        ),
        (
            "uppercase hex",
            &[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            )],
        ),
        (
            "version ff",
            &[(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
        ),
        ("oversize baggage", &[("baggage", &oversize_baggage)]),
        (
            "bad percent-encoding",
            &[("baggage", "tenant=%E0%A4%A,other=%ZZ")],
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (case, headers) in cases {
        let (status, body) = get(&mesh.url("/checkout/x"), headers);
        assert_eq!(status, 200, "{case}: {body}");
        let hops = body["hops"].as_array().expect("hop reports");
        let trace_id = hops[0]["trace_id"].as_str().expect("trace id");
        assert_eq!(trace_id.len(), 32, "{case}: a fresh, valid trace");
        assert_ne!(trace_id, BOGUS_TRACE, "{case}");
        assert!(
            seen.insert(trace_id.to_owned()),
            "{case}: every request starts its own trace"
        );
        assert!(
            hops.iter()
                .all(|hop| hop["trace_id"] == trace_id && hop["tenant"] == ""),
            "{case}: {body}"
        );
    }
    mesh.stop_and_flush();
}
