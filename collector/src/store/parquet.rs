//! Writing memtable generations and compactions as Parquet files, and reading them back.
//!
//! Files are zstd-compressed, sorted by the table's sort columns (so similar rows sit
//! together and compress well), carry page-level statistics (the page index) and, on tables
//! with a `TraceId` column, a bloom filter on it so a trace lookup skips row groups that
//! cannot hold the trace.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::compute::{SortColumn, concat, interleave_record_batch, lexsort_to_indices};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::StoreError;
use super::catalog::{FileMeta, NANOS_PER_HOUR, partition_dir};
use super::commit::tmp_path;
use crate::config::StorageConfig;
use crate::schema::Table;

/// A unique, time-ordered name for a new file or commit.
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// How a file is written: flushes favour speed (their files are compacted later),
/// compactions favour size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Flush,
    Compaction,
}

/// zstd level of flushed files: the fastest, since compaction rewrites them at the
/// configured level.
const FLUSH_ZSTD_LEVEL: i32 = 1;

/// Writes `batches` of `table` as one `.tmp` file per hour partition, each sorted, and
/// returns the files as they will be once committed.
pub(crate) fn write_partitions(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    config: &StorageConfig,
    purpose: Purpose,
) -> Result<Vec<FileMeta>, StoreError> {
    let level = match purpose {
        Purpose::Flush => FLUSH_ZSTD_LEVEL,
        Purpose::Compaction => config.zstd_level,
    };
    let mut files = Vec::new();
    for (hour, batch) in split_by_hour_sorted(table, batches)? {
        let dir = partition_dir(data_dir, table, hour);
        fs::create_dir_all(&dir).map_err(StoreError::io("create partition directory"))?;
        let path = dir.join(format!("{}.parquet", new_id()));
        let bytes = write_file(&tmp_path(&path), table, &batch, config, level)?;
        files.push(FileMeta { path, table, hour, bytes });
    }
    Ok(files)
}

/// Sorts the rows of `batches` by (event-time hour, the table's sort columns) and returns
/// one batch per hour. Only the sort keys are concatenated; the rows themselves are copied
/// once, straight into their partition's batch.
fn split_by_hour_sorted(table: Table, batches: &[RecordBatch]) -> Result<Vec<(i64, RecordBatch)>, StoreError> {
    let mut hours: Vec<i64> = Vec::new();
    let mut row_of: Vec<(usize, usize)> = Vec::new();
    for (batch_index, batch) in batches.iter().enumerate() {
        let Some(times) = column_nanos(batch, table.time_column()) else {
            return Err(StoreError::Corrupt(format!("{} has no {} column", table.name(), table.time_column())));
        };
        hours.extend(times.values().iter().map(|t| t.div_euclid(NANOS_PER_HOUR)));
        row_of.extend((0..batch.num_rows()).map(|row| (batch_index, row)));
    }
    let mut sort_columns = vec![SortColumn { values: Arc::new(Int64Array::from(hours.clone())), options: None }];
    for name in table.sort_columns() {
        let column: Vec<&dyn Array> =
            batches.iter().filter_map(|batch| batch.column_by_name(name)).map(|c| c.as_ref()).collect();
        let values = concat(&column).map_err(StoreError::arrow("concatenate sort keys"))?;
        sort_columns.push(SortColumn { values, options: None });
    }
    let order = lexsort_to_indices(&sort_columns, None).map_err(StoreError::arrow("sort"))?;
    let sources: Vec<&RecordBatch> = batches.iter().collect();

    let mut parts = Vec::new();
    let order = order.values();
    let mut start = 0;
    while start < order.len() {
        let hour = hours[order[start] as usize];
        let len = order[start..].iter().take_while(|&&row| hours[row as usize] == hour).count();
        let rows: Vec<(usize, usize)> = order[start..start + len].iter().map(|&row| row_of[row as usize]).collect();
        let part = interleave_record_batch(&sources, &rows).map_err(StoreError::arrow("gather sorted rows"))?;
        parts.push((hour, part));
        start += len;
    }
    Ok(parts)
}

fn column_nanos<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a arrow::array::PrimitiveArray<TimestampNanosecondType>> {
    batch.column_by_name(name)?.as_primitive_opt::<TimestampNanosecondType>()
}

fn write_file(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    config: &StorageConfig,
    zstd_level: i32,
) -> Result<u64, StoreError> {
    let level = ZstdLevel::try_new(zstd_level).map_err(StoreError::parquet("zstd level"))?;
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page);
    if let Some(trace_ids) = batch.column_by_name("TraceId") {
        // Size the filter for the trace ids really present: the default (a million) would
        // make the filter larger than the data of a small file.
        let distinct = distinct_strings(trace_ids.as_ref()).max(1) as u64;
        let column = ColumnPath::from("TraceId");
        properties = properties
            .set_column_bloom_filter_enabled(column.clone(), true)
            .set_column_bloom_filter_fpp(column.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(column, distinct);
    }
    let file = File::create(path).map_err(StoreError::io("create parquet file"))?;
    let mut writer = ArrowWriter::try_new(file, table.schema(), Some(properties.build()))
        .map_err(StoreError::parquet("open parquet writer"))?;
    writer.write(batch).map_err(StoreError::parquet("write parquet"))?;
    let file = writer.into_inner().map_err(StoreError::parquet("finish parquet"))?;
    file.sync_all().map_err(StoreError::io("fsync parquet file"))?;
    Ok(file.metadata().map_err(StoreError::io("stat parquet file"))?.len())
}

fn distinct_strings(array: &dyn Array) -> usize {
    match array.as_string_opt::<i32>() {
        Some(strings) => strings.iter().flatten().collect::<HashSet<_>>().len(),
        None => array.len(),
    }
}

/// Reads a whole file back (compaction input).
pub(crate) fn read_file(path: &PathBuf) -> Result<Vec<RecordBatch>, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open parquet file"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(StoreError::parquet("read parquet footer"))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(StoreError::parquet("read parquet"))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(StoreError::arrow("read parquet"))
}
