//! One DataFusion table per store table: memtable batches and Parquet files, unioned.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::resources::ResolveResources;
use crate::schema::Table;
use crate::store::{Store, files_as_table, metric_catalog_schema};

/// A store table as DataFusion sees it. Each scan takes a fresh snapshot, so a query sees
/// every acknowledged row exactly once, whether it is still in memory or already flushed.
#[derive(Clone)]
pub(crate) struct StoreTable {
    table: Table,
    store: Arc<Store>,
}

impl std::fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTable").field("table", &self.table.name()).finish()
    }
}

impl StoreTable {
    pub(crate) fn new(table: Table, store: Arc<Store>) -> Self {
        Self { table, store }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes row groups and pages with them (statistics, page index, bloom
        // filter); DataFusion still applies every filter to the rows that come back.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.store.snapshot(self.table);
        let resolve = ResolveResources::plan(&self.schema(), projection, filters)?;
        let (projection, filters) = (resolve.source_projection(), resolve.source_filters());
        let mut plans = Vec::with_capacity(2);

        let memtable = MemTable::try_new(self.schema(), vec![snapshot.batches])?;
        plans.push(memtable.scan(state, projection, filters, limit).await?);

        if !snapshot.files.is_empty() {
            // The session's statistics cache outlives this scan's table: a file's statistics
            // are read once, not at every query.
            let statistics = state.runtime_env().cache_manager.get_file_statistic_cache();
            let files = files_as_table(self.table, &snapshot.files)?.with_cache(statistics);
            plans.push(files.scan(state, projection, filters, limit).await?);
        }
        resolve.over(UnionExec::try_new(plans)?, snapshot.resources)
    }
}

/// The store's metric catalog (which metrics exist, their kind and time span) as a table.
#[derive(Clone)]
pub(crate) struct MetricCatalogTable {
    store: Arc<Store>,
}

impl std::fmt::Debug for MetricCatalogTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricCatalogTable")
    }
}

impl MetricCatalogTable {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl TableProvider for MetricCatalogTable {
    fn schema(&self) -> SchemaRef {
        metric_catalog_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let catalog = self.store.metric_catalog()?;
        MemTable::try_new(self.schema(), vec![vec![catalog]])?.scan(state, projection, filters, limit).await
    }
}
