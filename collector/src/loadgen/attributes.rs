//! Constructors for OTLP attributes.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string-valued attribute.
pub(super) fn string(key: &str, value: impl Into<String>) -> KeyValue {
    key_value(key, Value::StringValue(value.into()))
}

/// An integer-valued attribute.
pub(super) fn int(key: &str, value: i64) -> KeyValue {
    key_value(key, Value::IntValue(value))
}

/// A double-valued attribute.
pub(super) fn double(key: &str, value: f64) -> KeyValue {
    key_value(key, Value::DoubleValue(value))
}

/// A boolean attribute.
pub(super) fn boolean(key: &str, value: bool) -> KeyValue {
    key_value(key, Value::BoolValue(value))
}

/// The string value of attribute `key`, if present and a string.
pub(super) fn find_string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    let attribute = attributes.iter().find(|attribute| attribute.key == key)?;
    match attribute.value.as_ref()?.value.as_ref()? {
        Value::StringValue(value) => Some(value),
        _ => None,
    }
}
