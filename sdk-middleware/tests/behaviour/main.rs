//! Behaviour of the middleware across real hops: the demo mesh's three services, the real
//! collector (in process), and the OpenTelemetry Python SDK as a peer. One test binary; each
//! module is named by the behaviour it shows.

// The demo's services are the system under test; the example and these tests share them.
#[path = "../../examples/mesh_demo/services.rs"]
#[allow(
    dead_code,
    reason = "the example uses parts of its services module that the tests do not"
)]
mod services;
mod support;

mod b3_from_an_envoy_style_caller_continues_the_trace;
mod invalid_inbound_headers_start_a_fresh_trace;
mod metric_series_stay_under_the_cap;
mod python_sdk_is_caller_and_callee;
mod span_profiles_hold_only_samples_taken_inside_the_span;
mod three_hops_share_one_trace;
