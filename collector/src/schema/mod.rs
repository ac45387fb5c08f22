//! The logical schema shared by every storage backend, and the conversion of decoded OTLP
//! into Arrow record batches in that schema.
//!
//! Column and table names are those of the OpenTelemetry Collector ClickHouse exporter, so
//! SQL written for one backend runs on the other. Meshlight adds a few columns the exporter
//! leaves out (flags, schema URLs, dropped counts); ARCHITECTURE.md lists them and the
//! OTLP → column mapping.

mod attributes;
mod logs;
mod metrics;
mod profiles;
mod traces;

use std::sync::{Arc, OnceLock};

use arrow::array::ArrayRef;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use attributes::any_value_to_string;
pub use logs::logs_to_batch;
pub use metrics::{metric_data_points, metrics_to_batches};
pub use profiles::{UploadInfo, profile_rows_to_batches};
pub use traces::traces_to_batch;

/// One table of the store. The discriminant is the table's id in WAL records: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    Traces = 1,
    Logs = 2,
    MetricsGauge = 3,
    MetricsSum = 4,
    MetricsHistogram = 5,
    MetricsExpHistogram = 6,
    MetricsSummary = 7,
    ProfileSamples = 8,
    ProfileStacks = 9,
    ProfileLocations = 10,
    ProfileFunctions = 11,
}

impl Table {
    /// Every table, in id order.
    pub const ALL: [Table; 11] = [
        Table::Traces,
        Table::Logs,
        Table::MetricsGauge,
        Table::MetricsSum,
        Table::MetricsHistogram,
        Table::MetricsExpHistogram,
        Table::MetricsSummary,
        Table::ProfileSamples,
        Table::ProfileStacks,
        Table::ProfileLocations,
        Table::ProfileFunctions,
    ];

    /// The SQL table name (and directory name under the data directory).
    pub fn name(self) -> &'static str {
        match self {
            Table::Traces => "otel_traces",
            Table::Logs => "otel_logs",
            Table::MetricsGauge => "otel_metrics_gauge",
            Table::MetricsSum => "otel_metrics_sum",
            Table::MetricsHistogram => "otel_metrics_histogram",
            Table::MetricsExpHistogram => "otel_metrics_exp_histogram",
            Table::MetricsSummary => "otel_metrics_summary",
            Table::ProfileSamples => "profile_samples",
            Table::ProfileStacks => "profile_stacks",
            Table::ProfileLocations => "profile_locations",
            Table::ProfileFunctions => "profile_functions",
        }
    }

    /// The id written in WAL records.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The table with this WAL id, if any.
    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.id() == id)
    }

    /// Whether this is one of the `otel_metrics_*` tables.
    pub fn is_metrics(self) -> bool {
        matches!(
            self,
            Table::MetricsGauge
                | Table::MetricsSum
                | Table::MetricsHistogram
                | Table::MetricsExpHistogram
                | Table::MetricsSummary
        )
    }

    /// Whether a flush (unless it is small) writes the table's files as compaction would
    /// (compressed) and compaction then only concatenates them (see
    /// `store::parquet::concatenate_files`): spans and log records are sorted only for
    /// compression and pruning, which each flush's sorted row groups serve as well. Metric
    /// files mark each series' first row, and profile files are looked up by their ids, so
    /// theirs are flushed uncompressed and merged.
    pub fn flushes_final_files(self) -> bool {
        matches!(self, Table::Traces | Table::Logs)
    }

    /// The event-time column: it decides the `date=/hour=` partition and retention.
    pub fn time_column(self) -> &'static str {
        if self.is_metrics() { "TimeUnix" } else { "Timestamp" }
    }

    /// Sort order inside a Parquet file, chosen so that similar rows sit together and
    /// compress well (and, for metrics, so that time-range scans within a series are
    /// contiguous). A flush keeps rows that tie in the order they arrived in; a merge keeps
    /// each input's order among them, but not arrival order across inputs.
    ///
    /// Spans and log records end with their group, not with their time: arrival order is
    /// nearly time order, so pages of one operation still cover narrow time ranges and
    /// compress as well (31.9 bytes a mesh span against 31.7), while a flush copies each
    /// group's rows in runs instead of one by one from wherever they sit. Sorting to the
    /// nanosecond cost flushes of the spec shape, one operation of random start times,
    /// about a third of their time.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Traces => &["ServiceName", "SpanName"],
            Table::Logs => &["ServiceName", "SeverityText"],
            Table::ProfileSamples => &["ServiceName", "SampleType", "StackId", "Timestamp"],
            Table::ProfileStacks => &["StackId"],
            Table::ProfileLocations => &["LocationId"],
            Table::ProfileFunctions => &["FunctionId"],
            Table::MetricsGauge
            | Table::MetricsSum
            | Table::MetricsHistogram
            | Table::MetricsExpHistogram
            | Table::MetricsSummary => &["ServiceName", "MetricName", "SeriesId", "TimeUnix"],
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        let schemas =
            SCHEMAS.get_or_init(|| Table::ALL.iter().map(|table| table.derive_schema()).collect());
        schemas[self as usize - 1].clone()
    }

    /// The schema is whatever the table's builders produce, so the two cannot disagree.
    fn derive_schema(self) -> SchemaRef {
        match self {
            Table::Traces => traces::TraceColumns::derive_schema(),
            Table::Logs => logs::LogColumns::derive_schema(),
            Table::MetricsGauge => metrics::GaugeColumns::derive_schema(),
            Table::MetricsSum => metrics::SumColumns::derive_schema(),
            Table::MetricsHistogram => metrics::HistogramColumns::derive_schema(),
            Table::MetricsExpHistogram => metrics::ExpHistogramColumns::derive_schema(),
            Table::MetricsSummary => metrics::SummaryColumns::derive_schema(),
            Table::ProfileSamples => profiles::ProfileSampleColumns::derive_schema(),
            Table::ProfileStacks => profiles::ProfileStackColumns::derive_schema(),
            Table::ProfileLocations => profiles::ProfileLocationColumns::derive_schema(),
            Table::ProfileFunctions => profiles::ProfileFunctionColumns::derive_schema(),
        }
    }
}

/// An OTLP signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// Lowercase name, as in `/v1/<name>` and self-metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Why one item (span, log record, data point) of a request was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    InvalidTraceId,
    InvalidSpanId,
    EndBeforeStart,
    InvalidUtf8,
    TimestampOutOfRange,
    InvalidDataPoint,
}

impl RejectReason {
    const COUNT: usize = 6;

    /// The self-metric label and the start of the partial-success message.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::EndBeforeStart => "end_before_start",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::InvalidDataPoint => "invalid_data_point",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace id must be 16 bytes and not all zero",
            RejectReason::InvalidSpanId => "span id must be 8 bytes and not all zero",
            RejectReason::EndBeforeStart => "span ends before it starts",
            RejectReason::InvalidUtf8 => "a string field is not valid UTF-8",
            RejectReason::TimestampOutOfRange => "timestamp does not fit in signed 64-bit nanoseconds",
            RejectReason::InvalidDataPoint => {
                "histogram bucket counts do not match the explicit bounds"
            }
        }
    }

    const ALL: [RejectReason; Self::COUNT] = [
        RejectReason::InvalidTraceId,
        RejectReason::InvalidSpanId,
        RejectReason::EndBeforeStart,
        RejectReason::InvalidUtf8,
        RejectReason::TimestampOutOfRange,
        RejectReason::InvalidDataPoint,
    ];
}

/// The items of one request that were not stored, for the OTLP partial-success response.
#[derive(Debug, Default, Clone)]
pub struct Rejections {
    counts: [u64; RejectReason::COUNT],
}

impl Rejections {
    pub(crate) fn add(&mut self, reason: RejectReason, items: u64) {
        self.counts[reason as usize] += items;
    }

    /// Items rejected in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Rejected items per reason (only reasons that occurred).
    pub fn by_reason(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .into_iter()
            .map(|reason| (reason, self.counts[reason as usize]))
            .filter(|(_, count)| *count > 0)
    }

    /// The partial-success `error_message`: every reason with its count.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .by_reason()
            .map(|(reason, count)| {
                format!("{count} rejected ({}: {})", reason.as_str(), reason.explanation())
            })
            .collect();
        parts.join("; ")
    }
}

/// Arrow builders for a set of columns, declared once: the struct, its constructor, the
/// column names and the finished arrays all come from one list, so they cannot drift apart.
///
/// `Name(capacity: Capacity) { .. }` declares builders whose initial values may use the
/// request's [`Capacity`]; `Default` sizes them for [`Capacity::default`].
macro_rules! columns {
    ($(#[$meta:meta])* $name:ident { $($body:tt)+ }) => {
        $crate::schema::columns! { $(#[$meta])* $name(_capacity: $crate::schema::Capacity) { $($body)+ } }
    };
    ($(#[$meta:meta])* $name:ident($capacity:ident: $capacity_type:ty) {
        $($field:ident: $ty:ty = $init:expr => $column:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        pub(crate) struct $name {
            $(pub(crate) $field: $ty,)+
        }

        impl $name {
            /// Empty builders sized for `capacity`.
            pub(crate) fn with_capacity($capacity: $capacity_type) -> Self {
                Self { $($field: $init,)+ }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::with_capacity(<$capacity_type>::default())
            }
        }

        impl $crate::schema::Columns for $name {
            fn names(&self) -> Vec<&'static str> {
                vec![$($column),+]
            }

            fn finish_arrays(&mut self) -> Vec<arrow::array::ArrayRef> {
                vec![$(arrow::array::ArrayBuilder::finish(&mut self.$field)),+]
            }
        }
    };
}
pub(crate) use columns;

/// What one request appends, so that its builders start at the size they end at: a builder
/// that outgrows its buffers copies them, each time it doubles. With spec spans in the
/// default builders (1 024 values and 1 KiB of text each), that growth was about 10 % of
/// the request threads' CPU samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capacity {
    pub(crate) rows: usize,
    /// The size of the rows' protobuf encoding, which bounds the text of their string
    /// attributes.
    pub(crate) encoded_bytes: usize,
}

impl Default for Capacity {
    /// Arrow's default: 1 024 rows.
    fn default() -> Self {
        Self { rows: 1024, encoded_bytes: 1024 }
    }
}

/// A set of column builders that together produce (part of) a table's rows.
pub(crate) trait Columns: Default {
    /// Column names in schema order.
    fn names(&self) -> Vec<&'static str>;

    /// The finished arrays in schema order; the builders are left empty.
    fn finish_arrays(&mut self) -> Vec<ArrayRef>;

    /// The schema these builders produce.
    fn derive_schema() -> SchemaRef {
        let mut empty = Self::default();
        schema_of(&empty.names(), &empty.finish_arrays())
    }
}

/// A schema whose field types are those of `arrays` (all nullable: absence is data too).
fn schema_of(names: &[&str], arrays: &[ArrayRef]) -> SchemaRef {
    use arrow::datatypes::{Field, Schema};
    debug_assert_eq!(names.len(), arrays.len());
    let fields: Vec<Field> = names
        .iter()
        .zip(arrays)
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Builds a batch; the arrays come from the builders that also defined the schema, so a
/// mismatch is a programming error, not a data error.
///
/// Each array first gives back the spare capacity of its buffers: builders double them as
/// they grow, and the memtable keeps a batch until its flush. The spare capacity was 41 %
/// of a batch of mesh spans (2 095 bytes a span, 1 239 without it).
pub(crate) fn batch(table: Table, mut arrays: Vec<ArrayRef>) -> RecordBatch {
    for array in &mut arrays {
        if let Some(array) = Arc::get_mut(array) {
            array.shrink_to_fit();
        }
    }
    let schema = table.schema();
    match RecordBatch::try_new(schema, arrays) {
        Ok(batch) => batch,
        Err(error) => unreachable!("builders disagree with their own schema: {error}"),
    }
}
