//! The Parquet files that make up each table, and where they live:
//! `<data>/<table>/date=YYYY-MM-DD/hour=HH/<id>.parquet`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::TimestampNanosecondType;

use crate::schema::Table;

/// Nanoseconds in an hour: the partition width.
pub(crate) const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub(crate) path: PathBuf,
    pub(crate) table: Table,
    /// Hours since the epoch of the partition (all rows' event times fall in it).
    pub(crate) hour: i64,
    pub(crate) bytes: u64,
}

/// The event times of the rows of a batch of `table`, which decide their partitions.
pub(crate) fn event_times(table: Table, batch: &RecordBatch) -> Option<&TimestampNanosecondArray> {
    batch.column_by_name(table.time_column())?.as_primitive_opt::<TimestampNanosecondType>()
}

/// The partition (hours since the epoch) of an event time.
pub(crate) fn hour_of(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_HOUR)
}

/// How the name of an uncompressed flushed file ends, which compaction merges: flushes of
/// metrics and profiles, and small flushes of spans and log records (see
/// `parquet::FileKind`). Every other file, of a larger flush of spans or log records or of
/// a compaction, ends in plain `.parquet`.
pub(crate) const FLUSHED_SUFFIX: &str = ".flush.parquet";

impl FileMeta {
    /// Whether this is an uncompressed flushed file, which compaction merges.
    pub(crate) fn is_flushed(&self) -> bool {
        self.path.file_name().is_some_and(|name| name.to_string_lossy().ends_with(FLUSHED_SUFFIX))
    }
}

/// The directory of a table's partition for `hour` (hours since the epoch).
pub(crate) fn partition_dir(data_dir: &Path, table: Table, hour: i64) -> PathBuf {
    let start = arrow::temporal_conversions::timestamp_s_to_datetime(hour * 3600);
    let (date, hour_of_day) = match start {
        Some(start) => (start.format("%Y-%m-%d").to_string(), start.format("%H").to_string()),
        None => ("invalid".to_owned(), hour.to_string()),
    };
    data_dir.join(table.name()).join(format!("date={date}")).join(format!("hour={hour_of_day}"))
}

/// Hours since the epoch for a `date=…/hour=…` directory, as [`partition_dir`] names them.
fn parse_partition(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let mut date = date_dir.strip_prefix("date=")?.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: i64 = date.next()?.parse().ok()?;
    let day: i64 = date.next()?.parse().ok()?;
    let hour: i64 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && (0..24).contains(&hour);
    valid.then(|| days_from_civil(year, month, day) * 24 + hour)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Every table's files.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    files: BTreeMap<Table, Vec<Arc<FileMeta>>>,
}

impl Catalog {
    /// Finds the files of every table under `data_dir`.
    pub(crate) fn load(data_dir: &Path) -> std::io::Result<Self> {
        let mut catalog = Catalog::default();
        for table in Table::ALL {
            let table_dir = data_dir.join(table.name());
            if !table_dir.exists() {
                continue;
            }
            for date in fs::read_dir(&table_dir)? {
                let date = date?;
                for hour in fs::read_dir(date.path())? {
                    let hour = hour?;
                    let partition = parse_partition(
                        &date.file_name().to_string_lossy(),
                        &hour.file_name().to_string_lossy(),
                    );
                    let Some(partition) = partition else {
                        tracing::warn!(path = %hour.path().display(), "ignoring a directory that is not a partition");
                        continue;
                    };
                    for file in fs::read_dir(hour.path())? {
                        let file = file?;
                        let path = file.path();
                        if path.extension().is_some_and(|ext| ext == "parquet") {
                            let bytes = file.metadata()?.len();
                            catalog.add(FileMeta { path, table, hour: partition, bytes });
                        }
                    }
                }
            }
        }
        Ok(catalog)
    }

    pub(crate) fn add(&mut self, file: FileMeta) {
        self.files.entry(file.table).or_default().push(Arc::new(file));
    }

    pub(crate) fn remove(&mut self, table: Table, paths: &[PathBuf]) {
        if let Some(files) = self.files.get_mut(&table) {
            files.retain(|file| !paths.contains(&file.path));
        }
    }

    pub(crate) fn files(&self, table: Table) -> Vec<Arc<FileMeta>> {
        self.files.get(&table).cloned().unwrap_or_default()
    }

    /// Files of `table` grouped by partition hour, oldest first.
    pub(crate) fn partitions(&self, table: Table) -> BTreeMap<i64, Vec<Arc<FileMeta>>> {
        let mut partitions: BTreeMap<i64, Vec<Arc<FileMeta>>> = BTreeMap::new();
        for file in self.files(table) {
            partitions.entry(file.hour).or_default().push(file);
        }
        partitions
    }

    /// The partition hour of the oldest file of any table.
    pub(crate) fn oldest_hour(&self) -> Option<i64> {
        self.files.values().flatten().map(|file| file.hour).min()
    }

    /// (file count, bytes) of a table.
    pub(crate) fn totals(&self, table: Table) -> (usize, u64) {
        let files = self.files.get(&table).map(Vec::as_slice).unwrap_or_default();
        (files.len(), files.iter().map(|f| f.bytes).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directories_round_trip() {
        let data = Path::new("/data");
        for hour in [0, 1, 23, 24, 490_000, 499_999] {
            let dir = partition_dir(data, Table::Traces, hour);
            let date = dir.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            let hour_dir = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            let parsed = parse_partition(&date.unwrap_or_default(), &hour_dir.unwrap_or_default());
            assert_eq!(parsed, Some(hour), "{}", dir.display());
        }
        assert!(partition_dir(data, Table::Traces, 0).ends_with("otel_traces/date=1970-01-01/hour=00"));
    }
}
