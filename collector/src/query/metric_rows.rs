//! The rows of one stored metric, read straight from a table's snapshot (memtable batches
//! and Parquet files) for PromQL, without SQL.
//!
//! A PromQL query makes a few reads of a fixed shape. Planning each as SQL over every hour
//! file cost more than the read itself: a selector of 20 series took ~15 ms through
//! DataFusion, against ~1 ms for its rows. Here a read:
//! - skips row groups whose statistics rule the condition out (metric, unit, time,
//!   `service_name` equality), and does not evaluate it on those whose statistics show
//!   every row meets it;
//! - keeps what it decoded: each file's footer, and whole row groups of the columns other
//!   than maps and lists (ids, times, values, and the tested strings as dictionaries), in
//!   caches bounded by bytes that evict the oldest first. Files never change once written,
//!   so a kept column stays true; Prometheus likewise reads its chunks from memory or the
//!   page cache, where zstd-compressed Parquet pays decompression on every read;
//! - when it wants maps or lists (labels, buckets, exemplars), evaluates the condition on
//!   its own columns first (a Parquet `RowFilter`), so only the rows that meet it are
//!   decoded, and keeps none of them;
//! - spreads the files over one blocking task per core.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimestampNanosecondType, UInt64Type};
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;
use promql_parser::label::{MatchOp, Matcher};

use super::QueryError;
use super::cache::BoundedCache;
use crate::schema::Table;
use crate::store::Store;

/// Which rows of a metric table a read keeps.
#[derive(Debug, Clone)]
pub struct RowCondition {
    pub metric: String,
    pub unit: String,
    /// Inclusive bounds on `TimeUnix`, in nanoseconds.
    pub start: i64,
    pub end: i64,
    /// Only the rows that start a series in their file (`SeriesStart`).
    pub series_starts_only: bool,
    /// `service_name` matchers a row's `ServiceName` must meet; rows without one are kept.
    pub services: Vec<Matcher>,
    /// Only the rows of these series.
    pub series: Option<Arc<HashSet<u64>>>,
}

/// How far a row group's statistics settle one test of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// No row passes it.
    None,
    /// Every row passes it.
    All,
    /// It must be evaluated row by row.
    Open,
}

/// The tests of a condition that rows must still be put to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tests {
    metric: bool,
    time: bool,
    series_start: bool,
    service: bool,
    series: bool,
}

impl Tests {
    const ALL: Tests = Tests { metric: true, time: true, series_start: true, service: true, series: true };

    /// The string columns tests compare, read dictionary-encoded from Parquet so that each
    /// distinct value is compared once.
    const STRING_COLUMNS: [&'static str; 3] = ["MetricName", "MetricUnit", "ServiceName"];

    fn any(self) -> bool {
        self != Tests::default()
    }
}

impl RowCondition {
    /// The columns `tests` read.
    fn columns(&self, tests: Tests) -> Vec<&'static str> {
        let mut columns = Vec::new();
        if tests.metric {
            columns.extend(["MetricName", "MetricUnit"]);
        }
        if tests.time {
            columns.push("TimeUnix");
        }
        if tests.series_start && self.series_starts_only {
            columns.push("SeriesStart");
        }
        if tests.service && !self.services.is_empty() {
            columns.push("ServiceName");
        }
        if tests.series && self.series.is_some() {
            columns.push("SeriesId");
        }
        columns
    }

    fn admits_service(&self, service: &str) -> bool {
        service.is_empty() || self.services.iter().all(|m| m.is_match(service))
    }

    /// Which rows of `batch` (which holds at least the columns of `tests`) pass `tests`.
    fn evaluate(&self, batch: &RecordBatch, tests: Tests) -> Result<BooleanArray, ArrowError> {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("metric rows without {name}")))
        };
        let rows = batch.num_rows();
        let mut keep = BooleanBuffer::new_set(rows);
        if tests.metric {
            keep = &keep & &test_strings(column("MetricName")?, |name| name == self.metric);
            keep = &keep & &test_strings(column("MetricUnit")?, |unit| unit == self.unit);
        }
        if tests.time {
            let times = column("TimeUnix")?.as_primitive::<TimestampNanosecondType>().values();
            keep = &keep & &BooleanBuffer::collect_bool(rows, |row| (self.start..=self.end).contains(&times[row]));
        }
        if tests.series_start && self.series_starts_only {
            let starts = column("SeriesStart")?;
            keep = &keep & &valid(starts.as_ref(), starts.as_boolean().values().clone());
        }
        if tests.service && !self.services.is_empty() {
            keep = &keep & &test_strings(column("ServiceName")?, |service| self.admits_service(service));
        }
        if let Some(series) = self.series.as_ref().filter(|_| tests.series) {
            let ids = column("SeriesId")?;
            let values = ids.as_primitive::<UInt64Type>().values();
            let mut runs = Runs::default();
            keep = &keep & &valid(ids.as_ref(), BooleanBuffer::collect_bool(rows, |row| runs.test(values[row], |id| series.contains(&id))));
        }
        Ok(BooleanArray::new(keep, None))
    }

    /// The tests the rows of `group` still need after its statistics (`leaf` finds a root
    /// column's statistics), or `None` when no row passes them.
    fn open_tests(&self, group: &RowGroupMetaData, leaf: &dyn Fn(&str) -> Option<usize>) -> Option<Tests> {
        let statistics = |name: &str| leaf(name).and_then(|leaf| group.column(leaf).statistics());
        let mut tests = Tests::default();
        let mut settle = |settled: Settled, test: fn(&mut Tests) -> &mut bool| match settled {
            Settled::None => None,
            Settled::All => Some(()),
            Settled::Open => {
                *test(&mut tests) = true;
                Some(())
            }
        };
        for (name, value) in [("MetricName", &self.metric), ("MetricUnit", &self.unit)] {
            settle(settle_equal(statistics(name), value.as_bytes()), |t| &mut t.metric)?;
        }
        settle(settle_range(statistics("TimeUnix"), self.start, self.end), |t| &mut t.time)?;
        if self.series_starts_only {
            let settled = match statistics("SeriesStart") {
                Some(Statistics::Boolean(s)) if s.max_opt() == Some(&false) => Settled::None,
                Some(Statistics::Boolean(s)) if s.min_opt() == Some(&true) && s.null_count_opt() == Some(0) => Settled::All,
                _ => Settled::Open,
            };
            settle(settled, |t| &mut t.series_start)?;
        }
        for matcher in &self.services {
            let settled = match matcher.op {
                // Rows without a service pass whatever the matchers say.
                MatchOp::Equal => match settle_equal(statistics("ServiceName"), matcher.value.as_bytes()) {
                    Settled::None if settle_equal(statistics("ServiceName"), b"") == Settled::None => Settled::None,
                    Settled::All => Settled::All,
                    _ => Settled::Open,
                },
                _ => Settled::Open,
            };
            settle(settled, |t| &mut t.service)?;
        }
        if self.series.is_some() {
            settle(Settled::Open, |t| &mut t.series)?;
        }
        Some(tests)
    }
}

/// `test` on every row of a string column, plain or dictionary-encoded, decided once per
/// distinct value (a dictionary's values, or a run of equal plain values).
fn test_strings(column: &ArrayRef, test: impl Fn(&str) -> bool) -> BooleanBuffer {
    let passing = match column.as_dictionary_opt::<Int32Type>() {
        Some(dictionary) => {
            let values = dictionary.values().as_string::<i32>();
            let passes: Vec<bool> = values.iter().map(|value| value.is_some_and(&test)).collect();
            let keys = dictionary.keys().values();
            BooleanBuffer::collect_bool(column.len(), |row| passes.get(keys[row] as usize).copied().unwrap_or(false))
        }
        None => {
            let strings = column.as_string::<i32>();
            let mut runs = Runs::default();
            BooleanBuffer::collect_bool(column.len(), |row| runs.test(strings.value(row), &test))
        }
    };
    valid(column.as_ref(), passing)
}

/// `passing` without the rows where `array` is null.
fn valid(array: &dyn Array, passing: BooleanBuffer) -> BooleanBuffer {
    match array.logical_nulls() {
        Some(nulls) => &passing & nulls.inner(),
        None => passing,
    }
}

/// A test decided once per run of equal values: rows come sorted by service and series.
struct Runs<T> {
    previous: Option<(T, bool)>,
}

impl<T> Default for Runs<T> {
    fn default() -> Self {
        Self { previous: None }
    }
}

impl<T: PartialEq + Copy> Runs<T> {
    fn test(&mut self, value: T, test: impl FnOnce(T) -> bool) -> bool {
        match self.previous {
            Some((known, passes)) if known == value => passes,
            _ => {
                let passes = test(value);
                self.previous = Some((value, passes));
                passes
            }
        }
    }
}

/// What a string column's statistics settle about `column = value`.
fn settle_equal(statistics: Option<&Statistics>, value: &[u8]) -> Settled {
    let Some(statistics) = statistics else { return Settled::Open };
    let (Some(min), Some(max)) = (statistics.min_bytes_opt(), statistics.max_bytes_opt()) else { return Settled::Open };
    // A truncated minimum is a prefix of the real one and a truncated maximum is rounded
    // up, so both still bound the values.
    if value < min || value > max {
        Settled::None
    } else if min == value && max == value && statistics.min_is_exact() && statistics.max_is_exact() && statistics.null_count_opt() == Some(0) {
        Settled::All
    } else {
        Settled::Open
    }
}

/// What an integer column's statistics settle about `start <= column <= end`.
fn settle_range(statistics: Option<&Statistics>, start: i64, end: i64) -> Settled {
    let Some(Statistics::Int64(statistics)) = statistics else { return Settled::Open };
    let (Some(&min), Some(&max)) = (statistics.min_opt(), statistics.max_opt()) else { return Settled::Open };
    if max < start || min > end {
        Settled::None
    } else if start <= min && max <= end && statistics.null_count_opt() == Some(0) {
        Settled::All
    } else {
        Settled::Open
    }
}

/// Reads metric rows from the store.
pub struct MetricRows {
    store: Arc<Store>,
    files: Arc<MetricFiles>,
}

/// Reads metric rows from Parquet files, keeping what it decoded.
struct MetricFiles {
    footers: BoundedCache<PathBuf, ArrowReaderMetadata>,
    /// Whole decoded columns of row groups (file, row group, column), but for maps and lists.
    columns: BoundedCache<(PathBuf, usize, &'static str), ArrayRef>,
}

/// What the tasks of one read share.
struct ReadState {
    condition: RowCondition,
    columns: Vec<&'static str>,
    max_rows: usize,
    rows: AtomicUsize,
    /// Set when the read is dropped (its query timed out or failed elsewhere).
    cancelled: AtomicBool,
}

/// Sets [`ReadState::cancelled`] when dropped.
struct CancelOnDrop(Arc<ReadState>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

impl ReadState {
    fn new(condition: RowCondition, columns: Vec<&'static str>, max_rows: usize) -> Self {
        Self { condition, columns, max_rows, rows: AtomicUsize::new(0), cancelled: AtomicBool::new(false) }
    }

    /// Counts `rows` more rows read; fails past the limit.
    fn count(&self, rows: usize) -> Result<(), QueryError> {
        if self.rows.fetch_add(rows, Ordering::Relaxed) + rows > self.max_rows {
            return Err(QueryError::TooManyRows(self.max_rows));
        }
        Ok(())
    }
}

impl MetricRows {
    /// `footer_cache_bytes` bounds the footers kept, `column_cache_bytes` the decoded columns.
    pub fn new(store: Arc<Store>, footer_cache_bytes: usize, column_cache_bytes: usize) -> Self {
        Self { store, files: Arc::new(MetricFiles::new(footer_cache_bytes, column_cache_bytes)) }
    }

    /// The store's metric catalog (see `store::metric_catalog`).
    pub fn catalog(&self) -> Result<RecordBatch, QueryError> {
        Ok(self.store.metric_catalog()?)
    }

    /// The rows of `table` that meet `condition`, as batches of `columns` in that order.
    /// Files and batches written before a column existed hold no rows for it. Fails
    /// when more than `max_rows` rows meet the condition.
    pub async fn read(
        &self,
        table: Table,
        condition: RowCondition,
        columns: Vec<&'static str>,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let snapshot = self.store.snapshot(table);
        let state = Arc::new(ReadState::new(condition, columns, max_rows));
        let _cancel = CancelOnDrop(state.clone());

        let mut batches = Vec::new();
        for batch in &snapshot.batches {
            // Like a file, a batch from before a wanted or tested column existed holds no rows.
            let schema = batch.schema();
            let Ok(indices) = state.columns.iter().map(|name| schema.index_of(name)).collect::<Result<Vec<_>, _>>() else { continue };
            if state.condition.columns(Tests::ALL).iter().any(|name| schema.index_of(name).is_err()) {
                continue;
            }
            let keep = state.condition.evaluate(batch, Tests::ALL)?;
            let kept = filter_record_batch(&batch.project(&indices)?, &keep)?;
            state.count(kept.num_rows())?;
            batches.push(kept);
        }

        let tasks = std::thread::available_parallelism().map_or(2, usize::from).min(snapshot.files.len());
        let mut reads = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let files: Vec<PathBuf> = snapshot.files.iter().skip(task).step_by(tasks).cloned().collect();
            let (reader, state) = (self.files.clone(), state.clone());
            reads.push(tokio::task::spawn_blocking(move || {
                let mut batches = Vec::new();
                for path in &files {
                    reader.read(path, &state, &mut batches)?;
                }
                Ok::<_, QueryError>(batches)
            }));
        }
        for read in futures::future::join_all(reads).await {
            batches.extend(read.map_err(|error| QueryError::Execution(format!("metric read panicked: {error}")))??);
        }
        Ok(batches)
    }
}

impl MetricFiles {
    fn new(footer_cache_bytes: usize, column_cache_bytes: usize) -> Self {
        Self { footers: BoundedCache::new(footer_cache_bytes), columns: BoundedCache::new(column_cache_bytes) }
    }

    /// Adds to `batches` the rows of the file at `path` that the read wants.
    fn read(&self, path: &Path, state: &ReadState, batches: &mut Vec<RecordBatch>) -> Result<(), QueryError> {
        let metadata = self.footer(path)?;
        let schema = metadata.schema().clone();
        let root = |name: &str| schema.index_of(name).ok();
        // A file written before a wanted or tested column existed holds no rows for it.
        let Some(wanted) = state.columns.iter().map(|name| root(name)).collect::<Option<Vec<_>>>() else { return Ok(()) };
        if state.condition.columns(Tests::ALL).iter().any(|name| root(name).is_none()) {
            return Ok(());
        }
        let parquet_schema = metadata.metadata().file_metadata().schema_descr_ptr();
        // Every tested column is a primitive root column: its one leaf holds its statistics.
        let leaf = |name: &str| root(name).and_then(|root| (0..parquet_schema.num_columns()).find(|leaf| parquet_schema.get_column_root_idx(*leaf) == root));
        // Row groups by the tests their statistics leave open.
        let mut reads: Vec<(Tests, Vec<usize>)> = Vec::new();
        for (index, group) in metadata.metadata().row_groups().iter().enumerate() {
            let Some(tests) = state.condition.open_tests(group, &leaf) else { continue };
            match reads.iter_mut().find(|(open, _)| *open == tests) {
                Some((_, groups)) => groups.push(index),
                None => reads.push((tests, vec![index])),
            }
        }
        let nested = wanted.iter().any(|root| schema.field(*root).data_type().is_nested());
        for (tests, groups) in reads {
            if nested {
                self.read_filtered(path, &metadata, state, tests, groups, batches)?;
                continue;
            }
            // The wanted columns, then the tested ones not among them.
            let mut names = state.columns.clone();
            names.extend(state.condition.columns(tests).into_iter().filter(|name| !state.columns.contains(name)));
            for group in groups {
                if state.cancelled.load(Ordering::Relaxed) {
                    return Err(cancelled());
                }
                let columns = self.group_columns(path, &metadata, group, &names)?;
                let fields: Vec<_> = names.iter().zip(&columns).map(|(name, column)| Field::new(*name, column.data_type().clone(), true)).collect();
                let mut batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
                if tests.any() {
                    let keep = state.condition.evaluate(&batch, tests)?;
                    batch = filter_record_batch(&batch, &keep)?;
                }
                state.count(batch.num_rows())?;
                batches.push(batch.project(&(0..state.columns.len()).collect::<Vec<_>>())?);
            }
        }
        Ok(())
    }

    /// Reads the rows of `groups` that pass `tests`, testing first and decoding the wanted
    /// columns of only the rows that pass: for wanted columns that cost the most to decode
    /// (maps and lists), which are not kept between reads.
    fn read_filtered(
        &self,
        path: &Path,
        metadata: &ArrowReaderMetadata,
        state: &ReadState,
        tests: Tests,
        groups: Vec<usize>,
        batches: &mut Vec<RecordBatch>,
    ) -> Result<(), QueryError> {
        let schema = metadata.schema();
        let root = |name: &str| schema.index_of(name).ok();
        let wanted: Vec<usize> = state.columns.iter().filter_map(|name| root(name)).collect();
        // Batches come out in file column order; `order` puts them in the wanted order.
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        let order: Vec<usize> = wanted.iter().map(|root| sorted.partition_point(|other| other < root)).collect();
        let parquet_schema = metadata.metadata().file_metadata().schema_descr_ptr();
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(open(path)?, metadata.clone())
            .with_row_groups(groups)
            .with_projection(ProjectionMask::roots(&parquet_schema, wanted));
        if tests.any() {
            let tested = state.condition.columns(tests).into_iter().filter_map(root);
            let condition = state.condition.clone();
            let predicate = ArrowPredicateFn::new(ProjectionMask::roots(&parquet_schema, tested), move |batch| condition.evaluate(&batch, tests));
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        for batch in builder.build().map_err(|error| parquet_error(path, &error))? {
            if state.cancelled.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let batch = batch.map_err(|error| QueryError::Execution(format!("read {}: {error}", path.display())))?;
            state.count(batch.num_rows())?;
            batches.push(batch.project(&order)?);
        }
        Ok(())
    }

    /// The columns `names` of row group `group`, whole, from the column cache or decoded
    /// (and then kept).
    fn group_columns(&self, path: &Path, metadata: &ArrowReaderMetadata, group: usize, names: &[&'static str]) -> Result<Vec<ArrayRef>, QueryError> {
        let key = |name: &'static str| (path.to_owned(), group, name);
        let mut columns: Vec<Option<ArrayRef>> = names.iter().map(|name| self.columns.get(&key(name))).collect();
        let missing: Vec<&'static str> = names.iter().zip(&columns).filter(|(_, column)| column.is_none()).map(|(name, _)| *name).collect();
        if !missing.is_empty() {
            let schema = metadata.schema();
            let mut roots: Vec<usize> = missing.iter().filter_map(|name| schema.index_of(name).ok()).collect();
            roots.sort_unstable();
            let decoded_schema = Arc::new(schema.project(&roots)?);
            let parquet_schema = metadata.metadata().file_metadata().schema_descr_ptr();
            let rows = metadata.metadata().row_group(group).num_rows().max(1) as usize;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(open(path)?, metadata.clone())
                .with_row_groups(vec![group])
                .with_projection(ProjectionMask::roots(&parquet_schema, roots))
                .with_batch_size(rows)
                .build()
                .map_err(|error| parquet_error(path, &error))?;
            let parts = reader.collect::<Result<Vec<_>, _>>()?;
            let decoded = concat_batches(&decoded_schema, &parts)?;
            for (name, column) in names.iter().zip(&mut columns).filter(|(_, column)| column.is_none()) {
                let array = decoded.column_by_name(name).ok_or_else(|| QueryError::Execution(format!("read {}: no column {name}", path.display())))?;
                self.columns.insert(key(name), array.clone(), array.get_array_memory_size());
                *column = Some(array.clone());
            }
        }
        Ok(columns.into_iter().flatten().collect())
    }

    /// The footer of the file at `path`, from the cache or read, with the string columns
    /// tests compare read dictionary-encoded.
    fn footer(&self, path: &Path) -> Result<ArrowReaderMetadata, QueryError> {
        if let Some(metadata) = self.footers.get(path) {
            return Ok(metadata);
        }
        let metadata = ArrowReaderMetadata::load(&open(path)?, ArrowReaderOptions::new()).map_err(|error| parquet_error(path, &error))?;
        let fields = metadata.schema().fields().iter().map(|field| match field.data_type() {
            DataType::Utf8 if Tests::STRING_COLUMNS.contains(&field.name().as_str()) => {
                Arc::new(field.as_ref().clone().with_data_type(DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))))
            }
            _ => field.clone(),
        });
        let schema = Arc::new(Schema::new_with_metadata(fields.collect::<Vec<_>>(), metadata.schema().metadata().clone()));
        let options = ArrowReaderOptions::new().with_schema(schema);
        let metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), options).map_err(|error| parquet_error(path, &error))?;
        self.footers.insert(path.to_owned(), metadata.clone(), metadata.metadata().memory_size());
        Ok(metadata)
    }
}

fn open(path: &Path) -> Result<File, QueryError> {
    File::open(path).map_err(|error| QueryError::Execution(format!("open {}: {error}", path.display())))
}

fn cancelled() -> QueryError {
    QueryError::Execution("metric read cancelled".into())
}

fn parquet_error(path: &Path, error: &parquet::errors::ParquetError) -> QueryError {
    QueryError::Execution(format!("read {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Float64Array, ListBuilder, StringArray, TimestampNanosecondArray, UInt64Array, UInt64Builder};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;

    /// A file of two row groups: service "a" (metric m, times 1–3, then metric n at 4) and
    /// service "b" (metric m, times 5–8); series 1 and 2 start at their first row.
    fn metric_file(dir: &Path) -> PathBuf {
        let services = ["a", "a", "a", "a", "b", "b", "b", "b"];
        let names = ["m", "m", "m", "n", "m", "m", "m", "m"];
        let ids = [1, 1, 1, 9, 2, 2, 2, 2];
        let starts = [true, false, false, true, true, false, false, false];
        let mut buckets = ListBuilder::new(UInt64Builder::new());
        for row in 0..8 {
            buckets.values().append_slice(&[row, row + 1]);
            buckets.append(true);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("ServiceName", Arc::new(StringArray::from(services.to_vec()))),
            ("MetricName", Arc::new(StringArray::from(names.to_vec()))),
            ("MetricUnit", Arc::new(StringArray::from(vec!["s"; 8]))),
            ("TimeUnix", Arc::new(TimestampNanosecondArray::from_iter_values(1..=8).with_timezone("UTC"))),
            ("SeriesId", Arc::new(UInt64Array::from(ids.to_vec()))),
            ("SeriesStart", Arc::new(BooleanArray::from(starts.to_vec()))),
            ("Value", Arc::new(Float64Array::from_iter_values((1..=8).map(f64::from)))),
            ("BucketCounts", Arc::new(buckets.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns).expect("columns of one length");
        let path = dir.join("metrics.parquet");
        let properties = WriterProperties::builder().set_max_row_group_row_count(Some(4)).build();
        let mut writer = ArrowWriter::try_new(File::create(&path).expect("create"), batch.schema(), Some(properties)).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        path
    }

    fn condition(start: i64, end: i64) -> RowCondition {
        RowCondition { metric: "m".into(), unit: "s".into(), start, end, series_starts_only: false, services: Vec::new(), series: None }
    }

    /// The rows `condition` selects from the file, as `(SeriesId, Value)`, read twice: the
    /// second read comes from the column cache.
    fn read(path: &Path, condition: RowCondition) -> Vec<(u64, f64)> {
        let files = MetricFiles::new(1 << 20, 1 << 20);
        let state = ReadState::new(condition, vec!["SeriesId", "Value"], 100);
        let mut rows = Vec::new();
        for _ in 0..2 {
            let mut batches = Vec::new();
            files.read(path, &state, &mut batches).expect("read");
            rows = batches
                .iter()
                .flat_map(|batch| {
                    let (ids, values) = (batch.column(0).as_primitive::<UInt64Type>(), batch.column(1).as_primitive::<arrow::datatypes::Float64Type>());
                    (0..batch.num_rows()).map(|row| (ids.value(row), values.value(row))).collect::<Vec<_>>()
                })
                .collect();
        }
        rows
    }

    #[test]
    fn reads_only_the_rows_that_meet_the_condition() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = metric_file(dir.path());
        assert_eq!(read(&path, condition(0, 100)), [(1, 1.0), (1, 2.0), (1, 3.0), (2, 5.0), (2, 6.0), (2, 7.0), (2, 8.0)]);
        assert_eq!(read(&path, condition(2, 6)), [(1, 2.0), (1, 3.0), (2, 5.0), (2, 6.0)]);
        let in_b = RowCondition { services: vec![Matcher::new(MatchOp::Equal, "service_name", "b")], ..condition(0, 100) };
        assert_eq!(read(&path, in_b), [(2, 5.0), (2, 6.0), (2, 7.0), (2, 8.0)]);
        let not_a = RowCondition { services: vec![Matcher::new(MatchOp::NotEqual, "service_name", "a")], ..condition(0, 6) };
        assert_eq!(read(&path, not_a), [(2, 5.0), (2, 6.0)]);
        let starts = RowCondition { series_starts_only: true, ..condition(0, 100) };
        assert_eq!(read(&path, starts), [(1, 1.0), (2, 5.0)]);
        let series_two = RowCondition { series: Some(Arc::new(HashSet::from([2]))), ..condition(0, 100) };
        assert_eq!(read(&path, series_two), [(2, 5.0), (2, 6.0), (2, 7.0), (2, 8.0)]);
        assert!(read(&path, RowCondition { unit: "ms".into(), ..condition(0, 100) }).is_empty());
    }

    #[test]
    fn lists_are_decoded_only_for_the_rows_that_meet_the_condition() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = metric_file(dir.path());
        let files = MetricFiles::new(1 << 20, 1 << 20);
        let state = ReadState::new(condition(3, 5), vec!["BucketCounts", "SeriesId"], 100);
        let mut batches = Vec::new();
        files.read(&path, &state, &mut batches).expect("read");
        let buckets: Vec<Vec<u64>> = batches
            .iter()
            .flat_map(|batch| {
                let lists = batch.column(0).as_list::<i32>();
                (0..batch.num_rows()).map(|row| lists.value(row).as_primitive::<UInt64Type>().values().to_vec()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(buckets, [vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn a_read_past_the_row_limit_fails() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = metric_file(dir.path());
        let state = ReadState::new(condition(0, 100), vec!["SeriesId"], 3);
        let error = MetricFiles::new(1 << 20, 1 << 20).read(&path, &state, &mut Vec::new()).expect_err("7 rows meet it");
        assert!(matches!(error, QueryError::TooManyRows(3)), "{error}");
    }
}
