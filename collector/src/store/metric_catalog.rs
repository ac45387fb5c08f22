//! Which metrics the metric tables hold, with the time span of their points: the catalog
//! PromQL starts every selector from. Every write adds to it (and the start rebuilds it from
//! the Parquet files and the WAL), so no query has to scan the metric tables to list
//! metrics. Queries read it as the SQL table [`TABLE_NAME`].
//!
//! An entry goes when retention has deleted every point of its metric
//! ([`MetricCatalog::forget_older_than`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, BooleanArray, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit, TimestampNanosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::catalog::hour_of;
use crate::schema::Table;

/// The catalog's name in SQL.
pub const TABLE_NAME: &str = "meshlight_metrics";

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

/// The columns a catalog entry is built from.
const COLUMNS: [&str; 6] = ["MetricName", "MetricUnit", "MetricDescription", "TimeUnix", "IsMonotonic", "AggregationTemporality"];

#[derive(Debug, Default, Clone)]
pub(crate) struct MetricCatalog {
    entries: HashMap<(Table, String, String), Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The greatest description seen, so the choice does not depend on arrival order.
    description: String,
    /// A monotonic cumulative sum: a Prometheus counter.
    counter: bool,
    first_nanos: i64,
    last_nanos: i64,
}

/// The SQL schema: `Table`, `MetricName`, `MetricUnit`, `MetricDescription`, `IsCounter`,
/// `FirstTimeUnix`, `LastTimeUnix`.
pub(crate) fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let time = DataType::Timestamp(TimeUnit::Nanosecond, None);
        Arc::new(Schema::new(vec![
            Field::new("Table", DataType::Utf8, false),
            Field::new("MetricName", DataType::Utf8, false),
            Field::new("MetricUnit", DataType::Utf8, false),
            Field::new("MetricDescription", DataType::Utf8, false),
            Field::new("IsCounter", DataType::Boolean, false),
            Field::new("FirstTimeUnix", time.clone(), false),
            Field::new("LastTimeUnix", time, false),
        ]))
    });
    SCHEMA.clone()
}

impl MetricCatalog {
    /// Adds the metrics a batch of `table` holds; batches of spans and logs add nothing.
    pub(crate) fn record(&mut self, table: Table, batch: &RecordBatch) {
        if !table.is_metrics() || batch.num_rows() == 0 {
            return;
        }
        let strings = |name: &str| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
        let times = batch.column_by_name("TimeUnix").and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>());
        let (Some(names), Some(units), Some(descriptions), Some(times)) =
            (strings("MetricName"), strings("MetricUnit"), strings("MetricDescription"), times)
        else {
            return;
        };
        let monotonic = batch.column_by_name("IsMonotonic").and_then(|c| c.as_boolean_opt());
        let temporality = batch.column_by_name("AggregationTemporality").and_then(|c| c.as_primitive_opt::<Int32Type>());
        let is_counter = |row: usize| match (monotonic, temporality) {
            (Some(monotonic), Some(temporality)) => monotonic.value(row) && temporality.value(row) == CUMULATIVE,
            _ => false,
        };
        // Rows of one metric come in runs (a request's points are grouped by metric, files
        // are sorted by service and metric), so each run is looked up once.
        let mut start = 0;
        while start < batch.num_rows() {
            let (name, unit) = (names.value(start), units.value(start));
            let mut end = start + 1;
            while end < batch.num_rows() && names.value(end) == name && units.value(end) == unit {
                end += 1;
            }
            let entry = self.entries.entry((table, name.to_owned(), unit.to_owned())).or_insert_with(|| Entry {
                description: String::new(),
                counter: false,
                first_nanos: i64::MAX,
                last_nanos: i64::MIN,
            });
            for row in start..end {
                let time = times.value(row);
                entry.first_nanos = entry.first_nanos.min(time);
                entry.last_nanos = entry.last_nanos.max(time);
                entry.counter |= is_counter(row);
                if !descriptions.is_null(row) && descriptions.value(row) > entry.description.as_str() {
                    descriptions.value(row).clone_into(&mut entry.description);
                }
            }
            start = end;
        }
    }

    /// Adds everything `other` holds.
    pub(crate) fn merge(&mut self, other: &MetricCatalog) {
        for (key, theirs) in &other.entries {
            match self.entries.get_mut(key) {
                Some(ours) => {
                    ours.first_nanos = ours.first_nanos.min(theirs.first_nanos);
                    ours.last_nanos = ours.last_nanos.max(theirs.last_nanos);
                    ours.counter |= theirs.counter;
                    if theirs.description > ours.description {
                        ours.description.clone_from(&theirs.description);
                    }
                }
                None => {
                    self.entries.insert(key.clone(), theirs.clone());
                }
            }
        }
    }

    /// Forgets the metrics whose points are all in partitions before `hour`, which
    /// retention has deleted.
    pub(crate) fn forget_older_than(&mut self, hour: i64) {
        self.entries.retain(|_, entry| hour_of(entry.last_nanos) >= hour);
    }

    /// How many metrics it lists.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the metrics of a Parquet file of `table`, reading only the catalog's columns.
    pub(crate) fn record_file(&mut self, table: Table, path: &Path) -> io::Result<()> {
        if !table.is_metrics() {
            return Ok(());
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(io::Error::other)?;
        let roots: Vec<usize> = COLUMNS.iter().filter_map(|name| builder.schema().index_of(name).ok()).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        for batch in builder.with_projection(mask).build().map_err(io::Error::other)? {
            self.record(table, &batch.map_err(io::Error::other)?);
        }
        Ok(())
    }

    /// The catalog as one batch of [`schema`].
    pub(crate) fn to_batch(&self) -> Result<RecordBatch, ArrowError> {
        let entries: Vec<_> = self.entries.iter().collect();
        let strings = |value: for<'e> fn(&'e (Table, String, String), &'e Entry) -> &'e str| -> Arc<dyn Array> {
            Arc::new(entries.iter().map(|(key, entry)| Some(value(key, entry))).collect::<StringArray>())
        };
        let times = |value: fn(&Entry) -> i64| -> Arc<dyn Array> {
            Arc::new(entries.iter().map(|(_, entry)| Some(value(entry))).collect::<TimestampNanosecondArray>())
        };
        let columns = vec![
            strings(|key, _| key.0.name()),
            strings(|key, _| &key.1),
            strings(|key, _| &key.2),
            strings(|_, entry| &entry.description),
            Arc::new(entries.iter().map(|(_, entry)| Some(entry.counter)).collect::<BooleanArray>()),
            times(|entry| entry.first_nanos),
            times(|entry| entry.last_nanos),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray};

    use super::*;
    use crate::store::catalog::NANOS_PER_HOUR;

    /// Points of the metrics `names`, one each, at `nanos`.
    fn points(names: &[&str], nanos: i64) -> RecordBatch {
        let strings = |value: &dyn Fn(&str) -> String| -> ArrayRef {
            Arc::new(names.iter().map(|name| Some(value(name))).collect::<StringArray>())
        };
        let times: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![nanos; names.len()]));
        RecordBatch::try_from_iter([
            ("MetricName", strings(&|name| name.to_owned())),
            ("MetricUnit", strings(&|_| "s".to_owned())),
            ("MetricDescription", strings(&|_| String::new())),
            ("TimeUnix", times),
        ])
        .expect("a batch of points")
    }

    #[test]
    fn a_metric_is_forgotten_once_retention_has_deleted_all_its_points() {
        let mut catalog = MetricCatalog::default();
        catalog.record(Table::MetricsGauge, &points(&["queue_depth", "retired"], 10 * NANOS_PER_HOUR));
        catalog.record(Table::MetricsGauge, &points(&["queue_depth"], 12 * NANOS_PER_HOUR + 1));
        catalog.forget_older_than(10);
        assert_eq!(catalog.len(), 2);
        catalog.forget_older_than(11);
        let names = catalog.to_batch().expect("the catalog as a batch");
        let names: Vec<&str> = names.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, ["queue_depth"]);
    }
}
