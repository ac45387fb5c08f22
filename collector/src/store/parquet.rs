//! Writing memtable generations and compactions as Parquet files, and reading them back.
//!
//! Files are sorted by the table's sort columns (so similar rows sit together and compress
//! well), carry page-level statistics (the page index) of the columns queries prune by and,
//! on tables with a `TraceId` column, a bloom filter on it so a trace lookup skips row groups
//! that cannot hold the trace. Files are zstd-compressed, except the flushes that compaction
//! merges (of metrics and profiles, and small ones of spans and log records), until it
//! does (see [`FileKind`]).

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::concat;
use arrow::datatypes::{DataType, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, ReaderProperties, WriterProperties, WriterVersion};
use parquet::file::reader::FileReader as _;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, SchemaDescriptor};

use super::StoreError;
use super::catalog::{FLUSHED_SUFFIX, FileMeta, event_times, hour_of, partition_dir};
use super::commit::tmp_path;
use super::gather::gather;
use super::merge::SortedMerge;
use super::resources::{OncePerFile, ResourceCatalog};
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

/// Whether a file is merged again, which decides its compression and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// A flush of a table whose files compaction merges (metrics, profiles), or a small
    /// flush of spans or log records: not compressed. Compaction soon rewrites the file,
    /// and until then compressing it would cost the flush CPU time and each merge a zstd
    /// decoder, about 160 KB, for every column of every input. Dictionaries stay although
    /// interning costs a flush about a sixth of its time: without them a file of mesh
    /// spans, whose resource attributes repeat on every row, was ten times larger (9.6 MB
    /// instead of 0.93), and the collector's peak RSS at 10 000 spans/s rose from about 170
    /// to 250 MiB.
    Flushed,
    /// A file no merge reads again unless its schema is outdated: zstd at
    /// `storage.zstd_level`. Merges write these, and so do flushes, other than small ones,
    /// of tables whose files compaction only concatenates ([`Table::flushes_final_files`]).
    Final,
}

impl FileKind {
    /// The kind of file a flush of `rows` rows of `table` writes. A small flush of spans or
    /// log records, as a flush by age at a low rate writes, is left for a merge too: its
    /// row groups would otherwise stay small forever, since concatenation keeps them, and
    /// each carries its own column metadata (about 9 KB of footer for spans).
    fn of_flush(table: Table, rows: usize, config: &StorageConfig) -> Self {
        let small = rows < config.row_group_rows / SMALL_FLUSH_FRACTION;
        if table.flushes_final_files() && !small { FileKind::Final } else { FileKind::Flushed }
    }

    /// How the name of a file of this kind ends (the catalog tells flushed files by it).
    fn suffix(self) -> &'static str {
        match self {
            FileKind::Flushed => FLUSHED_SUFFIX,
            FileKind::Final => ".parquet",
        }
    }
}

/// A flush of spans or log records with fewer rows than this fraction of
/// `storage.row_group_rows` is small (see [`FileKind::of_flush`]). A flush by size holds
/// about 8500 mesh spans or 17 000 of the spec shape, well above 32 768 / 8.
const SMALL_FLUSH_FRACTION: usize = 8;

/// Rows gathered into one sorted batch at a time while a flush writes a partition, so the
/// sorted copy of a generation never exists at once (fresh multi-megabyte buffers cost page
/// faults on every flush as well as memory). 4096 mesh spans gathered are 5 MB; batches of
/// 2048 cost the flush about 10 % more CPU, in per-batch work of the Parquet writer.
const FLUSH_BATCH_ROWS: usize = 4096;

/// Rows per batch that compaction decodes of each input. Memory holds a batch of every
/// input, and the strings of a batch of spans with their attribute maps are megabytes: a
/// merge of twelve flushed files of mesh spans peaked at 36 MB of heap with batches of 256
/// rows and at 31 MB with 128, for about 4 % more time.
const COMPACTION_READ_ROWS: usize = 128;

/// Rows per merged batch that compaction writes. The Parquet writer's work per batch is
/// per column: a merge of 38 flushed files of mesh spans took 12 % less CPU with batches of
/// 1024 rows than of 128, for 2 MB more peak memory.
const COMPACTION_BATCH_ROWS: usize = 1024;

/// Most rows in a data page. A page's values wait in the writer until it is full, and a
/// dictionary-encoded column's indices wait as 8 bytes each: with Parquet's default of
/// 20 000 rows, the attribute maps' 10 or so entries a row held 15 MiB in the writer of a
/// merge. Smaller pages also let the page index prune finer.
const PAGE_ROWS: usize = 4096;

/// Flushes `batches` of `table` as one `.tmp` file per hour partition, each sorted, and
/// returns the files as they will be once committed.
pub(crate) fn write_partitions(
    data_dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    config: &StorageConfig,
    resources: &ResourceCatalog,
) -> Result<Vec<FileMeta>, StoreError> {
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    let mut files = Vec::new();
    for (hour, rows) in sorted_rows_by_hour(table, batches)? {
        let dir = partition_dir(data_dir, table, hour);
        fs::create_dir_all(&dir).map_err(StoreError::io("create partition directory"))?;
        let kind = FileKind::of_flush(table, rows.len(), config);
        let path = dir.join(format!("{}{}", new_id(), kind.suffix()));
        // A row group's trace ids are at most its rows: an upper bound that keeps the bloom
        // filter's false-positive rate at or below its target, and its size that of the file.
        let trace_ids = rows.len().min(config.row_group_rows) as u64;
        let batches = rows.chunks(FLUSH_BATCH_ROWS).flat_map(|chunk| match gather(&sources, chunk) {
            Ok(batches) => batches.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(StoreError::arrow("gather sorted rows")(error))],
        });
        let plain = PlainColumns::Sampled;
        let file = FileSpec { path: &tmp_path(&path), table, kind, trace_ids, plain, resources };
        let bytes = write_file(&file, config, batches)?;
        files.push(FileMeta { path, table, hour, bytes });
    }
    Ok(files)
}

/// A row of a generation: the index of its batch and its index in the batch.
type RowOf = (usize, usize);

/// Sorts the rows of `batches` by (event-time hour, the table's sort columns), ties in
/// arrival order, and returns each hour's rows in order. Only the sort keys are
/// concatenated.
fn sorted_rows_by_hour(table: Table, batches: &[RecordBatch]) -> Result<Vec<(i64, Vec<RowOf>)>, StoreError> {
    let mut hours: Vec<i64> = Vec::new();
    let mut row_of: Vec<RowOf> = Vec::new();
    for (batch_index, batch) in batches.iter().enumerate() {
        let Some(times) = event_times(table, batch) else {
            return Err(StoreError::Corrupt(format!("{} has no {} column", table.name(), table.time_column())));
        };
        hours.extend(times.values().iter().copied().map(hour_of));
        row_of.extend((0..batch.num_rows()).map(|row| (batch_index, row)));
    }
    let mut sort_keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(hours.clone()))];
    for name in table.sort_columns() {
        let column: Vec<&dyn Array> =
            batches.iter().filter_map(|batch| batch.column_by_name(name)).map(|c| c.as_ref()).collect();
        sort_keys.push(concat(&column).map_err(StoreError::arrow("concatenate sort keys"))?);
    }
    // Compared in Arrow's row format, as bytes, as a merge compares them. Arrow's lexsort,
    // which compares column by column through each column's comparator, took about 1.4
    // times as long (perf samples of flushes of the spec shape).
    let fields = sort_keys.iter().map(|keys| SortField::new(keys.data_type().clone())).collect();
    let keys = RowConverter::new(fields)
        .and_then(|converter| converter.convert_columns(&sort_keys))
        .map_err(StoreError::arrow("sort keys"))?;
    let mut order: Vec<usize> = (0..keys.num_rows()).collect();
    order.sort_by(|&a, &b| keys.row(a).cmp(&keys.row(b)));

    let mut parts: Vec<(i64, Vec<RowOf>)> = Vec::new();
    for row in order {
        let hour = hours[row];
        match parts.last_mut() {
            Some((last, rows)) if *last == hour => rows.push(row_of[row]),
            _ => parts.push((hour, vec![row_of[row]])),
        }
    }
    Ok(parts)
}

/// Sets `SeriesStart` in the sorted rows of one metrics file: true on the first row of each
/// run of one `SeriesId`, which is the earliest row of that series in the file (rows sort by
/// series, then time). A row without an id (written before ids existed) starts its own run.
/// Batches of other tables pass unchanged.
#[derive(Default)]
struct SeriesStarts {
    /// The id of the file's previous row, carried from one batch to the next.
    previous: Option<u64>,
}

impl SeriesStarts {
    fn mark(&mut self, batch: RecordBatch) -> Result<RecordBatch, StoreError> {
        let schema = batch.schema();
        let (Ok(ids), Ok(starts)) = (schema.index_of("SeriesId"), schema.index_of("SeriesStart")) else {
            return Ok(batch);
        };
        let ids = batch.column(ids).as_primitive::<UInt64Type>();
        let marks: BooleanArray = (0..ids.len())
            .map(|row| {
                let id = ids.is_valid(row).then(|| ids.value(row));
                let start = id.is_none() || id != self.previous;
                self.previous = id;
                Some(start)
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[starts] = Arc::new(marks);
        RecordBatch::try_new(schema, columns).map_err(StoreError::arrow("mark series starts"))
    }
}

/// A `.tmp` Parquet file to write.
struct FileSpec<'a> {
    path: &'a Path,
    table: Table,
    kind: FileKind,
    /// Most distinct trace ids in a row group, which sizes the `TraceId` bloom filter (of
    /// tables that have one).
    trace_ids: u64,
    plain: PlainColumns,
    /// The attributes of the resources its rows name (see [`OncePerFile`]).
    resources: &'a ResourceCatalog,
}

/// The string columns a file writes without a dictionary.
enum PlainColumns {
    /// Those whose values look all but unique in the file's first rows (see
    /// [`nearly_unique_leaves`]). A flush samples its rows this way.
    Sampled,
    /// These. A merge keeps the choice its inputs' flushes made: its first rows are a
    /// narrower slice of the sort order (one operation of one service, from many files),
    /// where even the trace ids of mesh spans look unique, though each repeats about
    /// thirteen times in a flush.
    Listed(Vec<ColumnPath>),
}

/// Writes `batches`, sorted, as the file `file` describes, and returns its size.
fn write_file(
    file: &FileSpec<'_>,
    config: &StorageConfig,
    batches: impl Iterator<Item = Result<RecordBatch, StoreError>>,
) -> Result<u64, StoreError> {
    let mut starts = SeriesStarts::default();
    let mut resources = OncePerFile::new(file.resources);
    let mut batches = batches.map(|batch| {
        let batch = resources.apply(&batch?).map_err(StoreError::arrow("store resources once"))?;
        starts.mark(batch)
    });
    // The leading batches, up to DICTIONARY_SAMPLE rows: the first may be a slice of a few.
    let mut head = Vec::new();
    while head.iter().map(RecordBatch::num_rows).sum::<usize>() < DICTIONARY_SAMPLE {
        match batches.next() {
            Some(batch) => head.push(batch?),
            None => break,
        }
    }
    let plain = match &file.plain {
        PlainColumns::Sampled => nearly_unique_leaves(file.table, &head)?,
        PlainColumns::Listed(columns) => columns.clone(),
    };
    let mut writer = FileWriter::create(file, config, &plain)?;
    // Each batch is dropped once written, the leading ones too: a flush's first gathered
    // batch is 5 MB of mesh spans.
    for batch in head.into_iter().map(Ok).chain(batches) {
        writer.write(&batch?)?;
    }
    writer.finish()
}

/// An open `.tmp` Parquet file with the table's writer properties.
struct FileWriter {
    writer: ArrowWriter<File>,
}

impl FileWriter {
    /// `plain`: string columns to write without a dictionary, beside the table's
    /// [`unique_value_columns`].
    fn create(file: &FileSpec<'_>, config: &StorageConfig, plain: &[ColumnPath]) -> Result<Self, StoreError> {
        let FileSpec { path, table, kind, trace_ids, .. } = *file;
        let compression = match kind {
            FileKind::Flushed => Compression::UNCOMPRESSED,
            FileKind::Final => {
                Compression::ZSTD(ZstdLevel::try_new(config.zstd_level).map_err(StoreError::parquet("zstd level"))?)
            }
        };
        let mut properties = WriterProperties::builder()
            .set_compression(compression)
            // Data page V2: the writer compresses a page's values into the buffer that holds
            // its levels. A V1 page is compressed into a buffer the size of the page, which
            // zstd's bound then outgrows: a reallocation and a copy of every page, 3 % of
            // the CPU samples of spec spans.
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_data_page_row_count_limit(PAGE_ROWS)
            .set_statistics_enabled(EnabledStatistics::Page);
        for column in unpruned_columns(table)? {
            properties = properties.set_column_statistics_enabled(column, EnabledStatistics::None);
        }
        for name in unique_value_columns(table) {
            let column = ColumnPath::from(*name);
            properties = properties.set_column_dictionary_enabled(column.clone(), false);
            if table.schema().field_with_name(name).is_ok_and(|field| field.data_type() == &DataType::Utf8) {
                properties = properties.set_column_encoding(column, Encoding::DELTA_LENGTH_BYTE_ARRAY);
            }
        }
        for column in plain.iter().cloned() {
            properties = properties
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_LENGTH_BYTE_ARRAY);
        }
        if table.schema().field_with_name("TraceId").is_ok() {
            let column = ColumnPath::from("TraceId");
            properties = properties
                .set_column_bloom_filter_enabled(column.clone(), true)
                .set_column_bloom_filter_fpp(column.clone(), 0.01)
                .set_column_bloom_filter_max_ndv(column, trace_ids.max(1));
        }
        let file = File::create(path).map_err(StoreError::io("create parquet file"))?;
        let writer = ArrowWriter::try_new(file, table.schema(), Some(properties.build()))
            .map_err(StoreError::parquet("open parquet writer"))?;
        Ok(Self { writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.writer.write(batch).map_err(StoreError::parquet("write parquet"))
    }

    /// Closes and fsyncs the file; returns its size.
    fn finish(self) -> Result<u64, StoreError> {
        let file = self.writer.into_inner().map_err(StoreError::parquet("finish parquet"))?;
        file.sync_all().map_err(StoreError::io("fsync parquet file"))?;
        Ok(file.metadata().map_err(StoreError::io("stat parquet file"))?.len())
    }
}

/// The leaf columns no query prunes by, which get no statistics: computing minima and
/// maxima of strings showed up in profiles of every flush and merge, as string comparisons.
/// - Every leaf inside a map or a list: no predicate reaches into a map's entries or a
///   list's items.
/// - Top-level string columns other than the table's sort columns (whose sorted runs make
///   page statistics selective) and [`pruning_string_columns`]. The other strings are
///   unsorted within a file, so nearly every page would hold nearly every value.
///
/// Numbers and times keep their statistics: they cost little and prune ranges.
fn unpruned_columns(table: Table) -> Result<Vec<ColumnPath>, StoreError> {
    let parquet_schema = parquet_schema(table)?;
    let pruned_by = |name: &str| table.sort_columns().contains(&name) || pruning_string_columns(table).contains(&name);
    Ok(parquet_schema
        .columns()
        .iter()
        .filter(|column| match column.path().parts() {
            [name] => column.physical_type() == PhysicalType::BYTE_ARRAY && !pruned_by(name),
            _ => true,
        })
        .map(|column| column.path().clone())
        .collect())
}

fn parquet_schema(table: Table) -> Result<SchemaDescriptor, StoreError> {
    ArrowSchemaConverter::new().convert(&table.schema()).map_err(StoreError::parquet("parquet schema"))
}

/// Values of each string column of a file's first rows that [`nearly_unique_leaves`] looks at.
const DICTIONARY_SAMPLE: usize = 1024;

/// The string columns, nested ones included, whose values look all but unique in `sample`
/// (a file's first batches): more than 9 in 10 of their first [`DICTIONARY_SAMPLE`] values
/// differ.
/// Such a column gets no dictionary. The writer would hash every value into one only to
/// abandon it once it outgrew its page, and a dictionary of unique values saves nothing.
/// Columns with fewer than 64 values in the sample keep theirs.
///
/// Attribute values with unbounded cardinality (request ids, the spec shape's random
/// values) are the case this is for; every string column of the mesh data set repeats
/// enough to keep its dictionary (at most a third of a flush's first 1024 values differ).
fn nearly_unique_leaves(table: Table, sample: &[RecordBatch]) -> Result<Vec<ColumnPath>, StoreError> {
    let parquet_schema = parquet_schema(table)?;
    // Each leaf column's arrays, one per batch.
    let mut leaves: Vec<Vec<ArrayRef>> = vec![Vec::new(); parquet_schema.num_columns()];
    for batch in sample {
        let mut batch_leaves = Vec::new();
        for column in batch.columns() {
            leaf_arrays(column, &mut batch_leaves);
        }
        if batch_leaves.len() != leaves.len() {
            return Err(StoreError::Corrupt(format!("{} rows disagree with the table's leaf columns", table.name())));
        }
        for (arrays, leaf) in leaves.iter_mut().zip(batch_leaves) {
            arrays.push(leaf);
        }
    }
    Ok(parquet_schema
        .columns()
        .iter()
        .zip(leaves)
        .filter(|(_, leaf)| looks_unique(leaf))
        .map(|(column, _)| column.path().clone())
        .collect())
}

/// The arrays of `array`'s leaf columns, in the order Parquet numbers them (depth first).
/// The items of a list or map are those of its rows only: a slice of a batch keeps all the
/// batch's items.
fn leaf_arrays(array: &ArrayRef, leaves: &mut Vec<ArrayRef>) {
    match array.data_type() {
        DataType::Struct(_) => array.as_struct().columns().iter().for_each(|child| leaf_arrays(child, leaves)),
        DataType::Map(..) => {
            let map = array.as_map();
            let items = |child: &ArrayRef| rows_items(child, map.value_offsets());
            leaf_arrays(&items(map.keys()), leaves);
            leaf_arrays(&items(map.values()), leaves);
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            leaf_arrays(&rows_items(list.values(), list.value_offsets()), leaves);
        }
        _ => leaves.push(Arc::clone(array)),
    }
}

/// The items of `items` that `offsets` point to.
fn rows_items(items: &ArrayRef, offsets: &[i32]) -> ArrayRef {
    let (first, last) = (offsets.first().copied().unwrap_or(0), offsets.last().copied().unwrap_or(0));
    items.slice(first as usize, (last - first) as usize)
}

fn looks_unique(arrays: &[ArrayRef]) -> bool {
    let strings = arrays.iter().filter_map(|array| array.as_string_opt::<i32>());
    let sample: Vec<&str> = strings.flat_map(|strings| strings.iter().flatten()).take(DICTIONARY_SAMPLE).collect();
    let distinct: HashSet<&str> = sample.iter().copied().collect();
    sample.len() >= 64 && distinct.len() * 10 > sample.len() * 9
}

/// String columns outside the sort order whose statistics a reader uses: `MetricRows`
/// settles a metric's unit by them.
fn pruning_string_columns(table: Table) -> &'static [&'static str] {
    if table.is_metrics() { &["MetricUnit"] } else { &[] }
}

/// Columns whose values are all but unique: a dictionary of them would cost time (hashing
/// every value) and space, and be abandoned anyway once it outgrew its page. A parent id
/// repeats once per sibling, but siblings are rarely neighbours in the sort order (without
/// its dictionary `ParentSpanId` took 1.3 bytes less per mesh span).
///
/// The string ones are written `DELTA_LENGTH_BYTE_ARRAY`: all lengths first, then all
/// bytes, so that zstd sees only hex digits rather than a length between every two ids.
/// That took 2.3 bytes off each mesh span (39.0 to 36.7).
fn unique_value_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Traces => &["SpanId", "ParentSpanId", "Timestamp", "Duration"],
        _ => &[],
    }
}

/// Some Parquet files of `table` as one DataFusion table (queries read the catalog's files
/// through it).
pub(crate) fn files_as_table(table: Table, paths: &[PathBuf]) -> datafusion::error::Result<ListingTable> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let urls = paths
        .iter()
        .map(|path| ListingTableUrl::parse(path.to_string_lossy()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(table.schema());
    ListingTable::try_new(config)
}

/// Merges sorted files of one partition into one sorted `.tmp` file, streaming (see
/// [`SortedMerge`]).
pub(crate) fn merge_sorted_files(
    data_dir: &Path,
    table: Table,
    hour: i64,
    inputs: &[PathBuf],
    config: &StorageConfig,
    resources: &ResourceCatalog,
) -> Result<Merged, StoreError> {
    let path = compaction_output(data_dir, table, hour);
    let mut merge = SortedMerge::open(table, inputs, COMPACTION_READ_ROWS, COMPACTION_BATCH_ROWS)?;
    // Trace ids per row group are at most the row group's rows: an upper bound that keeps
    // the filter's false-positive rate at or below its target.
    let trace_ids = config.row_group_rows as u64;
    let plain = PlainColumns::Listed(merge.plain_columns().to_vec());
    let file = FileSpec { path: &tmp_path(&path), table, kind: FileKind::Final, trace_ids, plain, resources };
    let mut rows = 0;
    let batches = std::iter::from_fn(|| merge.next_batch().transpose())
        .inspect(|batch| rows += batch.as_ref().map_or(0, RecordBatch::num_rows) as u64);
    let bytes = write_file(&file, config, batches)?;
    Ok(Merged { file: FileMeta { path, table, hour, bytes }, rows })
}

/// Concatenates final files of one partition into one `.tmp` file without decoding
/// them: each input's row groups are copied as they are, column chunk by column chunk, with
/// their statistics, page index and bloom filters. The result is sorted within each input's
/// stretch of row groups, not across them. `None` if an input was written under another
/// version of the table's schema, which only a merge can bring to the current one.
///
/// Merging files that are already compressed costs a decode and an encode of every row; a
/// copy costs neither, and their row groups, each sorted, compress as well where they are.
pub(crate) fn concatenate_files(data_dir: &Path, table: Table, hour: i64, inputs: &[PathBuf]) -> Result<Option<Merged>, StoreError> {
    let schema = parquet_schema(table)?;
    let mut sources = Vec::with_capacity(inputs.len());
    for input in inputs {
        let file = File::open(input).map_err(StoreError::io("open a compaction input"))?;
        let options = ReadOptionsBuilder::new()
            .with_page_index()
            .with_reader_properties(ReaderProperties::builder().set_read_bloom_filter(true).build())
            .build();
        let reader = file.try_clone().map_err(StoreError::io("open a compaction input"))?;
        let reader = SerializedFileReader::new_with_options(reader, options).map_err(corrupt(input))?;
        if reader.metadata().file_metadata().schema_descr().root_schema() != schema.root_schema() {
            return Ok(None);
        }
        sources.push((input, file, reader));
    }
    let Some((_, _, first)) = sources.first() else { return Ok(None) };
    // The key-value metadata holds the Arrow schema, the table's in every input.
    let key_values = first.metadata().file_metadata().key_value_metadata().cloned();
    let properties = WriterProperties::builder().set_key_value_metadata(key_values).build();
    let path = compaction_output(data_dir, table, hour);
    let tmp = File::create(tmp_path(&path)).map_err(StoreError::io("create parquet file"))?;
    let mut writer = SerializedFileWriter::new(tmp, schema.root_schema_ptr(), Arc::new(properties))
        .map_err(StoreError::parquet("open parquet writer"))?;
    let mut rows = 0;
    for (input, file, reader) in &sources {
        let metadata = reader.metadata();
        for (index, group) in metadata.row_groups().iter().enumerate() {
            let bloom_filters = reader.get_row_group(index).map_err(corrupt(input))?;
            let mut out = writer.next_row_group().map_err(StoreError::parquet("start a row group"))?;
            for (column, chunk) in group.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: chunk.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: chunk.clone(),
                    bloom_filter: bloom_filters.get_column_bloom_filter(column).cloned(),
                    column_index: metadata
                        .column_index()
                        .map(|indexes| indexes[index][column].clone())
                        .filter(|index| !matches!(index, ColumnIndexMetaData::NONE)),
                    offset_index: metadata.offset_index().map(|indexes| indexes[index][column].clone()),
                };
                out.append_column(file, close).map_err(corrupt(input))?;
            }
            out.close().map_err(StoreError::parquet("finish a row group"))?;
            rows += group.num_rows() as u64;
        }
    }
    let file = writer.into_inner().map_err(StoreError::parquet("finish parquet"))?;
    file.sync_all().map_err(StoreError::io("fsync parquet file"))?;
    let bytes = file.metadata().map_err(StoreError::io("stat parquet file"))?.len();
    Ok(Some(Merged { file: FileMeta { path, table, hour, bytes }, rows }))
}

/// Where a compaction of a partition writes its file (as a `.tmp` until committed).
fn compaction_output(data_dir: &Path, table: Table, hour: i64) -> PathBuf {
    partition_dir(data_dir, table, hour).join(format!("{}{}", new_id(), FileKind::Final.suffix()))
}

/// A compaction input that Parquet cannot read, reported by its path.
fn corrupt(input: &Path) -> impl Fn(parquet::errors::ParquetError) -> StoreError + '_ {
    move |error| StoreError::Corrupt(format!("{}: {error}", input.display()))
}

/// The file a compaction (merge or concatenation) wrote, and its rows.
pub(crate) struct Merged {
    pub(crate) file: FileMeta,
    pub(crate) rows: u64,
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, UInt64Array};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn series_batch(ids: &[Option<u64>]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("SeriesId", DataType::UInt64, true),
            Field::new("SeriesStart", DataType::Boolean, false),
        ]);
        let columns: Vec<arrow::array::ArrayRef> =
            vec![Arc::new(UInt64Array::from(ids.to_vec())), Arc::new(BooleanArray::from(vec![false; ids.len()]))];
        RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
    }

    fn starts(batch: &RecordBatch) -> Vec<bool> {
        batch.column(1).as_boolean().iter().map(Option::unwrap).collect()
    }

    /// Writes `spans` sample spans as a file of `kind` and reads back its metadata, page
    /// index included.
    fn sample_traces_file(kind: FileKind, spans: u64) -> parquet::file::metadata::ParquetMetaData {
        traces_file(kind, crate::test_data::sample_traces_batch(spans))
    }

    /// Writes `batch` of spans as a file of `kind` and reads back its metadata.
    fn traces_file(kind: FileKind, batch: RecordBatch) -> parquet::file::metadata::ParquetMetaData {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("traces.parquet");
        write_traces_file(&path, kind, batch);
        read_metadata(&path)
    }

    fn write_traces_file(path: &Path, kind: FileKind, batch: RecordBatch) {
        let trace_ids = batch.num_rows() as u64;
        let resources = &ResourceCatalog::default();
        let file = FileSpec { path, table: Table::Traces, kind, trace_ids, plain: PlainColumns::Sampled, resources };
        write_file(&file, &StorageConfig::default(), std::iter::once(Ok(batch))).expect("written");
    }

    /// Writes each of `batches` as a traces file of `kind` in `dir`, named as its kind is.
    fn write_inputs(dir: &Path, kind: FileKind, batches: impl IntoIterator<Item = RecordBatch>) -> Vec<PathBuf> {
        let write = |(index, batch)| {
            let path = dir.join(format!("{index}{}", kind.suffix()));
            write_traces_file(&path, kind, batch);
            path
        };
        batches.into_iter().enumerate().map(write).collect()
    }

    /// A file's metadata, page index included.
    fn read_metadata(path: &Path) -> parquet::file::metadata::ParquetMetaData {
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader = SerializedFileReader::new_with_options(File::open(path).expect("opened"), options).expect("a parquet file");
        reader.metadata().clone()
    }

    /// Spans each of a trace of its own, with a request id no other span has.
    fn unique_spans(spans: u64) -> RecordBatch {
        use crate::schema::Rejections;
        use crate::test_data::{attribute, convert_traces, request_with, span, string};

        let spans = (1..=spans)
            .map(|n| {
                let mut span = span(n, 1_000 + n);
                span.attributes = vec![attribute("request.id", string(&format!("request-{n}")))];
                span
            })
            .collect();
        convert_traces(&request_with(spans), &mut Rejections::default()).expect("valid spans")
    }

    /// Writes a few sample traces as a file of `kind` and reads back its first row group.
    fn sample_traces_row_group(kind: FileKind) -> parquet::file::metadata::RowGroupMetaData {
        sample_traces_file(kind, 3).row_group(0).clone()
    }

    #[test]
    fn pages_end_near_page_rows_in_every_column_nested_ones_included() {
        use parquet::file::properties::DEFAULT_WRITE_BATCH_SIZE;

        let spans = 3 * PAGE_ROWS as i64;
        let metadata = sample_traces_file(FileKind::Final, spans as u64);
        let columns = metadata.row_group(0).columns();
        let pages = &metadata.offset_index().expect("page index")[0];
        for name in ["ServiceName", "TraceId", "SpanAttributes.entries.keys"] {
            let column = columns.iter().position(|column| column.column_path().string() == name).expect(name);
            let mut bounds: Vec<i64> = pages[column].page_locations().iter().map(|page| page.first_row_index).collect();
            bounds.push(spans);
            let rows: Vec<i64> = bounds.windows(2).map(|pair| pair[1] - pair[0]).collect();
            // The writer checks the limit after each batch of values, so a page of a
            // repeated column may run past it by part of a batch.
            let most = (PAGE_ROWS + DEFAULT_WRITE_BATCH_SIZE) as i64;
            assert!(rows.len() >= 2 && rows.iter().all(|&rows| rows <= most), "{name}: pages of {rows:?} rows");
        }
    }

    fn column<'a>(
        row_group: &'a parquet::file::metadata::RowGroupMetaData,
        name: &str,
    ) -> &'a parquet::file::metadata::ColumnChunkMetaData {
        row_group.columns().iter().find(|column| column.column_path().string() == name).expect(name)
    }

    fn is_dictionary_encoded(row_group: &parquet::file::metadata::RowGroupMetaData, name: &str) -> bool {
        column(row_group, name).dictionary_page_offset().is_some()
    }

    #[test]
    fn files_keep_statistics_of_the_columns_queries_prune_by() {
        let row_group = sample_traces_row_group(FileKind::Flushed);
        let with_statistics: Vec<String> = row_group
            .columns()
            .iter()
            .filter(|column| column.statistics().is_some())
            .map(|column| column.column_path().string())
            .collect();
        for pruned_by in ["ServiceName", "SpanName", "Timestamp", "Duration"] {
            assert!(with_statistics.iter().any(|path| path == pruned_by), "{pruned_by}: {with_statistics:?}");
        }
        for unsorted_or_nested in ["TraceId", "StatusMessage", "SpanAttributes", "Events.Name"] {
            assert!(
                !with_statistics.iter().any(|path| path.starts_with(unsorted_or_nested)),
                "{unsorted_or_nested}: {with_statistics:?}"
            );
        }
    }

    #[test]
    fn files_have_dictionaries_of_repeating_columns_only() {
        for kind in [FileKind::Flushed, FileKind::Final] {
            let row_group = sample_traces_row_group(kind);
            assert!(is_dictionary_encoded(&row_group, "ServiceName"), "{kind:?}");
            assert!(is_dictionary_encoded(&row_group, "TraceId"), "{kind:?}");
            for unique in ["SpanId", "ParentSpanId", "Timestamp"] {
                assert!(!is_dictionary_encoded(&row_group, unique), "{unique} {kind:?}");
            }
            for id in ["SpanId", "ParentSpanId"] {
                let encodings = column(&row_group, id).encodings().collect::<Vec<_>>();
                assert!(encodings.contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY), "{id} {kind:?}: {encodings:?}");
            }
        }
    }

    #[test]
    fn columns_of_nearly_unique_values_get_no_dictionary() {
        let batch = unique_spans(200);
        for kind in [FileKind::Flushed, FileKind::Final] {
            let metadata = traces_file(kind, batch.clone());
            let row_group = metadata.row_group(0);
            for repeating in ["ServiceName", "SpanAttributes.entries.keys"] {
                assert!(is_dictionary_encoded(row_group, repeating), "{repeating} {kind:?}");
            }
            for unique in ["TraceId", "SpanAttributes.entries.values"] {
                assert!(!is_dictionary_encoded(row_group, unique), "{unique} {kind:?}");
                let encodings = column(row_group, unique).encodings().collect::<Vec<_>>();
                assert!(encodings.contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY), "{unique} {kind:?}: {encodings:?}");
            }
        }
    }

    #[test]
    fn a_slice_is_sampled_by_its_own_rows_items() {
        // Unique attribute values in the first 100 rows, the sample's repeating ones after.
        let batches = [unique_spans(100), crate::test_data::sample_traces_batch(100)];
        let batch = concat_batches(&Table::Traces.schema(), &batches).expect("concatenated");
        let plain = |sample: &RecordBatch| -> Vec<String> {
            let leaves = nearly_unique_leaves(Table::Traces, std::slice::from_ref(sample)).expect("sampled");
            leaves.iter().map(ColumnPath::string).collect()
        };
        let values = "SpanAttributes.entries.values".to_owned();
        assert!(plain(&batch.slice(0, 100)).contains(&values));
        assert!(!plain(&batch.slice(100, 100)).contains(&values), "the first rows' items are not the slice's");
    }

    #[test]
    fn a_merge_leaves_out_the_dictionaries_that_every_input_left_out() {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(partition_dir(dir.path(), Table::Traces, 0)).expect("partition directory");
        // Both inputs' trace ids are unique, but only one input's attribute values are.
        let batches = [unique_spans(200), crate::test_data::sample_traces_batch(200)];
        let inputs = write_inputs(dir.path(), FileKind::Flushed, batches);
        let merged = merge_sorted_files(dir.path(), Table::Traces, 0, &inputs, &StorageConfig::default(), &ResourceCatalog::default()).expect("merged");
        assert_eq!(merged.rows, 400);
        let metadata = read_metadata(&tmp_path(&merged.file.path));
        let row_group = metadata.row_group(0);
        assert!(!is_dictionary_encoded(row_group, "TraceId"));
        assert!(is_dictionary_encoded(row_group, "SpanAttributes.entries.values"));
        assert!(is_dictionary_encoded(row_group, "ServiceName"));
    }

    /// The `SpanId` column of a traces file, in file order.
    fn span_ids(path: &Path) -> Vec<String> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("opened")).expect("a parquet file");
        let batches = reader.build().expect("a reader").collect::<Result<Vec<_>, _>>().expect("read");
        assert!(batches.iter().all(|batch| batch.schema() == Table::Traces.schema()), "read back as the table");
        let ids = batches.iter().flat_map(|batch| {
            let column = batch.column_by_name("SpanId").expect("a SpanId column").as_string::<i32>().clone();
            (0..column.len()).map(move |row| column.value(row).to_owned())
        });
        ids.collect()
    }

    #[test]
    fn a_concatenation_keeps_every_row_and_each_row_groups_page_index_and_bloom_filter() {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(partition_dir(dir.path(), Table::Traces, 0)).expect("partition directory");
        let inputs = write_inputs(dir.path(), FileKind::Final, [crate::test_data::sample_traces_batch(300), unique_spans(200)]);

        let concatenated = concatenate_files(dir.path(), Table::Traces, 0, &inputs).expect("concatenated").expect("current schema");
        assert_eq!(concatenated.rows, 500);
        let path = tmp_path(&concatenated.file.path);
        assert_eq!(span_ids(&path), [span_ids(&inputs[0]), span_ids(&inputs[1])].concat());

        let options = ReadOptionsBuilder::new()
            .with_page_index()
            .with_reader_properties(ReaderProperties::builder().set_read_bloom_filter(true).build())
            .build();
        let reader = SerializedFileReader::new_with_options(File::open(&path).expect("opened"), options).expect("a parquet file");
        let metadata = reader.metadata();
        assert_eq!(metadata.num_row_groups(), 2);
        let trace_id = metadata.file_metadata().schema_descr().columns().iter().position(|c| c.name() == "TraceId").expect("TraceId");
        for group in 0..2 {
            let pages = &metadata.offset_index().expect("an offset index")[group][trace_id].page_locations;
            assert!(!pages.is_empty() && pages[0].offset >= 4, "page offsets point into this file");
            let filter = reader.get_row_group(group).expect("a row group").get_column_bloom_filter(trace_id).cloned();
            assert!(filter.is_some(), "row group {group} keeps its TraceId bloom filter");
        }
        // The second input's first trace is found through its row group's filter.
        let second = unique_spans(1);
        let first_trace = second.column_by_name("TraceId").expect("TraceId").as_string::<i32>().value(0);
        let filter = reader.get_row_group(1).expect("a row group").get_column_bloom_filter(trace_id).cloned().expect("a filter");
        assert!(filter.check(&first_trace));
    }

    #[test]
    fn a_flush_writes_runs_that_start_mid_batch_in_sort_order_with_bloom_filter_and_resources_once() {
        use crate::schema::Rejections;
        use crate::test_data::{convert_traces, request_with, span};

        // Two requests, each of 300 spans of op-a then 300 of op-b. The flush's sort order
        // takes each operation's rows from both: runs of 300 rows, half of them starting
        // mid-batch, which the flush writes as slices.
        const START: u64 = 1_700_000_000_000_000_000;
        let request = |first: u64| {
            let spans = (first..first + 600).map(|n| {
                let mut span = span(n, START + n);
                span.name = bytes::Bytes::from_static(if n - first < 300 { b"op-a" } else { b"op-b" });
                span
            });
            convert_traces(&request_with(spans.collect()), &mut Rejections::default()).expect("valid spans")
        };
        let batches = [request(0), request(1000)];
        let dir = tempfile::tempdir().expect("temporary directory");
        let resources = ResourceCatalog::default();
        let files = write_partitions(dir.path(), Table::Traces, &batches, &StorageConfig::default(), &resources).expect("flushed");
        assert_eq!(files.len(), 1);
        let path = tmp_path(&files[0].path);
        let runs = [0..300, 1000..1300, 300..600, 1300..1600];
        let expected: Vec<String> = runs.into_iter().flatten().map(|n: u64| hex::encode((n + 1).to_be_bytes())).collect();
        assert_eq!(span_ids(&path), expected);

        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).expect("opened")).expect("a parquet file");
        let read = reader.build().expect("a reader").collect::<Result<Vec<_>, _>>().expect("read");
        let carried: usize = read
            .iter()
            .map(|batch| batch.column_by_name("ResourceAttributes").expect("a column").logical_nulls().map_or(batch.num_rows(), |nulls| nulls.len() - nulls.null_count()))
            .sum();
        assert_eq!(carried, 1, "the resource's attributes, once in the file");

        let options = ReadOptionsBuilder::new()
            .with_reader_properties(ReaderProperties::builder().set_read_bloom_filter(true).build())
            .build();
        let reader = SerializedFileReader::new_with_options(File::open(&path).expect("opened"), options).expect("a parquet file");
        let trace_id = reader.metadata().file_metadata().schema_descr().columns().iter().position(|c| c.name() == "TraceId").expect("TraceId");
        let filter = reader.get_row_group(0).expect("a row group").get_column_bloom_filter(trace_id).cloned().expect("a filter");
        let last_trace = batches[1].column_by_name("TraceId").expect("TraceId").as_string::<i32>().value(599);
        assert!(filter.check(&last_trace));
    }

    #[test]
    fn a_small_flush_of_spans_is_left_for_a_merge() {
        let config = StorageConfig { row_group_rows: 8000, ..StorageConfig::default() };
        assert_eq!(FileKind::of_flush(Table::Traces, 999, &config), FileKind::Flushed);
        assert_eq!(FileKind::of_flush(Table::Logs, 1000, &config), FileKind::Final);
        assert_eq!(FileKind::of_flush(Table::MetricsSum, 100_000, &config), FileKind::Flushed);
    }

    #[test]
    fn a_flush_orders_rows_by_hour_then_by_the_sort_columns_then_by_arrival() {
        use crate::schema::Rejections;
        use crate::test_data::{convert_traces, request_with, span};

        const HOUR: u64 = 1_700_002_800_000_000_000;
        let batch = |spans: &[(u64, u64)]| {
            let request = request_with(spans.iter().map(|&(n, start)| span(n, start)).collect());
            convert_traces(&request, &mut Rejections::default()).expect("valid spans")
        };
        // Spans named op-n, starting just before or after the hour.
        let batches = [
            batch(&[(3, HOUR + 5), (1, HOUR - 5), (2, HOUR + 1)]),
            batch(&[(1, HOUR + 2), (3, HOUR - 9), (1, HOUR - 7)]),
        ];
        let hour = hour_of(HOUR as i64);
        assert_eq!(
            sorted_rows_by_hour(Table::Traces, &batches).expect("sorted"),
            [(hour - 1, vec![(0, 1), (1, 2), (1, 1)]), (hour, vec![(1, 0), (0, 2), (0, 0)])]
        );
    }

    #[test]
    fn a_series_starts_where_its_run_of_ids_starts_across_batches() {
        let mut marks = SeriesStarts::default();
        let first = marks.mark(series_batch(&[Some(7), Some(7), Some(9)])).expect("marked");
        let second = marks.mark(series_batch(&[Some(9), Some(4), None, None, Some(4)])).expect("marked");
        assert_eq!(starts(&first), [true, false, true]);
        // The run of 9 goes on from the batch before; rows without an id each start.
        assert_eq!(starts(&second), [false, true, true, true, true]);
    }
}
