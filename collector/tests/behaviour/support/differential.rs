//! Queries asked of Meshlight and of a real Prometheus holding the same
//! [`MetricHistory`](super::metric_history::MetricHistory), and the comparison of their
//! answers. The corpus stays within what Prometheus 2.42 and current PromQL agree on; the
//! differential test lists the differences it steers around.

use std::collections::BTreeMap;

use serde_json::Value;

/// Relative tolerance between two answers: summation order differs between engines (and
/// current Prometheus sums with Kahan compensation, 2.42 did not).
const RELATIVE_TOLERANCE: f64 = 1e-9;
/// Below this, two values are equal whatever their ratio (a slope of 1e-18 is 0).
const ABSOLUTE_TOLERANCE: f64 = 1e-9;

/// The query corpus. `at_seconds` is the time for the `@` modifier queries.
pub(crate) fn corpus(at_seconds: &str) -> Vec<String> {
    let average_latency_per_service_and_method = "sum by (service_name, rpc_method) (rate(rpc_server_duration_seconds_sum[3m])) \
        / sum by (service_name, rpc_method) (rate(rpc_server_duration_seconds_count[3m]))";
    let mut queries: Vec<String> = [
        // Selectors and matchers.
        "rpc_server_requests_total",
        r#"rpc_server_requests_total{service_name="checkout"}"#,
        r#"rpc_server_requests_total{rpc_method=~"Get.*|List.*"}"#,
        r#"rpc_server_requests_total{rpc_method!="Get0", outcome="error"}"#,
        r#"rpc_server_requests_total{job!~"shop/(cart|checkout)"}"#,
        r#"rpc_server_requests_total{service_name=~"cart|cata.*", outcome="ok"}"#,
        r#"rpc_server_duration_seconds_count{service_name!~"cart|catalog"}"#,
        r#"queue_depth{service_name!="checkout"}"#,
        r#"{__name__=~"queue_depth|process_memory_usage_bytes", service_name="cart"}"#,
        "rpc_server_duration_seconds_count",
        "process_memory_usage_bytes offset 10m",
        // Counters: rates, resets.
        "rate(rpc_server_requests_total[5m])",
        "irate(rpc_server_requests_total[1m])",
        "increase(rpc_server_requests_total[10m])",
        "resets(rpc_server_requests_total[30m])",
        "rate(rpc_server_requests_total[5m] offset 5m)",
        "sum by (service_name) (rate(rpc_server_requests_total[5m]))",
        "sum without (instance, job) (rate(rpc_server_requests_total[2m]))",
        "sum(rate(rpc_server_requests_total[5m])) by (outcome)",
        // Latency: the user's question, and quantiles over classic histograms.
        average_latency_per_service_and_method,
        "rate(rpc_server_duration_seconds_sum[3m]) / rate(rpc_server_duration_seconds_count[3m])",
        "histogram_quantile(0.99, sum by (service_name, le) (rate(rpc_server_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.5, sum by (le) (rate(rpc_server_duration_seconds_bucket[5m])))",
        r#"histogram_quantile(0.9, rate(rpc_server_duration_seconds_bucket{rpc_method="Create0"}[10m]))"#,
        "sum by (le) (increase(rpc_server_duration_seconds_bucket[10m]))",
        // Error ratio, one-to-one and many-to-one matching.
        r#"sum by (service_name, rpc_method) (rate(rpc_server_requests_total{outcome="error"}[5m])) / sum by (service_name, rpc_method) (rate(rpc_server_requests_total[5m]))"#,
        r#"rate(rpc_server_requests_total{outcome="error"}[5m]) / ignoring (outcome) rate(rpc_server_duration_seconds_count[5m])"#,
        "rate(rpc_server_requests_total[5m]) / ignoring (outcome) group_left sum without (outcome) (rate(rpc_server_requests_total[5m]))",
        "sum without (outcome) (rate(rpc_server_requests_total[5m])) / ignoring (outcome) group_right rate(rpc_server_requests_total[5m])",
        "queue_depth * on (service_name) group_left (rpc_method) rpc_server_requests_total{outcome=\"error\", rpc_method=\"Get0\"}",
        // Gauges over time.
        "delta(process_memory_usage_bytes[5m])",
        "idelta(process_memory_usage_bytes[5m])",
        "deriv(process_memory_usage_bytes[10m])",
        "predict_linear(process_memory_usage_bytes[10m], 3600)",
        "changes(queue_depth[10m])",
        "avg_over_time(queue_depth[5m])",
        "min_over_time(queue_depth[5m])",
        "max_over_time(queue_depth[5m])",
        "sum_over_time(queue_depth[5m])",
        "count_over_time(queue_depth[5m])",
        "stddev_over_time(process_memory_usage_bytes[10m])",
        "stdvar_over_time(queue_depth[10m])",
        "quantile_over_time(0.9, queue_depth[10m])",
        "last_over_time(queue_depth[10m])",
        "present_over_time(queue_depth[2m])",
        r#"absent_over_time(queue_depth{service_name="catalog"}[1m])"#,
        r#"absent(queue_depth{service_name="nowhere"})"#,
        // Aggregations.
        "avg by (service_name) (queue_depth)",
        "count by (rpc_method) (rpc_server_requests_total)",
        "group by (service_name) (rpc_server_requests_total)",
        "max by (job) (queue_depth) - min by (job) (queue_depth)",
        "stddev by (outcome) (rate(rpc_server_requests_total[5m]))",
        "stdvar(process_memory_usage_bytes)",
        // Over sums of latencies: request counts tie, and Prometheus breaks ties its own way.
        "topk(3, rate(rpc_server_duration_seconds_sum[5m]))",
        "bottomk(2, process_memory_usage_bytes)",
        "quantile(0.75, rate(rpc_server_requests_total[5m]))",
        "count_values(\"depth\", queue_depth)",
        "count(count by (service_name) (queue_depth))",
        // Binary operators, comparisons and sets.
        "rpc_server_requests_total > bool 10000",
        "process_memory_usage_bytes > 2e8",
        "sum(queue_depth) * 2 + 1",
        "-queue_depth % 3",
        "queue_depth ^ 2 == bool 25",
        "queue_depth and on (service_name) (process_memory_usage_bytes > 2e8)",
        "queue_depth unless on (service_name) (process_memory_usage_bytes > 2e8)",
        r#"queue_depth or on (service_name) rpc_server_requests_total{outcome="error", rpc_method="Get0"}"#,
        // Functions.
        r#"label_replace(queue_depth, "svc", "$1", "job", "shop/(.*)")"#,
        r#"label_join(queue_depth, "where", ":", "job", "instance")"#,
        "sort_desc(sum by (service_name) (rate(rpc_server_requests_total[5m])))",
        "sort(process_memory_usage_bytes)",
        "clamp(queue_depth, 2, 8)",
        "clamp_min(queue_depth, 3) + clamp_max(queue_depth, 6)",
        "abs(queue_depth - 5)",
        "round(process_memory_usage_bytes / 1e6, 0.5)",
        "ceil(process_memory_usage_bytes / 1e6) - floor(process_memory_usage_bytes / 1e6)",
        "sqrt(queue_depth) + ln(queue_depth + 1) + exp(queue_depth / 10)",
        "sgn(queue_depth - 5)",
        "timestamp(queue_depth)",
        "hour(timestamp(queue_depth)) * 60 + minute(timestamp(queue_depth))",
        "scalar(sum(queue_depth)) * vector(2)",
        "time() - timestamp(process_memory_usage_bytes)",
        // Subqueries.
        "max_over_time(rate(rpc_server_requests_total[1m])[10m:1m])",
        "avg_over_time(queue_depth[10m:30s])",
        "rate(rpc_server_requests_total[5m:1m])",
    ]
    .map(str::to_owned)
    .to_vec();
    queries.push(format!("process_memory_usage_bytes @ {at_seconds}"));
    queries.push(format!("sum by (service_name) (rate(rpc_server_requests_total[5m] @ {at_seconds}))"));
    queries
}

/// An API answer, whatever its status, as JSON.
pub(crate) fn answer(response: Result<(u16, String), ureq::Error>) -> Result<Value, String> {
    let (_, body) = response.map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {}", body.chars().take(500).collect::<String>()))
}

/// Whether the order of an instant vector is part of the answer.
pub(crate) fn is_ordered(query: &str) -> bool {
    query.starts_with("sort")
}

/// How much an answer held, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Size {
    pub(crate) series: usize,
    pub(crate) points: usize,
}

/// Compares two Prometheus API answers (the whole JSON envelopes) of the same query.
/// Series are matched by label set; values must agree within tolerance, NaN equals NaN.
pub(crate) fn compare(ours: &Value, theirs: &Value, ordered: bool) -> Result<Size, String> {
    for (who, answer) in [("meshlight", ours), ("prometheus", theirs)] {
        if answer["status"] != "success" {
            return Err(format!("{who} failed: {answer}"));
        }
    }
    let (ours, theirs) = (&ours["data"], &theirs["data"]);
    if ours["resultType"] != theirs["resultType"] {
        return Err(format!("result types differ: {} vs {}", ours["resultType"], theirs["resultType"]));
    }
    match theirs["resultType"].as_str() {
        Some("scalar" | "string") => same_point(&ours["result"], &theirs["result"]).map(|()| Size { series: 1, points: 1 }),
        Some("vector" | "matrix") => compare_series(&ours["result"], &theirs["result"], ordered),
        other => Err(format!("unexpected result type {other:?}")),
    }
}

fn compare_series(ours: &Value, theirs: &Value, ordered: bool) -> Result<Size, String> {
    let (ours, theirs) = (by_labels(ours)?, by_labels(theirs)?);
    let (our_keys, their_keys): (Vec<_>, Vec<_>) = (ours.iter().map(|(k, _)| k).collect(), theirs.iter().map(|(k, _)| k).collect());
    let (mut our_sorted, mut their_sorted) = (our_keys.clone(), their_keys.clone());
    our_sorted.sort();
    their_sorted.sort();
    if our_sorted != their_sorted {
        let missing: Vec<_> = their_sorted.iter().filter(|k| !our_sorted.contains(k)).collect();
        let extra: Vec<_> = our_sorted.iter().filter(|k| !their_sorted.contains(k)).collect();
        return Err(format!("series differ: missing {missing:?}, extra {extra:?}"));
    }
    if ordered && our_keys != their_keys {
        return Err(format!("order differs: {our_keys:?} vs {their_keys:?}"));
    }
    let theirs: BTreeMap<_, _> = theirs.iter().map(|(k, v)| (k, v)).collect();
    let mut size = Size::default();
    for (labels, our_points) in &ours {
        let their_points = theirs[labels];
        if our_points.len() != their_points.len() {
            return Err(format!("{labels}: {} points vs {}", our_points.len(), their_points.len()));
        }
        for (ours, theirs) in our_points.iter().zip(their_points.iter()) {
            same_point(ours, theirs).map_err(|e| format!("{labels}: {e}"))?;
        }
        size.series += 1;
        size.points += our_points.len();
    }
    Ok(size)
}

/// Each series of a vector or matrix as (labels, points), in answer order.
fn by_labels(result: &Value) -> Result<Vec<(String, Vec<Value>)>, String> {
    let series = result.as_array().ok_or_else(|| format!("not a list: {result}"))?;
    series
        .iter()
        .map(|s| {
            let points = match (&s["values"], &s["value"]) {
                (Value::Array(values), _) => values.clone(),
                (_, value @ Value::Array(_)) => vec![value.clone()],
                _ => return Err(format!("a series without points: {s}")),
            };
            Ok((s["metric"].to_string(), points))
        })
        .collect()
}

/// `[time, "value"]` pairs: the same time, and values within tolerance.
fn same_point(ours: &Value, theirs: &Value) -> Result<(), String> {
    if ours[0].as_f64() != theirs[0].as_f64() {
        return Err(format!("times differ: {ours} vs {theirs}"));
    }
    let parse = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    let (Some(a), Some(b)) = (parse(ours), parse(theirs)) else {
        return if ours[1] == theirs[1] { Ok(()) } else { Err(format!("{ours} vs {theirs}")) };
    };
    let close = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ABSOLUTE_TOLERANCE.max(RELATIVE_TOLERANCE * a.abs().max(b.abs()));
    if close { Ok(()) } else { Err(format!("values differ: {ours} vs {theirs}")) }
}
