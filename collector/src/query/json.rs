//! Query results as JSON: `{"columns": [...], "rows": [[...], ...]}`.
//!
//! Integers stay exact (JSON numbers), floats are numbers except NaN and ±Inf (strings, as
//! Prometheus writes them), timestamps are RFC 3339 with nanoseconds, maps are objects,
//! lists are arrays and binary is base64.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// Column names and rows of `batches` (which share one schema).
pub(crate) fn to_json(columns: &[String], batches: &[RecordBatch]) -> Value {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(Value::Array(batch.columns().iter().map(|column| value(column, row)).collect()));
        }
    }
    serde_json::json!({ "columns": columns, "rows": rows })
}

fn float(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".to_owned()),
        None if value > 0.0 => Value::String("+Inf".to_owned()),
        None => Value::String("-Inf".to_owned()),
    }
}

/// The JSON value of one cell.
fn value(array: &ArrayRef, row: usize) -> Value {
    use arrow::datatypes::*;
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::Binary => Value::String(base64_of(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => Value::String(base64_of(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => Value::String(base64_of(array.as_binary_view().value(row))),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamp(array.as_primitive::<TimestampNanosecondType>().value(row))
        }
        DataType::List(_) => list(&array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row)),
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let object: Map<String, Value> = (0..entries.len())
                .map(|i| (display(keys, i), value(values, i)))
                .collect();
            Value::Object(object)
        }
        DataType::Struct(fields) => {
            let columns = array.as_struct().columns();
            let object: Map<String, Value> = fields
                .iter()
                .zip(columns)
                .map(|(field, column)| (field.name().clone(), value(column, row)))
                .collect();
            Value::Object(object)
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            value(dictionary.values(), key)
        }
        _ => Value::String(display(array, row)),
    }
}

fn list(values: &ArrayRef) -> Value {
    Value::Array((0..values.len()).map(|i| value(values, i)).collect())
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn timestamp(nanos: i64) -> Value {
    match arrow::temporal_conversions::timestamp_ns_to_datetime(nanos) {
        Some(time) => Value::String(time.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()),
        None => Value::from(nanos),
    }
}

/// Arrow's own rendering, for types JSON has no better form for (dates, durations…).
fn display(array: &dyn Array, row: usize) -> String {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(error) => format!("<{error}>"),
    }
}
