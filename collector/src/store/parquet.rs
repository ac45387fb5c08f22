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

use arrow::array::{Array, AsArray, Int64Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
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

/// Writes `batches` of `table` as one `.tmp` file per hour partition, each sorted, and
/// returns the files as they will be once committed.
pub(crate) fn write_partitions(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    config: &StorageConfig,
) -> Result<Vec<FileMeta>, StoreError> {
    let schema = table.schema();
    let all = concat_batches(&schema, batches).map_err(StoreError::arrow("concatenate batches"))?;
    let mut files = Vec::new();
    for (hour, batch) in split_by_hour_sorted(table, &all)? {
        let dir = partition_dir(data_dir, table, hour);
        fs::create_dir_all(&dir).map_err(StoreError::io("create partition directory"))?;
        let path = dir.join(format!("{}.parquet", new_id()));
        let bytes = write_file(&tmp_path(&path), table, &batch, config)?;
        files.push(FileMeta { path, table, hour, bytes });
    }
    Ok(files)
}

/// Splits a batch into one batch per event-time hour, each sorted by the table's sort
/// columns.
fn split_by_hour_sorted(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>, StoreError> {
    let Some(times) = column_nanos(batch, table.time_column()) else {
        return Err(StoreError::Corrupt(format!("{} has no {} column", table.name(), table.time_column())));
    };
    let hours: Int64Array = times.iter().map(|t| t.map(|t| t.div_euclid(NANOS_PER_HOUR))).collect();
    let mut sort_columns = vec![SortColumn { values: std::sync::Arc::new(hours), options: None }];
    for name in table.sort_columns() {
        if let Some(values) = batch.column_by_name(name) {
            sort_columns.push(SortColumn { values: values.clone(), options: None });
        }
    }
    let indices = lexsort_to_indices(&sort_columns, None).map_err(StoreError::arrow("sort"))?;
    let sorted = take_record_batch(batch, &indices).map_err(StoreError::arrow("sort"))?;
    let sorted_hours = sort_columns[0].values.as_primitive::<arrow::datatypes::Int64Type>();
    let sorted_hours: Vec<i64> = indices.values().iter().map(|&i| sorted_hours.value(i as usize)).collect();

    let mut parts = Vec::new();
    let mut start = 0;
    while start < sorted_hours.len() {
        let hour = sorted_hours[start];
        let len = sorted_hours[start..].iter().take_while(|&&h| h == hour).count();
        parts.push((hour, sorted.slice(start, len)));
        start += len;
    }
    Ok(parts)
}

fn column_nanos<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a arrow::array::PrimitiveArray<TimestampNanosecondType>> {
    batch.column_by_name(name)?.as_primitive_opt::<TimestampNanosecondType>()
}

fn write_file(path: &Path, table: Table, batch: &RecordBatch, config: &StorageConfig) -> Result<u64, StoreError> {
    let level = ZstdLevel::try_new(config.zstd_level).map_err(StoreError::parquet("zstd level"))?;
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
