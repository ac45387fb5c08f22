//! Behaviour tests of the `meshlight` binary: one module per behaviour, named for it, all in
//! one test binary so the harness and the binary under test are built once.

mod support;

mod acknowledged_spans_survive_sigkill;
mod alert_rules_match_real_prometheus;
mod alerts_reach_webhooks_and_a_real_alertmanager;
mod bad_input_gets_documented_status;
mod compressed_requests_and_the_sql_cli;
mod corrupt_wal_tail_is_skipped_and_counted;
mod cpu_burn_example_profile_shows_burn_cpu;
mod data_is_queryable_before_flush;
mod latency_alert_fires_on_expected_ticks;
mod notifications_retry_only_what_can_succeed;
mod profiles_are_stored_once_and_served_readably;
mod promql_api_answers_like_prometheus;
mod promql_matches_real_prometheus;
mod sigterm_flushes_and_compaction_joins;
mod spans_become_red_metrics;
mod standalone_alerts_query_a_real_prometheus;

mod otel_python_sdk_roundtrip;
