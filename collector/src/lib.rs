//! Meshlight collector: OTLP ingest into a durable embedded columnar store, queried with SQL.
//!
//! The data path reads top to bottom: [`ingest`] decodes OTLP and converts it with
//! [`schema`] into Arrow batches; [`store`] makes them durable (WAL), queryable (memtable)
//! and compact (Parquet); [`query`] runs SQL over memtable and files as one table per
//! name; [`profiles`] ingests Pyroscope-style pprof uploads into the same store and reads
//! them back merged; [`api`] serves queries and self-metrics; [`alerting`] evaluates rules through
//! the PromQL engine and writes their results back through ingest; [`server`] wires it
//! all for `meshlight serve`.
//!
//! ```
//! use meshlight_collector::schema::Table;
//!
//! // Every table has the OpenTelemetry Collector ClickHouse exporter's name and columns.
//! assert_eq!(Table::Traces.name(), "otel_traces");
//! assert!(Table::Traces.schema().field_with_name("TraceId").is_ok());
//! ```

pub mod alerting;
pub mod api;
pub mod config;
mod content_hash;
pub mod ingest;
pub mod loadgen;
pub mod profiles;
pub mod promql;
pub mod query;
pub mod schema;
pub mod server;
pub mod spanmetrics;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_data;
