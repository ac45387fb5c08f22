//! SQL over the store with DataFusion: every table is memtable + Parquet as one table.

mod cache;
mod json;
mod metric_rows;
pub mod prometheus;
mod resources;
mod table;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;

use crate::config::QueryConfig;
use crate::schema::Table;
use crate::store::{METRIC_CATALOG_TABLE, Store};
pub use metric_rows::MetricRows;
use table::{MetricCatalogTable, StoreTable};

/// Why a query produced no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan (unknown table or column, syntax, DDL…).
    #[error("{0}")]
    BadQuery(String),
    /// The query planned but failed while running (including its memory limit).
    #[error("{0}")]
    Execution(String),
    #[error("query exceeded the {0:?} timeout")]
    Timeout(Duration),
    #[error("query returned more than {0} rows; add a LIMIT or narrow the query")]
    TooManyRows(usize),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..) => QueryError::BadQuery(error.to_string()),
            _ => QueryError::Execution(error.to_string()),
        }
    }
}

/// A read that failed in Arrow (outside DataFusion).
impl From<arrow::error::ArrowError> for QueryError {
    fn from(error: arrow::error::ArrowError) -> Self {
        QueryError::Execution(error.to_string())
    }
}

/// A finished query.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// `{"columns": [...], "rows": [[...], ...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        json::to_json(&columns, &self.batches)
    }

    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    pub fn to_arrow_ipc(&self) -> Result<Vec<u8>, arrow::error::ArrowError> {
        let mut bytes = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &self.schema)?;
        for batch in &self.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        drop(writer);
        Ok(bytes)
    }
}

/// Runs read-only SQL against the store's tables.
pub struct SqlEngine {
    context: SessionContext,
    config: QueryConfig,
}

impl SqlEngine {
    pub fn new(store: &Arc<Store>, config: QueryConfig) -> Result<Self, DataFusionError> {
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, usize::from));
        let parquet = &mut session.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        parquet.bloom_filter_on_read = true;
        parquet.enable_page_index = true;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .with_metadata_cache_limit(config.metadata_cache_bytes)
            .with_file_statistics_cache_limit(config.metadata_cache_bytes)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let context = SessionContext::new_with_state(state);
        for table in Table::ALL {
            context.register_table(table.name(), Arc::new(StoreTable::new(table, store.clone())))?;
        }
        context.register_table(METRIC_CATALOG_TABLE, Arc::new(MetricCatalogTable::new(store.clone())))?;
        Ok(Self { context, config })
    }

    /// Runs one read-only statement within the configured timeout and row limit.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.query_with_row_limit(sql, self.config.max_rows).await
    }

    /// Runs one read-only statement within the configured timeout and the given row limit
    /// (the PromQL engine reads with its own sample limit).
    pub async fn query_with_row_limit(&self, sql: &str, max_rows: usize) -> Result<QueryResult, QueryError> {
        let timeout = Duration::from_secs(self.config.timeout_secs);
        match tokio::time::timeout(timeout, self.run(sql, max_rows)).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
    }

    async fn run(&self, sql: &str, max_rows: usize) -> Result<QueryResult, QueryError> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self.context.sql_with_options(sql, read_only).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > max_rows {
                return Err(QueryError::TooManyRows(max_rows));
            }
            batches.push(batch);
        }
        Ok(QueryResult { schema, batches })
    }
}
