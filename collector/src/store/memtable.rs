//! Batches that are in the WAL but not yet in Parquet, queryable next to the files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::min;
use arrow::record_batch::RecordBatch;

use super::catalog::{event_times, hour_of};
use crate::schema::Table;

/// The batches between two WAL rotations. Once frozen it is immutable and flushed whole.
#[derive(Debug)]
pub(crate) struct Generation {
    /// WAL segments up to and including this one hold this generation's data (and nothing
    /// newer), so they can be deleted once it is in Parquet. Set when frozen.
    pub(crate) through_segment: u64,
    pub(crate) tables: BTreeMap<Table, Vec<RecordBatch>>,
    pub(crate) bytes: usize,
    started: Instant,
}

impl Default for Generation {
    fn default() -> Self {
        Self { through_segment: 0, tables: BTreeMap::new(), bytes: 0, started: Instant::now() }
    }
}

/// The active generation and those being flushed.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    active: Generation,
    flushing: Vec<Arc<Generation>>,
}

impl Memtable {
    pub(crate) fn insert(&mut self, table: Table, batch: RecordBatch) {
        if self.active.tables.is_empty() {
            self.active.started = Instant::now();
        }
        self.active.bytes += batch.get_array_memory_size();
        self.active.tables.entry(table).or_default().push(batch);
    }

    /// Arrow bytes held, frozen generations included.
    pub(crate) fn bytes(&self) -> usize {
        self.active.bytes + self.flushing.iter().map(|g| g.bytes).sum::<usize>()
    }

    pub(crate) fn active_bytes(&self) -> usize {
        self.active.bytes
    }

    /// How long the oldest unfrozen data has been waiting, if there is any.
    pub(crate) fn active_age(&self) -> Option<Duration> {
        (!self.active.tables.is_empty()).then(|| self.active.started.elapsed())
    }

    /// Freezes the active generation for flushing; `None` if it holds nothing.
    pub(crate) fn freeze(&mut self, through_segment: u64) -> Option<Arc<Generation>> {
        if self.active.tables.is_empty() {
            return None;
        }
        let mut generation = std::mem::take(&mut self.active);
        generation.through_segment = through_segment;
        let generation = Arc::new(generation);
        self.flushing.push(generation.clone());
        Some(generation)
    }

    /// Drops a generation whose data is now in Parquet.
    pub(crate) fn flushed(&mut self, generation: &Arc<Generation>) {
        self.flushing.retain(|g| !Arc::ptr_eq(g, generation));
    }

    /// Every batch of `table`, oldest first.
    pub(crate) fn batches(&self, table: Table) -> Vec<RecordBatch> {
        self.generations().filter_map(|g| g.tables.get(&table)).flatten().cloned().collect()
    }

    /// The partition hour of its oldest row of any table.
    pub(crate) fn oldest_hour(&self) -> Option<i64> {
        self.generations()
            .flat_map(|g| &g.tables)
            .flat_map(|(&table, batches)| batches.iter().filter_map(move |batch| event_times(table, batch).and_then(min)))
            .min()
            .map(hour_of)
    }

    /// The generations being flushed, oldest first, then the active one.
    fn generations(&self) -> impl Iterator<Item = &Generation> {
        self.flushing.iter().map(|g| g.as_ref()).chain(std::iter::once(&self.active))
    }
}
