//! Profiles read back through SQL: the samples a filter selects, summed per stack, joined
//! with their stacks, locations and functions into a [`MergedProfile`].
//!
//! Like every query API, this reads only through [`SqlEngine`], so it works the same over
//! any backend that holds the four profile tables.

use std::collections::HashMap;

use arrow::array::{Array, AsArray as _, RecordBatch};
use arrow::datatypes::{Int64Type, UInt64Type};

use super::render::{Frame, MergedProfile};
use super::series::{Selector, sql_string};
use crate::query::{QueryError, SqlEngine};
use crate::store::NANOS_PER_HOUR;

/// The sample type a query reads when it names none: what CPU profilers record.
pub const DEFAULT_SAMPLE_TYPE: &str = "cpu:nanoseconds";

/// Which samples a profile query merges.
#[derive(Debug, Clone)]
pub struct ProfileFilter {
    pub selector: Selector,
    /// `[start, end)` in Unix nanoseconds over the upload windows' start; `None`: all time.
    pub time_range: Option<(i64, i64)>,
    /// `type:unit`, e.g. `cpu:nanoseconds`.
    pub sample_type: String,
    /// Only samples taken inside this span (lowercase hex).
    pub span_id: Option<String>,
    /// Only samples taken inside spans of this trace (lowercase hex).
    pub trace_id: Option<String>,
}

impl ProfileFilter {
    fn to_sql(&self) -> String {
        let mut conditions = vec![self.selector.to_sql(), format!("\"SampleType\" = {}", sql_string(&self.sample_type))];
        if let Some((start, end)) = self.time_range {
            conditions.push(time_condition(start, end));
        }
        if let Some(span_id) = &self.span_id {
            conditions.push(format!("\"SpanId\" = {}", sql_string(span_id)));
        }
        if let Some(trace_id) = &self.trace_id {
            conditions.push(format!("\"TraceId\" = {}", sql_string(trace_id)));
        }
        conditions.join(" AND ")
    }
}

fn time_condition(start: i64, end: i64) -> String {
    format!("\"Timestamp\" >= to_timestamp_nanos({start}) AND \"Timestamp\" < to_timestamp_nanos({end})")
}

/// A merged profile with what its pprof rendering needs to say about it.
#[derive(Debug, Default)]
pub struct MergedResult {
    pub profile: MergedProfile,
    /// `type:unit` of the period and the period, when the uploads stated one.
    pub period: Option<(String, i64)>,
    /// The earliest upload window start and the latest window end, Unix nanoseconds.
    pub time_span: Option<(i64, i64)>,
}

/// Why a profile query failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileQueryError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the query selects more than {0} distinct stacks; narrow the selector or the time range")]
    TooManyStacks(usize),
    #[error("unexpected result shape: {0}")]
    Shape(String),
}

/// Merges every sample `filter` selects; at most `max_stacks` distinct stacks.
pub async fn merge(engine: &SqlEngine, filter: &ProfileFilter, max_stacks: usize) -> Result<MergedResult, ProfileQueryError> {
    let condition = filter.to_sql();
    let sample_sql = format!(
        "SELECT \"StackId\", SUM(\"Value\") AS \"Value\", MIN(CAST(\"Timestamp\" AS BIGINT)) AS \"First\", \
         MAX(CAST(\"Timestamp\" AS BIGINT)) AS \"Last\", MAX(CAST(\"Timestamp\" AS BIGINT) + \"DurationNanos\") AS \"End\", \
         MAX(\"PeriodType\") AS \"PeriodType\", MAX(\"Period\") AS \"Period\" \
         FROM profile_samples WHERE {condition} GROUP BY \"StackId\""
    );
    let samples = match engine.query_with_row_limit(&sample_sql, max_stacks).await {
        Err(QueryError::TooManyRows(limit)) => return Err(ProfileQueryError::TooManyStacks(limit)),
        other => other?,
    };
    let mut values: Vec<(u64, i64)> = Vec::new();
    let mut result = MergedResult::default();
    let mut first_hour_nanos = i64::MAX;
    let mut last_hour_nanos = i64::MIN;
    for batch in &samples.batches {
        let stack_ids = column::<UInt64Type>(batch, 0)?;
        let sums = column::<Int64Type>(batch, 1)?;
        let firsts = column::<Int64Type>(batch, 2)?;
        let lasts = column::<Int64Type>(batch, 3)?;
        let ends = column::<Int64Type>(batch, 4)?;
        let period_types = batch.column(5).as_string_opt::<i32>().ok_or_else(|| shape("PeriodType is not a string"))?;
        let periods = column::<Int64Type>(batch, 6)?;
        for row in 0..batch.num_rows() {
            values.push((stack_ids.value(row), sums.value(row)));
            first_hour_nanos = first_hour_nanos.min(firsts.value(row));
            last_hour_nanos = last_hour_nanos.max(lasts.value(row));
            let (start, end) = result.time_span.unwrap_or((i64::MAX, i64::MIN));
            result.time_span = Some((start.min(firsts.value(row)), end.max(ends.value(row))));
            if result.period.is_none() && !period_types.value(row).is_empty() {
                result.period = Some((period_types.value(row).to_owned(), periods.value(row)));
            }
        }
    }
    if values.is_empty() {
        return Ok(result);
    }
    // A stack and what it references are stored in the hour partitions of the samples that
    // use them, so only those hours are read.
    let hours = time_condition(
        first_hour_nanos.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR,
        (last_hour_nanos.div_euclid(NANOS_PER_HOUR) + 1) * NANOS_PER_HOUR,
    );
    let stacks = read_stacks(engine, &condition, &hours).await?;
    let locations = read_locations(engine, &hours).await?;
    let functions = read_functions(engine, &hours).await?;

    let unknown = Frame { function: "[unknown]".to_owned(), filename: String::new(), line: 0 };
    let mut frames = Vec::new();
    for (stack_id, value) in values {
        frames.clear();
        let Some(location_ids) = stacks.get(&stack_id) else {
            result.profile.add(std::slice::from_ref(&unknown), value);
            continue;
        };
        for location_id in location_ids {
            let Some(lines) = locations.get(location_id) else {
                frames.push(unknown.clone());
                continue;
            };
            for (function_id, line) in lines {
                let (function, filename) = functions.get(function_id).cloned().unwrap_or_else(|| (unknown.function.clone(), String::new()));
                frames.push(Frame { function, filename, line: *line });
            }
        }
        result.profile.add(&frames, value);
    }
    Ok(result)
}

/// The sample types stored for a selector and time range, most samples first.
pub async fn sample_types(engine: &SqlEngine, selector: &Selector, time_range: Option<(i64, i64)>) -> Result<Vec<String>, ProfileQueryError> {
    let mut condition = selector.to_sql();
    if let Some((start, end)) = time_range {
        condition = format!("{condition} AND {}", time_condition(start, end));
    }
    let sql = format!(
        "SELECT \"SampleType\" FROM profile_samples WHERE {condition} GROUP BY \"SampleType\" ORDER BY COUNT(*) DESC, \"SampleType\""
    );
    let result = engine.query(&sql).await?;
    let mut types = Vec::new();
    for batch in &result.batches {
        let names = batch.column(0).as_string_opt::<i32>().ok_or_else(|| shape("SampleType is not a string"))?;
        types.extend((0..batch.num_rows()).map(|row| names.value(row).to_owned()));
    }
    Ok(types)
}

async fn read_stacks(engine: &SqlEngine, condition: &str, hours: &str) -> Result<HashMap<u64, Vec<u64>>, ProfileQueryError> {
    let sql = format!(
        "SELECT \"StackId\", \"LocationIds\" FROM profile_stacks WHERE {hours} \
         AND \"StackId\" IN (SELECT \"StackId\" FROM profile_samples WHERE {condition})"
    );
    let result = engine.query_with_row_limit(&sql, usize::MAX).await?;
    let mut stacks = HashMap::new();
    for batch in &result.batches {
        let ids = column::<UInt64Type>(batch, 0)?;
        let lists = batch.column(1).as_list_opt::<i32>().ok_or_else(|| shape("LocationIds is not a list"))?;
        for row in 0..batch.num_rows() {
            let locations = lists.value(row);
            let locations = locations.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("LocationIds holds no u64"))?;
            stacks.entry(ids.value(row)).or_insert_with(|| locations.values().to_vec());
        }
    }
    Ok(stacks)
}

async fn read_locations(engine: &SqlEngine, hours: &str) -> Result<HashMap<u64, Vec<(u64, i64)>>, ProfileQueryError> {
    let sql = format!("SELECT \"LocationId\", \"FunctionIds\", \"Lines\" FROM profile_locations WHERE {hours}");
    let result = engine.query_with_row_limit(&sql, usize::MAX).await?;
    let mut locations = HashMap::new();
    for batch in &result.batches {
        let ids = column::<UInt64Type>(batch, 0)?;
        let function_lists = batch.column(1).as_list_opt::<i32>().ok_or_else(|| shape("FunctionIds is not a list"))?;
        let line_lists = batch.column(2).as_list_opt::<i32>().ok_or_else(|| shape("Lines is not a list"))?;
        for row in 0..batch.num_rows() {
            let (functions, lines) = (function_lists.value(row), line_lists.value(row));
            let functions = functions.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("FunctionIds holds no u64"))?;
            let lines = lines.as_primitive_opt::<Int64Type>().ok_or_else(|| shape("Lines holds no i64"))?;
            let pairs = functions.values().iter().copied().zip(lines.values().iter().copied()).collect();
            locations.entry(ids.value(row)).or_insert(pairs);
        }
    }
    Ok(locations)
}

async fn read_functions(engine: &SqlEngine, hours: &str) -> Result<HashMap<u64, (String, String)>, ProfileQueryError> {
    let sql = format!("SELECT \"FunctionId\", \"Name\", \"Filename\" FROM profile_functions WHERE {hours}");
    let result = engine.query_with_row_limit(&sql, usize::MAX).await?;
    let mut functions = HashMap::new();
    for batch in &result.batches {
        let ids = column::<UInt64Type>(batch, 0)?;
        let names = batch.column(1).as_string_opt::<i32>().ok_or_else(|| shape("Name is not a string"))?;
        let files = batch.column(2).as_string_opt::<i32>().ok_or_else(|| shape("Filename is not a string"))?;
        for row in 0..batch.num_rows() {
            functions.entry(ids.value(row)).or_insert_with(|| (names.value(row).to_owned(), files.value(row).to_owned()));
        }
    }
    Ok(functions)
}

fn column<T: arrow::datatypes::ArrowPrimitiveType>(batch: &RecordBatch, index: usize) -> Result<&arrow::array::PrimitiveArray<T>, ProfileQueryError> {
    let array = batch.column(index);
    if array.null_count() > 0 {
        return Err(shape(&format!("column {index} has nulls")));
    }
    array.as_primitive_opt::<T>().ok_or_else(|| shape(&format!("column {index} is {}", array.data_type())))
}

fn shape(message: &str) -> ProfileQueryError {
    ProfileQueryError::Shape(message.to_owned())
}
