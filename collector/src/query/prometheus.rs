//! Stored OpenTelemetry metrics as Prometheus series, read straight from the store, for
//! the PromQL engine.
//!
//! The translation is the one of Prometheus's OTLP receiver and the OpenTelemetry
//! Collector's Prometheus exporters:
//! - names: characters outside `[a-zA-Z0-9_:]` become `_`, then the unit is appended as a
//!   word (`s` → `_seconds`, `By` → `_bytes`, `{request}` annotations dropped, `m/s` →
//!   `_meters_per_second`, unit `1` on a gauge → `_ratio`), then `_total` for monotonic
//!   cumulative sums;
//! - histograms: `<name>_bucket{le="…"}` with cumulative counts (`le="+Inf"` is the
//!   count), `<name>_sum` and `<name>_count`; summaries: `<name>{quantile="…"}`,
//!   `<name>_sum`, `<name>_count`; exponential histograms are native histograms and are
//!   not exposed;
//! - labels: data point attributes with the same character rule (a leading digit gets
//!   `key_`), plus `job` (`service.namespace/service.name`), `instance`
//!   (`service.instance.id`) and `service_name` from the resource;
//! - a gauge or sum point flagged "no recorded value" is a staleness marker: the series
//!   ended there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use promql_parser::label::Matcher;
use tokio::sync::OnceCell;

use super::QueryError;
use super::cache::BoundedCache;
use super::metric_rows::{MetricRows, RowCondition};
use crate::schema::Table;
use crate::promql::{self, format_value, Labels, METRIC_NAME, Millis, Selection, SeriesSource, StoredSeries};

/// OTLP's `DataPointFlags.NO_RECORDED_VALUE`: the series ended, which PromQL reads as a
/// staleness marker.
pub const NO_RECORDED_VALUE: u32 = 1;

/// How a stored metric appears to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// A monotonic cumulative sum.
    Counter,
    Histogram,
    Summary,
}

impl MetricKind {
    /// The `type` of Prometheus's metadata API.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// One stored metric and its Prometheus name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub table: Table,
    pub otel_name: String,
    pub unit: String,
    pub description: String,
    pub kind: MetricKind,
    /// The base name; histograms and summaries add `_bucket`, `_sum` and `_count`.
    pub name: String,
}

impl CatalogEntry {
    /// The series names this metric contributes.
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Gauge | MetricKind::Counter => vec![self.name.clone()],
            MetricKind::Histogram => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
            MetricKind::Summary => ["", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
        }
    }
}

/// The Prometheus base name of an OpenTelemetry metric.
pub fn prometheus_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut out = sanitize(name);
    let unit_words = unit_suffix(unit, kind);
    if !unit_words.is_empty() && !out.ends_with(&format!("_{unit_words}")) {
        out.push('_');
        out.push_str(&unit_words);
    }
    if kind == MetricKind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// `[a-zA-Z0-9_:]` kept, runs of anything else become one `_`; a leading digit gets `_`.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label name: the name rule, with `key_` before a leading digit.
pub fn label_name(key: &str) -> String {
    let mut out: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// The words a UCUM unit adds to a name (`ms` → `milliseconds`, `By/s` → `bytes_per_second`).
fn unit_suffix(unit: &str, kind: MetricKind) -> String {
    let unit = strip_annotations(unit);
    if unit == "1" {
        return if kind == MetricKind::Gauge { "ratio".into() } else { String::new() };
    }
    let (main, per) = unit.split_once('/').unwrap_or((&unit, ""));
    let main = unit_word(main).map(str::to_owned).unwrap_or_else(|| sanitize(main).trim_matches('_').to_owned());
    let per = if per.is_empty() {
        String::new()
    } else {
        per_unit_word(per).map(str::to_owned).unwrap_or_else(|| sanitize(per).trim_matches('_').to_owned())
    };
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The stored metrics, read straight from the store ([`MetricRows`]).
pub struct StoredMetrics<'a> {
    rows: &'a MetricRows,
    labels: &'a SeriesLabels,
    /// Most rows one read may return.
    max_rows: usize,
    /// The metric catalog, with each metric's first and last point (nanoseconds), read at
    /// most once: every selector of a query looks metrics up in it.
    catalog: OnceCell<Vec<(CatalogEntry, i64, i64)>>,
}

impl<'a> StoredMetrics<'a> {
    pub fn new(rows: &'a MetricRows, labels: &'a SeriesLabels, max_rows: usize) -> Self {
        Self { rows, labels, max_rows, catalog: OnceCell::new() }
    }

    /// Every metric with a point in `[start, end]` (milliseconds), from the store's metric
    /// catalog rather than from the metric tables.
    pub async fn catalog(&self, start: Millis, end: Millis) -> promql::Result<Vec<CatalogEntry>> {
        let (start, end) = (start.saturating_mul(1_000_000), end.saturating_mul(1_000_000));
        let catalog = self.catalog.get_or_try_init(|| async { self.read_catalog() }).await?;
        Ok(catalog.iter().filter(|(_, first, last)| *last >= start && *first <= end).map(|(entry, _, _)| entry.clone()).collect())
    }

    fn read_catalog(&self) -> promql::Result<Vec<(CatalogEntry, i64, i64)>> {
        let batch = self.rows.catalog().map_err(storage_error)?;
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| storage_error(QueryError::Execution(format!("the metric catalog has no {name}"))));
        let (tables, names, units, descriptions) =
            (column("Table")?.as_string::<i32>(), column("MetricName")?.as_string::<i32>(), column("MetricUnit")?.as_string::<i32>(), column("MetricDescription")?.as_string::<i32>());
        let counters = column("IsCounter")?.as_boolean();
        let (firsts, lasts) = (column("FirstTimeUnix")?.as_primitive::<TimestampNanosecondType>(), column("LastTimeUnix")?.as_primitive::<TimestampNanosecondType>());
        let mut entries = Vec::new();
        for row in 0..batch.num_rows() {
            let Some(table) = Table::ALL.into_iter().find(|t| t.name() == tables.value(row)) else { continue };
            let kind = match table {
                Table::MetricsHistogram => MetricKind::Histogram,
                Table::MetricsSummary => MetricKind::Summary,
                _ if counters.value(row) => MetricKind::Counter,
                _ => MetricKind::Gauge,
            };
            let (otel_name, unit) = (names.value(row), units.value(row));
            let entry = CatalogEntry {
                table,
                otel_name: otel_name.to_owned(),
                unit: unit.to_owned(),
                description: if descriptions.is_null(row) { String::new() } else { descriptions.value(row).to_owned() },
                kind,
                name: prometheus_name(otel_name, unit, kind),
            };
            entries.push((entry, firsts.value(row), lasts.value(row)));
        }
        Ok(entries)
    }

    /// The rows of `entry` that meet `condition`, in `columns`.
    async fn rows(&self, entry: &CatalogEntry, condition: RowCondition, columns: Vec<&'static str>) -> promql::Result<Vec<RecordBatch>> {
        self.rows.read(entry.table, condition, columns, self.max_rows).await.map_err(storage_error)
    }

    /// The selected series of one stored metric with their samples, in storage order.
    async fn read(&self, entry: &CatalogEntry, selection: &Selection<'_>) -> promql::Result<Vec<(Labels, Vec<(Millis, f64)>)>> {
        let names: Vec<_> = selection.matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
        let wants = |suffix: &str| names.iter().all(|m| m.is_match(&format!("{}{suffix}", entry.name)));
        // The per-point series: a histogram's buckets, a summary's quantiles.
        let points_suffix = if entry.kind == MetricKind::Histogram { "_bucket" } else { "" };
        let (want_value, want_points, want_count, want_sum) = (wants(""), wants(points_suffix), wants("_count"), wants("_sum"));
        // Only the columns a wanted series needs are read: the bucket and quantile lists
        // cost the most to decode, and `_count` or `_sum` alone needs neither.
        let mut columns = vec!["SeriesId", "TimeUnix"];
        let (points, bounds) = match entry.kind {
            MetricKind::Gauge | MetricKind::Counter => {
                columns.extend(["Value", "Flags"]);
                ("", "")
            }
            MetricKind::Histogram => ("BucketCounts", "ExplicitBounds"),
            MetricKind::Summary => ("ValueAtQuantiles.Value", "ValueAtQuantiles.Quantile"),
        };
        if matches!(entry.kind, MetricKind::Histogram | MetricKind::Summary) {
            columns.push("Count");
            if want_sum {
                columns.push("Sum");
            }
            if want_points {
                columns.extend([points, bounds]);
            }
        }
        let condition = self.condition(entry, selection, selection.start);
        let mut series = SeriesSlots::new(&entry.name, selection);
        let batches = if narrows_stored_series(selection) {
            // Labels first, so that only the rows of series the selection may select are read.
            let ids = self.series_ids(entry, selection).await?;
            self.add_labels(entry, selection, &mut series, ids).await?;
            let selectable = series.selectable_ids();
            if selectable.is_empty() {
                return Ok(Vec::new());
            }
            self.rows(entry, RowCondition { series: Some(Arc::new(selectable)), ..condition }, columns).await?
        } else {
            // Every series may be selected: samples first, then the labels of the series
            // they hold.
            let batches = self.rows(entry, condition, columns).await?;
            let ids = batches.iter().flat_map(|batch| batch.column(0).as_primitive::<UInt64Type>().iter().flatten());
            self.add_labels(entry, selection, &mut series, ids).await?;
            batches
        };
        for batch in &batches {
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let times = batch.column(1).as_primitive::<TimestampNanosecondType>();
            let column = |name: &str| batch.column_by_name(name);
            let (values, flags) = (column("Value").map(|c| c.as_primitive::<Float64Type>()), column("Flags").map(|c| c.as_primitive::<UInt32Type>()));
            let (counts, sums) = (column("Count").map(|c| c.as_primitive::<UInt64Type>()), column("Sum").map(|c| c.as_primitive::<Float64Type>()));
            let (points, bounds) = (column(points).map(|c| c.as_list::<i32>()), column(bounds).map(|c| c.as_list::<i32>()));
            for row in 0..batch.num_rows() {
                let at = times.value(row).div_euclid(1_000_000);
                // Rows of a series the label read did not see arrived after it.
                let Some(mut row) = series.row(ids.value(row), row, at) else { continue };
                let index = row.index;
                if let (Some(values), Some(flags)) = (values, flags) {
                    if want_value {
                        let value = if flags.value(index) & NO_RECORDED_VALUE != 0 { promql::STALE_NAN } else { values.value(index) };
                        row.push("", None, value);
                    }
                    continue;
                }
                let count = counts.map_or(0.0, |counts| counts.value(index) as f64);
                if want_count {
                    row.push("_count", None, count);
                }
                if let Some(sums) = sums {
                    row.push("_sum", None, sums.value(index));
                }
                let (Some(points), Some(bounds)) = (points, bounds) else { continue };
                let (points, bounds) = (points.value(index), bounds.value(index));
                if entry.kind == MetricKind::Histogram {
                    let (counts, bounds) = (points.as_primitive::<UInt64Type>(), bounds.as_primitive::<Float64Type>());
                    let mut cumulative = 0.0;
                    for (i, bound) in bounds.values().iter().enumerate() {
                        cumulative += counts.values().get(i).copied().unwrap_or(0) as f64;
                        row.push("_bucket", Some(("le", *bound)), cumulative);
                    }
                    row.push("_bucket", Some(("le", f64::INFINITY)), count);
                } else {
                    let (values, quantiles) = (points.as_primitive::<Float64Type>(), bounds.as_primitive::<Float64Type>());
                    for (quantile, value) in quantiles.values().iter().zip(values.values()) {
                        row.push("", Some(("quantile", *quantile)), *value);
                    }
                }
            }
        }
        Ok(series.series)
    }

    /// The rows of `entry` timed from `start` to the selection's end, of the services its
    /// `service_name` matchers select (rows without a service are always read; the
    /// matchers are applied to every label set afterwards anyway).
    fn condition(&self, entry: &CatalogEntry, selection: &Selection<'_>, start: Millis) -> RowCondition {
        RowCondition {
            metric: entry.otel_name.clone(),
            unit: entry.unit.clone(),
            start: start.saturating_mul(1_000_000),
            end: selection.end.saturating_mul(1_000_000),
            series_starts_only: false,
            services: selection.matchers.iter().filter(|m| m.name == "service_name").cloned().collect(),
            series: None,
        }
    }

    /// The rows that start a series of `entry` with a row in the selection's time span, and
    /// some more. A file holds one hour and marks the earliest row of each of its series, so a
    /// series with a row in `[start, end]` has a marked row in `[start's hour, end]`; rows not
    /// yet in a file are all marked.
    fn series_starts(&self, entry: &CatalogEntry, selection: &Selection<'_>) -> RowCondition {
        let hour = selection.start.saturating_sub(selection.start.rem_euclid(MILLIS_PER_HOUR));
        RowCondition { series_starts_only: true, ..self.condition(entry, selection, hour) }
    }

    /// Adds to `series` the labels of the stored series `ids`: from the label cache, else
    /// read.
    async fn add_labels(&self, entry: &CatalogEntry, selection: &Selection<'_>, series: &mut SeriesSlots<'_>, ids: impl IntoIterator<Item = u64>) -> promql::Result<()> {
        let mut missing = HashSet::new();
        let mut previous = None;
        for id in ids {
            // Rows come in runs of one series: most ids repeat the one before.
            if previous.replace(id) == Some(id) || series.contains(id) {
                continue;
            }
            match self.labels.get(id) {
                Some(labels) => series.add(id, labels),
                None => {
                    missing.insert(id);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        for (id, labels) in self.series_labels(entry, selection, missing).await? {
            series.add(id, labels);
        }
        Ok(())
    }

    /// The ids of the stored series of `entry` that have a row in the selection's time span
    /// (see [`Self::series_starts`]), without their labels.
    async fn series_ids(&self, entry: &CatalogEntry, selection: &Selection<'_>) -> promql::Result<HashSet<u64>> {
        let batches = self.rows(entry, self.series_starts(entry, selection), vec!["SeriesId"]).await?;
        Ok(batches.iter().flat_map(|batch| batch.column(0).as_primitive::<UInt64Type>().iter().flatten()).collect())
    }

    /// The labels of the stored series `ids` of `entry` that have a row in the selection's
    /// time span, read from the rows that start a series in each file (`SeriesStart`) rather
    /// than from every row, and kept in the label cache.
    async fn series_labels(&self, entry: &CatalogEntry, selection: &Selection<'_>, ids: HashSet<u64>) -> promql::Result<HashMap<u64, Arc<SeriesLabelSet>>> {
        let condition = RowCondition { series: Some(Arc::new(ids)), ..self.series_starts(entry, selection) };
        let batches = self.rows(entry, condition, vec!["SeriesId", "ResourceAttributes", "Attributes"]).await?;
        let mut found: HashMap<u64, Arc<SeriesLabelSet>> = HashMap::new();
        for batch in &batches {
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let (resources, attributes) = (batch.column(1).as_map(), batch.column(2).as_map());
            for row in 0..batch.num_rows() {
                found.entry(ids.value(row)).or_insert_with(|| Arc::new(series_labels(resources, attributes, row)));
            }
        }
        for (id, labels) in &found {
            self.labels.insert(*id, labels.clone());
        }
        Ok(found)
    }
}

/// A stored series' labels without the name.
type SeriesLabelSet = BTreeMap<String, String>;

/// The labels of stored series by `SeriesId`, shared by every query: a series' labels never
/// change, so once read they need not be read again.
pub struct SeriesLabels(BoundedCache<u64, Arc<SeriesLabelSet>>);

impl SeriesLabels {
    /// Holds at most `max_bytes` (an estimate); when full, the oldest are dropped first.
    pub fn new(max_bytes: usize) -> Self {
        Self(BoundedCache::new(max_bytes))
    }

    fn get(&self, id: u64) -> Option<Arc<SeriesLabelSet>> {
        self.0.get(&id)
    }

    fn insert(&self, id: u64, labels: Arc<SeriesLabelSet>) {
        /// Bytes an entry and each of its labels cost beyond the strings.
        const OVERHEAD: usize = 64;
        let bytes = OVERHEAD + labels.iter().map(|(name, value)| name.len() + value.len() + OVERHEAD).sum::<usize>();
        self.0.insert(id, labels, bytes);
    }
}

/// Whether matchers may leave out some stored series of a metric: a matcher on a label other
/// than the name, a point's `le` or `quantile`, and `service_name` (which storage applies
/// itself, [`service_filter`]).
fn narrows_stored_series(selection: &Selection<'_>) -> bool {
    let narrows = |m: &Matcher| !POINT_LABELS.contains(&m.name.as_str()) && m.name != "service_name";
    selection.matchers.iter().chain(selection.or_matchers.iter().flatten()).any(narrows)
}

const MILLIS_PER_HOUR: Millis = 3_600_000;

/// The series the rows of one stored metric feed, resolved once per stored series: its
/// labels are built from its first marked row, and the series they make with each suffix
/// (and `le` or `quantile`) are matched against the selection on the first sample only.
struct SeriesSlots<'a> {
    name: &'a str,
    selection: &'a Selection<'a>,
    /// `SeriesId` → index in `stored`, or `None` when the selection selects none of the
    /// series it feeds.
    stored_by_id: HashMap<u64, Option<usize>>,
    stored: Vec<StoredSlots>,
    series: Vec<(Labels, Vec<(Millis, f64)>)>,
    /// The previous row's id and stored series: rows are sorted by series, so most rows
    /// repeat the row before and skip the hash lookup.
    previous: Option<(u64, Option<usize>)>,
}

/// One stored series: its labels without the name, and the series it feeds.
struct StoredSlots {
    id: u64,
    labels: Arc<SeriesLabelSet>,
    slots: Vec<Slot>,
}

/// A series a stored series feeds.
struct Slot {
    suffix: &'static str,
    /// The bits of the extra label's value (`le`, `quantile`), if any.
    extra: Option<u64>,
    /// Its index in [`SeriesSlots::series`], or `None` when the selection does not select it.
    series: Option<usize>,
}

/// One row being read: [`RowSlots::push`] adds its samples.
struct RowSlots<'s, 'a> {
    slots: &'s mut SeriesSlots<'a>,
    index: usize,
    at: Millis,
    stored: usize,
}

/// Labels a data point adds to its series' own: the name, and a bucket's or quantile's bound.
const POINT_LABELS: [&str; 3] = [METRIC_NAME, "le", "quantile"];

impl<'a> SeriesSlots<'a> {
    fn new(name: &'a str, selection: &'a Selection<'a>) -> Self {
        Self { name, selection, stored_by_id: HashMap::new(), stored: Vec::new(), series: Vec::new(), previous: None }
    }

    fn contains(&self, id: u64) -> bool {
        self.stored_by_id.contains_key(&id)
    }

    /// Adds the stored series `id` with its labels, unless known.
    fn add(&mut self, id: u64, labels: Arc<SeriesLabelSet>) {
        if self.contains(id) {
            return;
        }
        // The matchers on labels the point does not add must all match already.
        let all = |set: &[Matcher]| {
            set.iter()
                .filter(|m| !POINT_LABELS.contains(&m.name.as_str()))
                .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
        };
        let selection = self.selection;
        let selectable = all(selection.matchers) && (selection.or_matchers.is_empty() || selection.or_matchers.iter().any(|set| all(set)));
        let stored = selectable.then(|| {
            self.stored.push(StoredSlots { id, labels, slots: Vec::new() });
            self.stored.len() - 1
        });
        self.stored_by_id.insert(id, stored);
    }

    /// The ids of the stored series that may feed a selected series.
    fn selectable_ids(&self) -> HashSet<u64> {
        self.stored.iter().map(|stored| stored.id).collect()
    }

    /// The row `index` of stored series `id`, unless the selection cannot select its series.
    fn row(&mut self, id: u64, index: usize, at: Millis) -> Option<RowSlots<'_, 'a>> {
        let stored = match self.previous {
            Some((previous, stored)) if previous == id => stored,
            _ => {
                let stored = self.stored_by_id.get(&id).copied().flatten();
                self.previous = Some((id, stored));
                stored
            }
        }?;
        Some(RowSlots { slots: self, index, at, stored })
    }
}

impl RowSlots<'_, '_> {
    /// A sample of the series named `<name><suffix>`, with one more label such as `le`.
    fn push(&mut self, suffix: &'static str, extra: Option<(&str, f64)>, value: f64) {
        let slots = &mut *self.slots;
        let bits = extra.map(|(_, extra)| extra.to_bits());
        let stored = &mut slots.stored[self.stored];
        let known = stored.slots.iter().find(|slot| slot.suffix == suffix && slot.extra == bits).map(|slot| slot.series);
        let slot = match known {
            Some(slot) => slot,
            None => {
                let mut labels = SeriesLabelSet::clone(&stored.labels);
                labels.insert(METRIC_NAME.to_owned(), format!("{}{suffix}", slots.name));
                if let Some((name, extra)) = extra {
                    labels.insert(name.to_owned(), format_value(extra));
                }
                let labels = Labels::from_pairs(labels);
                let slot = slots.selection.matches(&labels).then(|| {
                    slots.series.push((labels, Vec::new()));
                    slots.series.len() - 1
                });
                stored.slots.push(Slot { suffix, extra: bits, series: slot });
                slot
            }
        };
        if let Some(slot) = slot {
            slots.series[slot].1.push((self.at, value));
        }
    }
}

type SeriesMap = HashMap<Labels, Vec<(Millis, f64)>>;

/// How much later than its exemplar a point may be written: an exemplar belongs to the
/// collection interval that ends at its point's time, and intervals are far shorter.
const EXEMPLAR_SLACK: Millis = 3_600_000;

/// An exemplar of a series: labels such as `trace_id` and `span_id`, a value and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub at: Millis,
}

impl StoredMetrics<'_> {
    /// The exemplars timed in `[start, end]` of every series the query's selectors select.
    pub async fn query_exemplars(&self, query: &str, start: Millis, end: Millis) -> promql::Result<BTreeMap<Labels, Vec<Exemplar>>> {
        let mut found = BTreeMap::new();
        for selector in promql::selectors(query)? {
            let matchers = promql::selector_matchers(&selector);
            let selection = Selection { matchers: &matchers, or_matchers: &selector.matchers.or_matchers, start, end };
            found.extend(self.exemplars(&selection).await?);
        }
        Ok(found)
    }

    /// The exemplars timed in `[selection.start, selection.end]` of the selected series,
    /// in time order per series. Counters and gauges carry their exemplars themselves; a
    /// histogram's belong to the `_bucket` series its value falls in, as in Prometheus's
    /// OTLP receiver. Summaries have none.
    pub async fn exemplars(&self, selection: &Selection<'_>) -> promql::Result<BTreeMap<Labels, Vec<Exemplar>>> {
        let names: Vec<_> = selection.matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
        let rows_until = selection.end.saturating_add(EXEMPLAR_SLACK);
        let mut found: BTreeMap<Labels, Vec<Exemplar>> = BTreeMap::new();
        for entry in self.catalog(selection.start, rows_until).await? {
            let series_name = match entry.kind {
                MetricKind::Gauge | MetricKind::Counter => entry.name.clone(),
                MetricKind::Histogram => format!("{}_bucket", entry.name),
                MetricKind::Summary => continue,
            };
            if !names.iter().all(|m| m.is_match(&series_name)) {
                continue;
            }
            let mut columns = vec![
                "ResourceAttributes",
                "Attributes",
                "Exemplars.FilteredAttributes",
                "Exemplars.TimeUnix",
                "Exemplars.Value",
                "Exemplars.TraceId",
                "Exemplars.SpanId",
            ];
            if entry.kind == MetricKind::Histogram {
                columns.push("ExplicitBounds");
            }
            let condition = RowCondition { end: rows_until.saturating_mul(1_000_000), ..self.condition(&entry, selection, selection.start) };
            let batches = self.rows(&entry, condition, columns).await?;
            for batch in &batches {
                let (resources, attributes) = (batch.column(0).as_map(), batch.column(1).as_map());
                let lists = |column: usize| batch.column(column).as_list::<i32>();
                for row in 0..batch.num_rows() {
                    let values = lists(4).value(row);
                    if values.is_empty() {
                        continue;
                    }
                    let (filtered, times) = (lists(2).value(row), lists(3).value(row));
                    let (filtered, times, values) = (filtered.as_map(), times.as_primitive::<TimestampNanosecondType>(), values.as_primitive::<Float64Type>());
                    let (trace_ids, span_ids) = (lists(5).value(row), lists(6).value(row));
                    let (trace_ids, span_ids) = (trace_ids.as_string::<i32>(), span_ids.as_string::<i32>());
                    let bounds = (entry.kind == MetricKind::Histogram).then(|| lists(7).value(row));
                    let mut series = series_labels(resources, attributes, row);
                    series.insert(METRIC_NAME.to_owned(), series_name.clone());
                    for i in 0..values.len() {
                        let at = times.value(i).div_euclid(1_000_000);
                        if !(selection.start..=selection.end).contains(&at) {
                            continue;
                        }
                        let value = values.value(i);
                        let mut labels = series.clone();
                        if let Some(bounds) = &bounds {
                            let bounds = bounds.as_primitive::<Float64Type>().values();
                            let le = bounds.iter().find(|bound| value <= **bound).map_or_else(|| "+Inf".to_owned(), |bound| format_value(*bound));
                            labels.insert("le".to_owned(), le);
                        }
                        let labels = Labels::from_pairs(labels);
                        if !selection.matches(&labels) {
                            continue;
                        }
                        let mut exemplar: BTreeMap<String, String> = map_entries(filtered, i).map(|(k, v)| (label_name(k), v.to_owned())).collect();
                        for (name, ids) in [("trace_id", trace_ids), ("span_id", span_ids)] {
                            if !ids.is_null(i) && !ids.value(i).is_empty() {
                                exemplar.insert(name.to_owned(), ids.value(i).to_owned());
                            }
                        }
                        found.entry(labels).or_default().push(Exemplar { labels: Labels::from_pairs(exemplar), value, at });
                    }
                }
            }
        }
        for exemplars in found.values_mut() {
            exemplars.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.labels.cmp(&b.labels)));
            // A cumulative point may repeat the exemplars of the one before it.
            exemplars.dedup();
        }
        Ok(found)
    }
}

impl SeriesSource for StoredMetrics<'_> {
    async fn select(&self, selection: Selection<'_>) -> promql::Result<Vec<StoredSeries>> {
        let names: Vec<_> = selection.matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
        let catalog = self.catalog(selection.start, selection.end).await?;
        let entries = catalog.iter().filter(|entry| entry.series_names().iter().any(|name| names.iter().all(|m| m.is_match(name))));
        // Metrics are read concurrently; two may hold the same series (a metric whose unit
        // changed), whose samples merge.
        let mut series = SeriesMap::new();
        for read in futures::future::try_join_all(entries.map(|entry| self.read(entry, &selection))).await? {
            for (labels, samples) in read {
                series.entry(labels).or_default().extend(samples);
            }
        }
        Ok(series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|(at, _)| *at);
                samples.dedup_by_key(|(at, _)| *at);
                StoredSeries { labels, samples }
            })
            .collect())
    }
}

/// A row's labels without the name: its attributes, then `job`, `instance` and
/// `service_name` from the resource.
fn series_labels(resources: &MapArray, attributes: &MapArray, row: usize) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (key, value) in map_entries(attributes, row) {
        labels.insert(label_name(key), value.to_owned());
    }
    let resource: HashMap<&str, &str> = map_entries(resources, row).collect();
    if let Some(service) = resource.get("service.name") {
        let mut job = String::new();
        if let Some(namespace) = resource.get("service.namespace") {
            let _ = write!(job, "{namespace}/");
        }
        job.push_str(service);
        labels.insert("job".into(), job);
        labels.insert("service_name".into(), (*service).to_owned());
    }
    if let Some(instance) = resource.get("service.instance.id") {
        labels.insert("instance".into(), (*instance).to_owned());
    }
    labels
}

fn map_entries(map: &MapArray, row: usize) -> impl Iterator<Item = (&str, &str)> {
    let offsets = map.value_offsets();
    let (keys, values) = (map.keys().as_string::<i32>(), map.values().as_string::<i32>());
    let range = if map.is_null(row) { 0..0 } else { offsets[row] as usize..offsets[row + 1] as usize };
    range.filter(move |i| !values.is_null(*i)).map(move |i| (keys.value(i), values.value(i)))
}

fn storage_error(error: QueryError) -> promql::QueryError {
    match error {
        QueryError::TooManyRows(limit) => {
            promql::QueryError::execution(format!("query processing would load too many samples into memory (more than {limit} rows of one metric)"))
        }
        QueryError::Timeout(_) => promql::QueryError { kind: promql::ErrorKind::Timeout, message: "query timed out in expression evaluation".into() },
        other => promql::QueryError { kind: promql::ErrorKind::Internal, message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otlp_translation() {
        assert_eq!(prometheus_name("http.server.request.duration", "s", MetricKind::Histogram), "http_server_request_duration_seconds");
        assert_eq!(prometheus_name("traces.span.metrics.calls", "1", MetricKind::Counter), "traces_span_metrics_calls_total");
        assert_eq!(prometheus_name("queue.size", "{item}", MetricKind::Gauge), "queue_size");
        assert_eq!(prometheus_name("cpu.utilization", "1", MetricKind::Gauge), "cpu_utilization_ratio");
        assert_eq!(prometheus_name("net.io", "By/s", MetricKind::Gauge), "net_io_bytes_per_second");
        assert_eq!(prometheus_name("requests_total", "", MetricKind::Counter), "requests_total");
        assert_eq!(prometheus_name("latency_seconds", "s", MetricKind::Gauge), "latency_seconds");
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("1st"), "key_1st");
    }
}
