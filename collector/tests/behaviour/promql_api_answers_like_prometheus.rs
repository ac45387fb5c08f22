//! The Prometheus HTTP API answers PromQL over the stored OpenTelemetry metrics, translated
//! to Prometheus names and labels, at `/api/v1` and `/prometheus/api/v1`, with Prometheus's
//! envelope and error types; and Prometheus's own PromQL test scripts pass.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::otlp::{now_nanos, post_traces, spans};
use crate::support::{Collector, encode, poll_until, repo_root, run_to_completion};

/// `GET` on the API, parsed; the status must be `expected`.
fn get_json(collector: &Collector, path: &str, expected: u16) -> Value {
    let (status, body) = collector.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, expected, "GET {path} answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

#[test]
fn span_metrics_are_queryable_with_promql() {
    let mut collector = Collector::start_with(&["--span-metrics-interval-secs", "1"]);
    let reply = post_traces(&collector.http_endpoint(), &spans("checkout", 1, 70, now_nanos()));
    assert_eq!(reply.status, 200);

    // 70 calls over seven span names, summed per service.
    let calls = format!("/api/v1/query?query={}", encode("sum by (service_name) (traces_span_metrics_calls_total)"));
    let result = poll_until(Duration::from_secs(30), "span metrics queryable", || {
        let body = get_json(&collector, &calls, 200);
        let value = &body["data"]["result"][0]["value"][1];
        if value == "70" { Ok(body) } else { Err(format!("{body}")) }
    });
    assert_eq!(result["status"], "success");
    assert_eq!(result["data"]["resultType"], "vector");
    assert_eq!(result["data"]["result"][0]["metric"], serde_json::json!({ "service_name": "checkout" }));

    // The user's latency question, as a range query posted as a form under /prometheus.
    let average = "sum by (service_name, span_name) (rate(traces_span_metrics_duration_seconds_sum[3m])) \
                   / sum by (service_name, span_name) (rate(traces_span_metrics_duration_seconds_count[3m]))";
    let end = now_nanos() / 1_000_000_000 + 5;
    let form = format!("query={}&start={}&end={end}&step=1", encode(average), end - 60);
    let (status, body) = collector.post("/prometheus/api/v1/query_range", "application/x-www-form-urlencoded", &form).expect("POST query_range");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["data"]["resultType"], "matrix");

    // Histograms become cumulative `_bucket` series with `le`, whose +Inf bucket is the count.
    let buckets = format!("/api/v1/query?query={}", encode(r#"sum(traces_span_metrics_duration_seconds_bucket{le="+Inf"})"#));
    assert_eq!(get_json(&collector, &buckets, 200)["data"]["result"][0]["value"][1], "70");
    let quantile = format!("/api/v1/query?query={}", encode("histogram_quantile(0.5, sum by (le) (traces_span_metrics_duration_seconds_bucket))"));
    let median = get_json(&collector, &quantile, 200)["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
    let median = median.expect("a numeric median");
    assert!(median > 0.0 && median <= 0.005, "every span took 1 ms: median {median}");

    // Exemplars: the slowest span of each interval, on the bucket its duration falls in.
    let path = format!("/api/v1/query_exemplars?query={}&start=0&end={end}", encode("histogram_quantile(0.9, rate(traces_span_metrics_duration_seconds_bucket[5m]))"));
    let exemplars = get_json(&collector, &path, 200);
    let series = exemplars["data"].as_array().expect("a list of series");
    assert!(!series.is_empty(), "span metrics carry exemplars: {exemplars}");
    for series in series {
        assert_eq!(series["seriesLabels"]["__name__"], "traces_span_metrics_duration_seconds_bucket", "{series}");
        assert!(series["seriesLabels"]["le"].as_str().is_some_and(|le| le != "+Inf"), "1 ms falls in a finite bucket: {series}");
        for exemplar in series["exemplars"].as_array().expect("exemplars") {
            let trace_id = exemplar["labels"]["trace_id"].as_str().unwrap_or_default();
            assert!(trace_id.starts_with("abababababababab"), "an exemplar names a span that was sent: {exemplar}");
            assert_eq!(exemplar["value"], "0.001", "{exemplar}");
        }
    }

    // Metadata endpoints.
    let names = get_json(&collector, "/api/v1/label/__name__/values", 200);
    for name in ["traces_span_metrics_calls_total", "traces_span_metrics_duration_seconds_bucket", "traces_span_metrics_duration_seconds_count"] {
        assert!(names["data"].as_array().is_some_and(|names| names.iter().any(|n| n == name)), "{name} missing from {names}");
    }
    let labels = get_json(&collector, "/api/v1/labels", 200);
    for label in ["__name__", "job", "service_name", "span_name", "span_kind", "status_code", "le"] {
        assert!(labels["data"].as_array().is_some_and(|labels| labels.iter().any(|n| n == label)), "{label} missing from {labels}");
    }
    let series = get_json(&collector, &format!("/api/v1/series?match[]={}", encode("traces_span_metrics_calls_total")), 200);
    assert_eq!(series["data"].as_array().map(Vec::len), Some(7), "one series per span name: {series}");
    let metadata = get_json(&collector, "/api/v1/metadata?metric=traces_span_metrics_calls_total", 200);
    assert_eq!(metadata["data"]["traces_span_metrics_calls_total"][0]["type"], "counter");
    assert_eq!(get_json(&collector, "/prometheus/api/v1/status/buildinfo", 200)["status"], "success");

    // The metric catalog is rebuilt at start: from the Parquet files after a graceful stop,
    // from the WAL after a crash.
    collector.restart();
    assert_eq!(get_json(&collector, &calls, 200)["data"]["result"][0]["value"][1], "70", "after a restart");
    let reply = post_traces(&collector.http_endpoint(), &spans("cart", 2, 10, now_nanos()));
    assert_eq!(reply.status, 200);
    let cart = format!("/api/v1/query?query={}", encode(r#"sum(traces_span_metrics_calls_total{service_name="cart"})"#));
    poll_until(Duration::from_secs(30), "cart's span metrics queryable", || {
        let body = get_json(&collector, &cart, 200);
        if body["data"]["result"][0]["value"][1] == "10" { Ok(()) } else { Err(format!("{body}")) }
    });
    collector.kill_hard();
    collector.restart();
    assert_eq!(get_json(&collector, &cart, 200)["data"]["result"][0]["value"][1], "10", "after a crash");
}

#[test]
fn query_errors_have_prometheus_types_and_statuses() {
    let collector = Collector::start_with(&["--span-metrics-interval-secs", "1", "--promql-max-samples", "5"]);
    let reply = post_traces(&collector.http_endpoint(), &spans("checkout", 1, 70, now_nanos()));
    assert_eq!(reply.status, 200);
    let error = |path: &str, status: u16, error_type: &str| {
        let body = get_json(&collector, path, status);
        assert_eq!(body["status"], "error", "{path}: {body}");
        assert_eq!(body["errorType"], error_type, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    };
    error(&format!("/api/v1/query?query={}", encode("sum(")), 400, "bad_data");
    error(&format!("/api/v1/query?query={}", encode("no_such_function(up)")), 400, "bad_data");
    error("/api/v1/query", 400, "bad_data");
    error("/api/v1/query_range?query=1&start=10&end=0&step=1", 400, "bad_data");
    error("/api/v1/query_range?query=1&start=0&end=100000&step=1", 400, "bad_data");
    error("/api/v1/query?query=1&time=yesterday", 400, "bad_data");
    // Fewer than a microsecond is always too short.
    error(&format!("/api/v1/query?query={}&timeout=0.000000001", encode("traces_span_metrics_calls_total")), 503, "timeout");
    // Seven series of calls are more than five samples.
    poll_until(Duration::from_secs(30), "the sample limit refuses the query", || {
        let path = format!("/api/v1/query?query={}", encode("traces_span_metrics_calls_total"));
        let (status, body) = collector.get(&path).map_err(|e| e.to_string())?;
        if status == 422 && body.contains("\"execution\"") { Ok(()) } else { Err(format!("{status} {body}")) }
    });
}

#[test]
fn prometheus_promql_test_scripts_pass() {
    let testdata = std::env::var_os("MESHLIGHT_PROMQL_TESTDATA")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("../shared/testdata/promql"));
    assert!(
        testdata.is_dir(),
        "{} is missing: Prometheus's PromQL test scripts live in ../shared/testdata/promql beside the repository \
         (or set MESHLIGHT_PROMQL_TESTDATA)",
        testdata.display()
    );
    let scratch = tempfile::tempdir().expect("scratch directory");
    let finished = run_to_completion(
        Command::new(env!("CARGO_BIN_EXE_meshlight")).arg("promqltest").arg("--verbose").arg(&testdata),
        Duration::from_secs(300),
        scratch.path(),
        "promqltest",
    );
    println!("{}", finished.stdout);
    assert!(finished.status.success(), "a supported case failed\n{}", finished.report());
    let total = finished.stdout.lines().find(|l| l.starts_with("total")).expect("a total line");
    let ran: usize = total.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("cases run");
    assert!(ran >= 800, "the scripts hold over 800 cases without native histograms, {ran} ran");
}
