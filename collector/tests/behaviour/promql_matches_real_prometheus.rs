//! Differential test against a real Prometheus 2.42 (the Debian package): the same samples,
//! loaded into Prometheus as OpenMetrics through `promtool tsdb create-blocks-from
//! openmetrics` and into Meshlight as OTLP over HTTP, give the same answers to a corpus of
//! PromQL queries, asked as range queries and as instant queries.

use std::time::Duration;

use serde_json::json;

use crate::support::differential::{answer, compare, corpus, is_ordered};
use crate::support::metric_history::{MetricHistory, seconds};
use crate::support::otlp::now_nanos;
use crate::support::prometheus::Prometheus;
use crate::support::{Collector, encode, poll_until};

/// Where Prometheus 2.42 and current PromQL (which Meshlight follows) differ, and how the
/// corpus and the history steer around each difference. Printed by the test.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "range and lookback windows are closed on the left in 2.42 and open since 3.0, so a sample exactly at `t - range` counts in 2.42 only",
        "no sample lies on a window boundary: samples sit at a quarter second, queries at half seconds and subquery steps at whole minutes",
    ),
    (
        "`rate` and `increase` of a counter that starts inside the window: 2.42 first shortens the extrapolation towards the \
         window start to where the counter would be zero, then extrapolates by that if it is under 1.1 sample intervals; \
         current PromQL first picks the gap or half an interval, then caps it at the zero point, so it extrapolates less",
        "queries start 15 minutes after the first samples (the counter reset half-way has no zero point to extrapolate to: \
         its window starts before the reset)",
    ),
    (
        "functions added after 2.42: `sort_by_label`, `sort_by_label_desc`, `mad_over_time`, `first_over_time`, `ts_of_*_over_time`, \
         `limitk`, `limit_ratio`, `info`, and `holt_winters` renamed `double_exponential_smoothing`",
        "not in the corpus; Prometheus's own test scripts cover them (prometheus_promql_test_scripts_pass)",
    ),
    (
        "`sum`, `avg`, `sum_over_time` and `avg_over_time` add with Kahan compensation since 2.50; 2.42 adds plainly",
        "values are compared with a relative tolerance of 1e-9",
    ),
    ("the regex `.` matches a newline since 3.0", "no label value holds a newline"),
    (
        "3.0 normalises the `le` and `quantile` values of scraped classic histograms and summaries (`1` becomes `1.0`)",
        "a scrape-time change: both sides hold the same `le` strings",
    ),
    ("native histograms and their functions", "the history holds classic histograms only, as OTLP explicit-bucket histograms are"),
];

#[test]
fn promql_answers_match_a_real_prometheus() {
    let collector = Collector::start();
    // An hour of three services with five methods each, ending about five minutes ago.
    let now_ms = (now_nanos() / 1_000_000) as i64;
    let start_ms = (now_ms / 60_000 - 65) * 60_000;
    let history = MetricHistory::new(3, 5, start_ms, 240);

    let prometheus = Prometheus::start_with_history(&history, collector.scratch_dir());
    history.export_to(&collector.http_endpoint());

    // Both hold every sample before any query is compared.
    let end = seconds(history.end_ms() + 500);
    let all_samples = format!("/api/v1/query?query={}&time={end}", encode(&MetricHistory::sample_count_query("2h")));
    let expected = history.sample_count().to_string();
    poll_until(Duration::from_secs(30), "Meshlight holds every sample", || {
        let count = answer(collector.get(&all_samples))?;
        if count["data"]["result"][0]["value"][1] == expected.as_str() { Ok(()) } else { Err(count.to_string()) }
    });
    let count = answer(prometheus.get(&all_samples)).expect("Prometheus answers");
    assert_eq!(count["data"]["result"][0]["value"][1], expected.as_str(), "Prometheus holds every sample: {count}");

    println!("known differences between Prometheus 2.42 and current PromQL, and what this test does about them:");
    for (difference, handling) in KNOWN_DIFFERENCES {
        println!("- {difference}\n  -> {handling}");
    }
    let (range_start, range_end) = (seconds(start_ms + 15 * 60_000 + 500), seconds(start_ms + 60 * 60_000 + 500));
    let instant = seconds(start_ms + 50 * 60_000 + 500);
    let queries = corpus(&seconds(start_ms + 30 * 60_000 + 500));
    assert!(queries.len() >= 50, "the corpus holds {} queries", queries.len());
    let mut failures = Vec::new();
    println!("{:<9} {:>7} {:>7}  query", "kind", "series", "points");
    for query in &queries {
        let forms = [
            ("range", format!("/api/v1/query_range?query={}&start={range_start}&end={range_end}&step=60", encode(query)), false),
            ("instant", format!("/api/v1/query?query={}&time={instant}", encode(query)), is_ordered(query)),
        ];
        let mut compared_anything = false;
        for (kind, path, ordered) in forms {
            let answers = answer(collector.get(&path)).and_then(|ours| Ok((ours, answer(prometheus.get(&path))?)));
            match answers.and_then(|(ours, theirs)| compare(&ours, &theirs, ordered)) {
                Ok(size) => {
                    compared_anything |= size.points > 0;
                    println!("{kind:<9} {:>7} {:>7}  {query}", size.series, size.points);
                }
                Err(difference) => {
                    println!("{kind:<9} {:>15}  {query}\n          {difference}", "DIFFERENT");
                    failures.push(format!("{kind} {query}: {difference}"));
                }
            }
        }
        if !compared_anything {
            failures.push(format!("{query}: empty in both forms, so it compares nothing"));
        }
    }
    assert!(failures.is_empty(), "{} of {} queries differ from Prometheus:\n{}", failures.len(), queries.len(), failures.join("\n"));
}

/// An instant-vector answer with one series per `(job, value)`.
fn vector(series: &[(&str, &str)]) -> serde_json::Value {
    let result: Vec<_> = series.iter().map(|(job, value)| json!({ "metric": { "job": job }, "value": [10.5, value] })).collect();
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } })
}

#[test]
fn answers_that_differ_are_told_apart() {
    let one = vector(&[("a", "1"), ("b", "2")]);
    assert_eq!(compare(&one, &vector(&[("b", "2"), ("a", "1.0000000000001")]), false).map(|size| size.points), Ok(2));
    assert!(compare(&one, &vector(&[("a", "1.001"), ("b", "2")]), false).is_err(), "values");
    assert!(compare(&one, &vector(&[("a", "1"), ("c", "2")]), false).is_err(), "labels");
    assert!(compare(&one, &vector(&[("a", "1")]), false).is_err(), "series count");
    assert!(compare(&one, &vector(&[("b", "2"), ("a", "1")]), true).is_err(), "order");
    assert!(compare(&vector(&[("a", "NaN")]), &vector(&[("a", "NaN")]), false).is_ok(), "NaN");
    let failed = json!({ "status": "error", "errorType": "bad_data", "error": "parse error" });
    assert!(compare(&failed, &failed, false).is_err(), "errors are not answers");
}
