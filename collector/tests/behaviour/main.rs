//! Behaviour tests of the `meshlight` binary: one module per behaviour, named for it, all in
//! one test binary so the harness and the binary under test are built once.

mod support;

mod acknowledged_spans_survive_sigkill;
mod bad_input_gets_documented_status;
mod compressed_requests_and_the_sql_cli;
mod corrupt_wal_tail_is_skipped_and_counted;
mod data_is_queryable_before_flush;
mod sigterm_flushes_and_compaction_merges;
mod promql_api_answers_like_prometheus;
mod promql_matches_real_prometheus;
mod spans_become_red_metrics;

mod otel_python_sdk_roundtrip;
