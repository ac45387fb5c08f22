//! Attribute maps and the other string-ish OTLP values, as the tables store them.
//!
//! Attribute values are stored as strings, the way the Collector's `AsString` renders them
//! (and so the ClickHouse exporter stores them): strings as they are, integers in decimal,
//! doubles in shortest round-trip form, booleans `true`/`false`, bytes base64, arrays and
//! key-value lists as compact JSON. Values keep their exact value; only the type of a scalar
//! is implied rather than stored.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::fmt::Write as _;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanArray, ListBuilder, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::content_hash::{AttributeSetHash, ContentHash};
use crate::ingest::span::{AttributeView, ValueView};
use crate::ingest::wire::{AnyValue, InstrumentationScope, KeyValue, Resource, any_value};
use crate::schema::{Capacity, RejectReason, Rejections, Table, batch};

/// Builder of a `Map<Utf8, Utf8>` attributes column.
pub(crate) type AttributesBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// An attributes builder for `rows` maps, with Arrow's default room for their entries.
pub(crate) fn attributes_builder(rows: usize) -> AttributesBuilder {
    MapBuilder::with_capacity(None, StringBuilder::new(), StringBuilder::new(), rows)
}

/// Bytes of protobuf a typical attribute takes: a 12-byte key, a 13-byte string value and
/// 7 bytes of tags and lengths.
const TYPICAL_ENCODED_ATTRIBUTE: usize = 32;

/// An attributes builder for `capacity.rows` maps of attributes encoded in up to
/// `capacity.encoded_bytes`. That bounds the text of string keys and values; other values
/// (bytes as base64, arrays as JSON) may render longer, and the builders then grow.
pub(crate) fn attributes_builder_for(capacity: Capacity) -> AttributesBuilder {
    let entries = capacity.encoded_bytes / TYPICAL_ENCODED_ATTRIBUTE;
    let text = || StringBuilder::with_capacity(entries, capacity.encoded_bytes / 2);
    MapBuilder::with_capacity(None, text(), text(), capacity.rows)
}

/// A builder for `rows` strings of about `bytes` bytes each.
pub(crate) fn string_builder(rows: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * bytes)
}

// The list builders below are for `rows` lists. (`ListBuilder::new` and `MapBuilder::new`
// would size them for as many lists as their item builder holds items: none.) Their items
// get Arrow's default room, 1 024.

pub(crate) fn attributes_list_builder(rows: usize) -> ListBuilder<AttributesBuilder> {
    ListBuilder::with_capacity(attributes_builder(Capacity::default().rows), rows)
}

pub(crate) fn timestamp_builder(rows: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

pub(crate) fn timestamp_list_builder(rows: usize) -> ListBuilder<TimestampNanosecondBuilder> {
    ListBuilder::with_capacity(timestamp_builder(Capacity::default().rows), rows)
}

pub(crate) fn string_list_builder(rows: usize) -> ListBuilder<StringBuilder> {
    ListBuilder::with_capacity(StringBuilder::new(), rows)
}

pub(crate) fn u32_list_builder(rows: usize) -> ListBuilder<UInt32Builder> {
    ListBuilder::with_capacity(UInt32Builder::new(), rows)
}

/// Checks the text of the rows a converter appends, once, as it appends it. Text that is
/// not UTF-8 appends as an empty string and marks its row; [`TextRows::finish`] leaves the
/// marked rows out of the batch and counts them as rejected. A separate check before
/// appending read every string twice: without it, decoding and converting spans takes
/// about 9 % less time.
#[derive(Debug, Default)]
pub(crate) struct TextRows {
    /// Rows ended so far, marked ones included.
    rows: usize,
    /// Whether the row being appended holds invalid text.
    row_invalid: bool,
    invalid: Vec<usize>,
}

impl TextRows {
    /// `bytes` as text for the row being appended; empty, marking the row, if not UTF-8.
    pub(crate) fn text<'a>(&mut self, bytes: &'a [u8]) -> &'a str {
        as_text(bytes).unwrap_or_else(|| {
            self.row_invalid = true;
            ""
        })
    }

    /// A value as stored (see the module docs), checking its text: strings as they are,
    /// other values rendered into `scratch`.
    pub(crate) fn value<'a>(&mut self, value: Option<&'a AnyValue>, scratch: &'a mut String) -> &'a str {
        if let Some(any_value::Value::StringValue(text)) = value.and_then(|v| v.value.as_ref()) {
            return self.text(text);
        }
        // Only arrays and key-value lists hold text among the other values.
        self.row_invalid |= !value.is_none_or(any_value_is_text);
        any_value_to_string(value, scratch);
        scratch
    }

    /// [`Self::value`] for a value borrowed from the request.
    pub(crate) fn value_view<'a>(&mut self, value: &'a ValueView<'a>, scratch: &'a mut String) -> &'a str {
        match value {
            ValueView::String(text) => self.text(text),
            ValueView::Decoded(value) => self.value(Some(value), scratch),
            _ => {
                scratch.clear();
                push_scalar(value, scratch);
                scratch
            }
        }
    }

    /// Ends the row being appended; returns whether the batch will keep it.
    pub(crate) fn end_row(&mut self) -> bool {
        let invalid = std::mem::take(&mut self.row_invalid);
        if invalid {
            self.invalid.push(self.rows);
        }
        self.rows += 1;
        !invalid
    }

    /// The batch of the rows that hold only valid text, or `None` if there are none. The
    /// others are counted in `rejections`.
    pub(crate) fn finish(self, table: Table, arrays: Vec<ArrayRef>, rejections: &mut Rejections) -> Option<RecordBatch> {
        if self.invalid.len() == self.rows {
            rejections.add(RejectReason::InvalidUtf8, self.rows as u64);
            return None;
        }
        let batch = batch(table, arrays);
        if self.invalid.is_empty() {
            return Some(batch);
        }
        rejections.add(RejectReason::InvalidUtf8, self.invalid.len() as u64);
        let mut keep = vec![true; self.rows];
        for row in self.invalid {
            keep[row] = false;
        }
        match filter_record_batch(&batch, &BooleanArray::from(keep)) {
            Ok(valid) => Some(valid),
            Err(error) => unreachable!("a mask as long as the batch: {error}"),
        }
    }
}

/// `bytes` as text, if they are UTF-8. ASCII, which nearly all telemetry text is, skips
/// `str::from_utf8`: for the 20-byte strings of the spec shape, `is_ascii` takes less than
/// half as long, and the checks took 10 % of the request threads' CPU samples.
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        #[allow(unsafe_code)]
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

/// The text of a field already checked with [`is_text`].
pub(crate) fn text(bytes: &[u8]) -> &str {
    as_text(bytes).unwrap_or_default()
}

pub(crate) fn is_text(bytes: &[u8]) -> bool {
    as_text(bytes).is_some()
}

pub(crate) fn any_value_is_text(value: &AnyValue) -> bool {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => is_text(s),
        Some(any_value::Value::ArrayValue(array)) => array.values.iter().all(any_value_is_text),
        Some(any_value::Value::KvlistValue(list)) => attributes_are_text(&list.values),
        _ => true,
    }
}

/// Whether every key and string value (nested ones too) is valid UTF-8.
pub(crate) fn attributes_are_text(attributes: &[KeyValue]) -> bool {
    attributes
        .iter()
        .all(|kv| is_text(&kv.key) && kv.value.as_ref().is_none_or(any_value_is_text))
}

/// Checks a resource before any item under it is converted: if it holds invalid UTF-8,
/// every item under it is rejected.
pub(crate) fn check_resource(resource: Option<&Resource>, schema_url: &[u8]) -> Result<(), RejectReason> {
    let resource_ok = resource.is_none_or(|r| attributes_are_text(&r.attributes));
    if resource_ok && is_text(schema_url) { Ok(()) } else { Err(RejectReason::InvalidUtf8) }
}

/// [`check_resource`] for a scope.
pub(crate) fn check_scope(
    scope: Option<&InstrumentationScope>,
    schema_url: &[u8],
) -> Result<(), RejectReason> {
    let scope_ok = scope
        .is_none_or(|s| is_text(&s.name) && is_text(&s.version) && attributes_are_text(&s.attributes));
    if scope_ok && is_text(schema_url) { Ok(()) } else { Err(RejectReason::InvalidUtf8) }
}

/// The text of a string value, which is stored as it is; `None` for other values, which
/// need rendering.
fn string_value(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(value) => Some(text(value)),
        _ => None,
    }
}

/// Renders a value the way the Collector's `AsString` does (see the module docs).
pub fn any_value_to_string(value: Option<&AnyValue>, out: &mut String) {
    out.clear();
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return;
    };
    let scalar = match value {
        any_value::Value::StringValue(s) => {
            out.push_str(text(s));
            return;
        }
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => {
            out.push_str(&any_value_to_json(value).to_string());
            return;
        }
        any_value::Value::BoolValue(b) => ValueView::Bool(*b),
        any_value::Value::IntValue(i) => ValueView::Int(*i),
        any_value::Value::DoubleValue(d) => ValueView::Double(*d),
        any_value::Value::BytesValue(bytes) => ValueView::Bytes(bytes),
    };
    push_scalar(&scalar, out);
}

/// Appends a value that holds no text as [`any_value_to_string`] renders it. Text is
/// checked for [`TextRows`] first: a string or a decoded value appends nothing here.
fn push_scalar(value: &ValueView<'_>, out: &mut String) {
    match value {
        ValueView::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ValueView::Int(i) => {
            let _ = write!(out, "{i}");
        }
        ValueView::Double(d) => push_double(*d, out),
        ValueView::Bytes(bytes) => BASE64.encode_string(bytes, out),
        ValueView::Empty | ValueView::String(_) | ValueView::Decoded(_) => {}
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`, which is what the Collector writes.
fn push_double(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

fn any_value_to_json(value: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        any_value::Value::StringValue(s) => Json::String(text(s).to_owned()),
        any_value::Value::BoolValue(b) => Json::Bool(*b),
        any_value::Value::IntValue(i) => Json::from(*i),
        any_value::Value::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Json::String(d.to_string()), Json::Number)
        }
        any_value::Value::BytesValue(bytes) => Json::String(BASE64.encode(bytes)),
        any_value::Value::ArrayValue(array) => Json::Array(
            array
                .values
                .iter()
                .map(|v| v.value.as_ref().map_or(Json::Null, any_value_to_json))
                .collect(),
        ),
        any_value::Value::KvlistValue(list) => Json::Object(
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (text(&kv.key).to_owned(), value.map_or(Json::Null, any_value_to_json))
                })
                .collect(),
        ),
    }
}

/// Attributes rendered once, for values repeated on every row (resource and scope). Keys
/// and string values are borrowed from the request; only other values are rendered.
#[derive(Debug, Default)]
pub(crate) struct RenderedAttributes<'a> {
    pairs: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> RenderedAttributes<'a> {
    pub(crate) fn new(attributes: &'a [KeyValue]) -> Self {
        let mut rendered = String::new();
        let pairs = attributes
            .iter()
            .map(|kv| {
                let value = match string_value(kv.value.as_ref()) {
                    Some(value) => Cow::Borrowed(value),
                    None => {
                        any_value_to_string(kv.value.as_ref(), &mut rendered);
                        Cow::Owned(rendered.clone())
                    }
                };
                (text(&kv.key), value)
            })
            .collect();
        Self { pairs }
    }

    /// The hash of the pairs, as part of a metric series' id.
    pub(crate) fn set_hash(&self) -> AttributeSetHash {
        let mut hash = AttributeSetHash::default();
        for (key, value) in &self.pairs {
            hash.add(key, value);
        }
        hash
    }

    /// The id of these attributes as a resource's (`ResourceId`): the same for the same
    /// pairs in the same order, as the map column stores them.
    pub(crate) fn resource_id(&self) -> u64 {
        let mut hash = ContentHash::new(ContentHash::RESOURCE);
        hash.u64(self.pairs.len() as u64);
        for (key, value) in &self.pairs {
            hash.str(key);
            hash.str(value);
        }
        hash.finish()
    }

    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&Cow<'a, str>> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub(crate) fn append_to(&self, builder: &mut AttributesBuilder) {
        for (key, value) in &self.pairs {
            builder.keys().append_value(key);
            builder.values().append_value(value);
        }
        append_map_entry(builder);
    }
}

/// The resource that every row of one `Resource*` message repeats, borrowed from the
/// request where it can be. Rendered once for all the scopes under it.
pub(crate) struct ResourceContext<'a> {
    pub(crate) service_name: Cow<'a, str>,
    pub(crate) attributes: RenderedAttributes<'a>,
    pub(crate) schema_url: &'a str,
    /// The resource's part of a metric series' id, computed when first asked for.
    hash: OnceCell<AttributeSetHash>,
    /// The resource's `ResourceId`, computed when first asked for.
    id: OnceCell<u64>,
    /// Whether a row of the batch being built holds the attributes already.
    carried: Cell<bool>,
}

impl<'a> ResourceContext<'a> {
    /// Call only after [`check_resource`] accepted the same values.
    pub(crate) fn new(resource: Option<&'a Resource>, schema_url: &'a [u8]) -> Self {
        let attributes = RenderedAttributes::new(resource.map_or(&[][..], |r| &r.attributes));
        let service_name = attributes.get("service.name").cloned().unwrap_or_default();
        Self {
            service_name,
            attributes,
            schema_url: text(schema_url),
            hash: OnceCell::new(),
            id: OnceCell::new(),
            carried: Cell::new(false),
        }
    }

    /// Appends a row's `ResourceId` and `ResourceAttributes`. The attributes go only into
    /// the first row of the resource that the batch keeps (see `store::resources`): the
    /// others get a null map. Returns whether this row holds them, for [`Self::end_row`].
    pub(crate) fn append_to(&self, ids: &mut UInt64Builder, attributes: &mut AttributesBuilder) -> bool {
        ids.append_value(*self.id.get_or_init(|| self.attributes.resource_id()));
        if self.carried.get() {
            if let Err(error) = attributes.append(false) {
                unreachable!("map keys and values out of step: {error}");
            }
            return false;
        }
        self.attributes.append_to(attributes);
        true
    }

    /// Ends a row: `holds` is what [`Self::append_to`] returned for it, `kept` whether the
    /// batch keeps it ([`TextRows::end_row`]). Until a kept row holds the attributes, the
    /// next row gets them.
    pub(crate) fn end_row(&self, holds: bool, kept: bool) {
        if holds && kept {
            self.carried.set(true);
        }
    }

    /// The resource's part of a metric series' id.
    pub(crate) fn hash(&self) -> AttributeSetHash {
        *self.hash.get_or_init(|| self.attributes.set_hash())
    }
}

/// The resource and scope that every row of one `Scope*` message repeats.
pub(crate) struct Context<'a> {
    pub(crate) resource: &'a ResourceContext<'a>,
    pub(crate) scope_name: &'a str,
    pub(crate) scope_version: &'a str,
    pub(crate) scope_attributes: RenderedAttributes<'a>,
    pub(crate) scope_dropped_attributes_count: u32,
    pub(crate) scope_schema_url: &'a str,
}

impl<'a> Context<'a> {
    /// Call only after [`check_scope`] accepted the same values.
    pub(crate) fn new(
        resource: &'a ResourceContext<'a>,
        scope: Option<&'a InstrumentationScope>,
        scope_schema_url: &'a [u8],
    ) -> Self {
        Self {
            resource,
            scope_name: scope.map_or("", |s| text(&s.name)),
            scope_version: scope.map_or("", |s| text(&s.version)),
            scope_attributes: RenderedAttributes::new(scope.map_or(&[][..], |s| &s.attributes)),
            scope_dropped_attributes_count: scope.map_or(0, |s| s.dropped_attributes_count),
            scope_schema_url: text(scope_schema_url),
        }
    }
}

/// A key-value pair as conversion reads it: decoded by prost ([`KeyValue`]: resources,
/// scopes, log records, metrics) or borrowed from the request ([`AttributeView`]: spans).
pub(crate) trait Attribute {
    fn key(&self) -> &[u8];

    /// The value as stored, checking its text for `rows` (see [`TextRows::value`]).
    fn value<'a>(&'a self, rows: &mut TextRows, scratch: &'a mut String) -> &'a str;
}

impl Attribute for KeyValue {
    fn key(&self) -> &[u8] {
        &self.key
    }

    fn value<'a>(&'a self, rows: &mut TextRows, scratch: &'a mut String) -> &'a str {
        rows.value(self.value.as_ref(), scratch)
    }
}

impl Attribute for AttributeView<'_> {
    fn key(&self) -> &[u8] {
        self.key
    }

    fn value<'a>(&'a self, rows: &mut TextRows, scratch: &'a mut String) -> &'a str {
        rows.value_view(&self.value, scratch)
    }
}

/// Appends one map row holding `attributes`, checking their text for `rows`; `scratch` is
/// reused across calls.
pub(crate) fn append_attributes(
    builder: &mut AttributesBuilder,
    attributes: &[impl Attribute],
    rows: &mut TextRows,
    scratch: &mut String,
) {
    append_attributes_with(builder, attributes, rows, scratch, |_, _| {});
}

/// [`append_attributes`], showing `each` every key and value as stored.
pub(crate) fn append_attributes_with(
    builder: &mut AttributesBuilder,
    attributes: &[impl Attribute],
    rows: &mut TextRows,
    scratch: &mut String,
    mut each: impl FnMut(&str, &str),
) {
    for attribute in attributes {
        let key = rows.text(attribute.key());
        let value = attribute.value(rows, scratch);
        builder.keys().append_value(key);
        builder.values().append_value(value);
        each(key, value);
    }
    append_map_entry(builder);
}

pub(crate) fn append_map_entry(builder: &mut AttributesBuilder) {
    // Keys and values were appended in pairs just above, the only way `append` can fail.
    if let Err(error) = builder.append(true) {
        unreachable!("map keys and values out of step: {error}");
    }
}

/// Lowercase hex of an id, empty for an empty id (the exporter's convention for "none").
/// A table of digit pairs: the `hex` crate's digit-by-digit encoding took 3 % of the
/// request threads' CPU samples (three ids a span).
pub(crate) fn append_hex(builder: &mut StringBuilder, id: &[u8]) {
    let mut buffer = [0u8; 64];
    let Some(out) = buffer.get_mut(..id.len() * 2) else {
        // Longer ids never reach here: validation rejects them first.
        builder.append_value(hex::encode(id));
        return;
    };
    for (pair, byte) in out.chunks_exact_mut(2).zip(id) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    builder.append_value(text(out));
}

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [digits[byte >> 4], digits[byte & 15]];
        byte += 1;
    }
    pairs
};

/// Nanoseconds since the epoch as Arrow stores them (signed), or `None` past year 2262.
pub(crate) fn nanos(unix_nanos: u64) -> Option<i64> {
    i64::try_from(unix_nanos).ok()
}

/// Whether an id is well formed: the right length and not all zero.
pub(crate) fn is_valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

/// Whether an optional id (trace id on a log record, say) is absent or well formed.
pub(crate) fn is_valid_optional_id(id: &[u8], len: usize) -> bool {
    id.is_empty() || is_valid_id(id, len)
}

/// The builder of a nested `List<…>` column finished for one row.
pub(crate) fn end_list<B: ArrayBuilder>(builder: &mut ListBuilder<B>) {
    builder.append(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_append_as_the_hex_crate_encodes_them() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let ids: Vec<&[u8]> = every_byte.chunks(16).chain([&[][..], &[0xab; 8][..], &[7; 40][..]]).collect();
        let mut builder = StringBuilder::new();
        for id in &ids {
            append_hex(&mut builder, id);
        }
        let strings = builder.finish();
        let appended: Vec<&str> = strings.iter().flatten().collect();
        let expected: Vec<String> = ids.iter().map(hex::encode).collect();
        assert_eq!(appended, expected);
    }

    #[test]
    fn text_is_taken_as_utf8_says() {
        for bytes in [&b"spec-key-0000000001"[..], "h\u{e9}llo \u{1f600}".as_bytes(), b"", b"\xff", b"ab\xc3", b"\xed\xa0\x80"] {
            assert_eq!(as_text(bytes), std::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
    }
}
