//! Spans decoded in place: a [`SpanView`] borrows its ids, text and attributes from the
//! request.
//!
//! prost decoded each span into a reused `wire::Span`, taking a `Bytes` for every id, string
//! and attribute key (a reference count raised and dropped again for each), and pushing
//! every attribute, event and link as a message of its own. A view reads the same fields
//! as slices of the request, and keeps them only until conversion has copied the span into
//! Arrow. Decoding the spec shape's spans (10 string attributes each) took 30 % of the
//! request threads' CPU samples with prost, and 13 % as views.
//!
//! The result is what prost decodes: a scalar field sent more than once keeps its last
//! value, an embedded message sent more than once (`Status`, a key-value pair's value)
//! merges, repeated fields append, unknown fields are skipped. A key-value pair whose value
//! holds an array or a key-value list anywhere (rare in spans, and nested) is decoded by
//! prost whole. Two differences, neither of which an OTLP exporter can produce:
//! - Groups (wire types 3 and 4, deprecated and unused in OTLP) are refused, where prost
//!   skips an unknown one, unless prost decodes the pair they are in.
//! - prost limits nesting to 100 messages from the pair rather than from the request, so
//!   an array may nest two or three levels deeper than prost would allow.
#![allow(missing_docs, reason = "field names and meanings are those of the OTLP .proto files")]

use std::mem::take;
use std::ops::Range;

use prost::Message as _;

use super::protobuf::{WireError, WireValue, fields};
use super::wire::{AnyValue, KeyValue};

/// A span of a request. Reused from one span to the next (see [`SpanView::decode`]), its
/// lists keep their capacity.
#[derive(Debug, Default)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a [u8],
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<AttributeView<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventView<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkView<'a>>,
    pub dropped_links_count: u32,
    /// `status.code`: 0 (unset) when the span has no status.
    pub status_code: i32,
    /// `status.message`.
    pub status_message: &'a [u8],
    /// The attributes of the events and links, each of which holds its range of them.
    nested_attributes: Vec<AttributeView<'a>>,
}

/// An event of a [`SpanView`].
#[derive(Debug)]
pub struct EventView<'a> {
    pub time_unix_nano: u64,
    pub name: &'a [u8],
    /// Its range of [`SpanView::nested_attributes`].
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
}

/// A link of a [`SpanView`].
#[derive(Debug)]
pub struct LinkView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a [u8],
    /// Its range of [`SpanView::nested_attributes`].
    pub attributes: Range<usize>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// A key-value pair (`KeyValue`).
#[derive(Debug)]
pub struct AttributeView<'a> {
    pub key: &'a [u8],
    pub value: ValueView<'a>,
}

/// An attribute's value (`AnyValue`).
#[derive(Debug, PartialEq)]
pub enum ValueView<'a> {
    /// No value set.
    Empty,
    String(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// The value of a key-value pair where an array or a key-value list was sent, decoded
    /// by prost, which applies protobuf's merge rules to what nests. A value sent after
    /// the array may have replaced it, so it can be of any type.
    Decoded(Box<AnyValue>),
}

impl<'a> SpanView<'a> {
    /// Decodes the encoded `Span` message `encoded` into `self`, replacing all it held.
    pub fn decode(&mut self, encoded: &'a [u8]) -> Result<(), WireError> {
        self.clear();
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Len(id)) => self.trace_id = id,
                (2, WireValue::Len(id)) => self.span_id = id,
                (3, WireValue::Len(state)) => self.trace_state = state,
                (4, WireValue::Len(id)) => self.parent_span_id = id,
                (5, WireValue::Len(name)) => self.name = name,
                (6, WireValue::Varint(kind)) => self.kind = kind as i32,
                (7, WireValue::Fixed64(time)) => self.start_time_unix_nano = time,
                (8, WireValue::Fixed64(time)) => self.end_time_unix_nano = time,
                (9, WireValue::Len(attribute)) => self.attributes.push(AttributeView::decode(attribute)?),
                (10, WireValue::Varint(count)) => self.dropped_attributes_count = count as u32,
                (11, WireValue::Len(event)) => {
                    let event = EventView::decode(event, &mut self.nested_attributes)?;
                    self.events.push(event);
                }
                (12, WireValue::Varint(count)) => self.dropped_events_count = count as u32,
                (13, WireValue::Len(link)) => {
                    let link = LinkView::decode(link, &mut self.nested_attributes)?;
                    self.links.push(link);
                }
                (14, WireValue::Varint(count)) => self.dropped_links_count = count as u32,
                (15, WireValue::Len(status)) => self.merge_status(status)?,
                (16, WireValue::Fixed32(flags)) => self.flags = flags,
                (field @ 1..=16, _) => return Err(WireError::WrongWireType { message: "Span", field }),
                _ => {}
            }
        }
        Ok(())
    }

    /// The attributes of an event or a link of this span.
    pub fn nested_attributes(&self, range: &Range<usize>) -> &[AttributeView<'a>] {
        &self.nested_attributes[range.clone()]
    }

    /// Back to the default span, keeping the lists' capacity.
    fn clear(&mut self) {
        let mut attributes = take(&mut self.attributes);
        let mut events = take(&mut self.events);
        let mut links = take(&mut self.links);
        let mut nested_attributes = take(&mut self.nested_attributes);
        attributes.clear();
        events.clear();
        links.clear();
        nested_attributes.clear();
        *self = SpanView { attributes, events, links, nested_attributes, ..SpanView::default() };
    }

    /// `Status` has only scalar fields: merging one is setting the fields it holds.
    fn merge_status(&mut self, encoded: &'a [u8]) -> Result<(), WireError> {
        for field in fields(encoded) {
            match field? {
                (2, WireValue::Len(message)) => self.status_message = message,
                (3, WireValue::Varint(code)) => self.status_code = code as i32,
                (field @ (2 | 3), _) => return Err(WireError::WrongWireType { message: "Status", field }),
                _ => {}
            }
        }
        Ok(())
    }
}

impl<'a> EventView<'a> {
    /// Decodes an event, appending its attributes to `attributes`.
    fn decode(encoded: &'a [u8], attributes: &mut Vec<AttributeView<'a>>) -> Result<Self, WireError> {
        let start = attributes.len();
        let mut event = EventView { time_unix_nano: 0, name: &[], attributes: start..start, dropped_attributes_count: 0 };
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Fixed64(time)) => event.time_unix_nano = time,
                (2, WireValue::Len(name)) => event.name = name,
                (3, WireValue::Len(attribute)) => attributes.push(AttributeView::decode(attribute)?),
                (4, WireValue::Varint(count)) => event.dropped_attributes_count = count as u32,
                (field @ 1..=4, _) => return Err(WireError::WrongWireType { message: "Span.Event", field }),
                _ => {}
            }
        }
        event.attributes.end = attributes.len();
        Ok(event)
    }
}

impl<'a> LinkView<'a> {
    /// Decodes a link, appending its attributes to `attributes`.
    fn decode(encoded: &'a [u8], attributes: &mut Vec<AttributeView<'a>>) -> Result<Self, WireError> {
        let start = attributes.len();
        let mut link = LinkView {
            trace_id: &[],
            span_id: &[],
            trace_state: &[],
            attributes: start..start,
            dropped_attributes_count: 0,
            flags: 0,
        };
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Len(id)) => link.trace_id = id,
                (2, WireValue::Len(id)) => link.span_id = id,
                (3, WireValue::Len(state)) => link.trace_state = state,
                (4, WireValue::Len(attribute)) => attributes.push(AttributeView::decode(attribute)?),
                (5, WireValue::Varint(count)) => link.dropped_attributes_count = count as u32,
                (6, WireValue::Fixed32(flags)) => link.flags = flags,
                (field @ 1..=6, _) => return Err(WireError::WrongWireType { message: "Span.Link", field }),
                _ => {}
            }
        }
        link.attributes.end = attributes.len();
        Ok(link)
    }
}

impl<'a> AttributeView<'a> {
    fn decode(encoded: &'a [u8]) -> Result<Self, WireError> {
        if let Some(attribute) = Self::short_string_pair(encoded) {
            return Ok(attribute);
        }
        let mut attribute = AttributeView { key: &[], value: ValueView::Empty };
        let mut nests = false;
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Len(key)) => attribute.key = key,
                (2, WireValue::Len(value)) => nests |= attribute.value.merge(value)?,
                (field @ (1 | 2), _) => return Err(WireError::WrongWireType { message: "KeyValue", field }),
                _ => {}
            }
        }
        if nests {
            let value = KeyValue::decode(encoded)?.value.unwrap_or_default();
            attribute.value = ValueView::Decoded(Box::new(value));
        }
        Ok(attribute)
    }

    /// The pair, if it is encoded as exporters encode a string attribute: the key, then a
    /// value holding just the string, the key and the encoded value each shorter than 128
    /// bytes (so the string at most 125). Read byte by byte, this
    /// most common of pairs skips the general field loop: spans of the spec shape, whose 10
    /// attributes are all such pairs, took half the CPU samples to decode.
    fn short_string_pair(encoded: &'a [u8]) -> Option<Self> {
        const KEY: u8 = (1 << 3) | 2;
        const VALUE: u8 = (2 << 3) | 2;
        const STRING: u8 = (1 << 3) | 2;
        let [KEY, key_len @ 0..0x80, rest @ ..] = encoded else {
            return None;
        };
        let (key, rest) = rest.split_at_checked(usize::from(*key_len))?;
        let [VALUE, value_len @ 0..0x80, STRING, text_len @ 0..0x80, text @ ..] = rest else {
            return None;
        };
        let whole = usize::from(*text_len) == text.len() && usize::from(*value_len) == text.len() + 2;
        whole.then_some(AttributeView { key, value: ValueView::String(text) })
    }
}

impl<'a> ValueView<'a> {
    /// Merges an encoded `AnyValue` into this one, as protobuf merges a message: each
    /// field it holds replaces the value. Returns whether it holds an array or a
    /// key-value list, which it leaves for prost.
    fn merge(&mut self, encoded: &'a [u8]) -> Result<bool, WireError> {
        for field in fields(encoded) {
            *self = match field? {
                (1, WireValue::Len(text)) => ValueView::String(text),
                (2, WireValue::Varint(value)) => ValueView::Bool(value != 0),
                (3, WireValue::Varint(value)) => ValueView::Int(value as i64),
                (4, WireValue::Fixed64(bits)) => ValueView::Double(f64::from_bits(bits)),
                (5 | 6, WireValue::Len(_)) => return Ok(true),
                (7, WireValue::Len(bytes)) => ValueView::Bytes(bytes),
                (field @ 1..=7, _) => return Err(WireError::WrongWireType { message: "AnyValue", field }),
                _ => continue,
            };
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use prost::Message;

    use super::*;
    use crate::ingest::wire::{self, any_value};
    use crate::test_data::{attribute, every_attribute_type, span, string};

    /// The span that prost decodes from the same bytes, rebuilt from a view. A view cannot
    /// tell a key-value pair without a value field from one with an empty value, nor a span
    /// without a status from one with an empty status: this gives the second of each (they
    /// are stored alike), so test spans send those.
    fn to_wire(view: &SpanView<'_>) -> wire::Span {
        let bytes = |slice: &[u8]| Bytes::copy_from_slice(slice);
        let attributes = |list: &[AttributeView<'_>]| -> Vec<KeyValue> {
            list.iter()
                .map(|attribute| {
                    let value = match &attribute.value {
                        ValueView::Empty => None,
                        ValueView::String(text) => Some(any_value::Value::StringValue(bytes(text))),
                        ValueView::Bool(value) => Some(any_value::Value::BoolValue(*value)),
                        ValueView::Int(value) => Some(any_value::Value::IntValue(*value)),
                        ValueView::Double(value) => Some(any_value::Value::DoubleValue(*value)),
                        ValueView::Bytes(value) => Some(any_value::Value::BytesValue(bytes(value))),
                        ValueView::Decoded(value) => value.value.clone(),
                    };
                    KeyValue { key: bytes(attribute.key), value: Some(AnyValue { value }) }
                })
                .collect()
        };
        let has_status = view.status_code != 0 || !view.status_message.is_empty();
        wire::Span {
            trace_id: bytes(view.trace_id),
            span_id: bytes(view.span_id),
            trace_state: bytes(view.trace_state),
            parent_span_id: bytes(view.parent_span_id),
            flags: view.flags,
            name: bytes(view.name),
            kind: view.kind,
            start_time_unix_nano: view.start_time_unix_nano,
            end_time_unix_nano: view.end_time_unix_nano,
            attributes: attributes(&view.attributes),
            dropped_attributes_count: view.dropped_attributes_count,
            events: view
                .events
                .iter()
                .map(|event| wire::SpanEvent {
                    time_unix_nano: event.time_unix_nano,
                    name: bytes(event.name),
                    attributes: attributes(view.nested_attributes(&event.attributes)),
                    dropped_attributes_count: event.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: view.dropped_events_count,
            links: view
                .links
                .iter()
                .map(|link| wire::SpanLink {
                    trace_id: bytes(link.trace_id),
                    span_id: bytes(link.span_id),
                    trace_state: bytes(link.trace_state),
                    attributes: attributes(view.nested_attributes(&link.attributes)),
                    dropped_attributes_count: link.dropped_attributes_count,
                    flags: link.flags,
                })
                .collect(),
            dropped_links_count: view.dropped_links_count,
            status: has_status.then(|| wire::Status { message: bytes(view.status_message), code: view.status_code }),
        }
    }

    /// A span with every field set, attributes of every type among them, and two events
    /// and two links, each with attributes of its own.
    fn full_span() -> wire::Span {
        let mut span = span(1, 1_000);
        span.trace_state = Bytes::from_static(b"vendor=1");
        span.parent_span_id = Bytes::from_static(&[7; 8]);
        span.kind = -1;
        span.dropped_attributes_count = 1;
        span.dropped_events_count = 2;
        span.dropped_links_count = 3;
        span.events[0].attributes = every_attribute_type();
        span.events.push(wire::SpanEvent { name: Bytes::from_static(b"second"), ..span.events[0].clone() });
        span.events[1].attributes.truncate(2);
        span.links[0].attributes = vec![attribute("link", string("first"))];
        span.links.push(wire::SpanLink { attributes: vec![], ..span.links[0].clone() });
        span.links.push(wire::SpanLink { attributes: every_attribute_type()[3..].to_vec(), ..span.links[0].clone() });
        span.links[2].dropped_attributes_count = 5;
        span
    }

    #[test]
    fn a_view_holds_what_prost_decodes() {
        let without_status = wire::Span { status: None, events: vec![], ..span(2, 1_000) };
        let mut spans = vec![full_span(), without_status, wire::Span::default(), full_span()];
        // One view decodes them all, as conversion reuses one for a request's spans.
        let mut encoded: Vec<Vec<u8>> = spans.iter().map(Message::encode_to_vec).collect();
        // prost writes events before links; an event after the links must find its own
        // attributes too.
        let late_event = wire::SpanEvent { name: Bytes::from_static(b"late"), ..spans[3].events[1].clone() };
        prost::encoding::message::encode(11, &late_event, &mut encoded[3]);
        spans[3].events.push(late_event);
        let mut view = SpanView::default();
        for (encoded, expected) in encoded.iter().zip(&spans) {
            view.decode(encoded).expect("a valid span");
            assert_eq!(&to_wire(&view), expected);
        }
    }

    #[test]
    fn fields_sent_twice_merge_as_protobuf_says() {
        let value = |value: any_value::Value| AnyValue { value: Some(value) };
        let array = |item: i64| value(any_value::Value::ArrayValue(wire::ArrayValue { values: vec![value(any_value::Value::IntValue(item))] }));
        // A key-value pair whose value field comes several times.
        let pair = |key: &str, values: &[AnyValue]| {
            let mut pair = Vec::new();
            prost::encoding::bytes::encode(1, &key.as_bytes().to_vec(), &mut pair);
            for value in values {
                prost::encoding::message::encode(2, value, &mut pair);
            }
            pair
        };
        let mut encoded = span(1, 1_000).encode_to_vec();
        let later = wire::Span {
            name: Bytes::from_static(b"renamed"),
            status: Some(wire::Status { message: Bytes::new(), code: 1 }),
            ..wire::Span::default()
        };
        later.encode(&mut encoded).expect("room to encode");
        for pair in [
            // An empty value leaves the value as it was.
            pair("kept", &[value(string("first")), AnyValue::default()]),
            // A value of another type replaces it, an array too.
            pair("replaced", &[value(string("first")), array(1)]),
            pair("replaced again", &[array(1), value(string("last"))]),
            // Arrays merge.
            pair("merged", &[array(1), array(2)]),
        ] {
            prost::encoding::bytes::encode(9, &pair, &mut encoded);
        }

        let expected = wire::Span::decode(&encoded[..]).expect("prost decodes it");
        assert_eq!(expected.name, "renamed");
        assert_eq!(expected.status, Some(wire::Status { message: Bytes::from_static(b"boom"), code: 1 }));
        let mut view = SpanView::default();
        view.decode(&encoded).expect("a valid span");
        assert_eq!(to_wire(&view), expected);
    }

    #[test]
    fn short_string_pairs_are_read_directly_and_others_in_the_field_loop() {
        let long = "x".repeat(200);
        let pairs = [
            (attribute("key", string("value")), true),
            // An empty string is still sent (it is a oneof's); an empty key is not.
            (attribute("key", string("")), true),
            (attribute("", string("value")), false),
            (attribute("key", string(&long[..125])), true),
            (attribute("key", string(&long[..126])), false),
            (attribute("key", string(&long)), false),
            (attribute(&long, string("value")), false),
            (attribute("key", any_value::Value::IntValue(1)), false),
        ];
        for (pair, short) in pairs {
            let encoded = pair.encode_to_vec();
            assert_eq!(AttributeView::short_string_pair(&encoded).is_some(), short, "{pair:?}");
            let decoded = AttributeView::decode(&encoded).expect("a valid pair");
            assert_eq!(decoded.key, &pair.key[..]);
            if let Some(AnyValue { value: Some(any_value::Value::StringValue(text)) }) = &pair.value {
                assert_eq!(decoded.value, ValueView::String(text));
            }
        }
        // A second value field (a bool), which merges into the first, is left to the loop.
        let mut encoded = attribute("key", string("value")).encode_to_vec();
        encoded.extend_from_slice(&[(2 << 3) | 2, 2, 2 << 3, 1]);
        assert!(AttributeView::short_string_pair(&encoded).is_none());
        assert_eq!(AttributeView::decode(&encoded).expect("a valid pair").value, ValueView::Bool(true));
        // A value or a string whose length runs past its end is malformed, not short.
        for malformed in [[0x0a, 1, b'k', 0x12, 4, 0x0a, 1, b'v'], [0x0a, 1, b'k', 0x12, 3, 0x0a, 2, b'v']] {
            assert!(AttributeView::short_string_pair(&malformed).is_none());
            assert!(AttributeView::decode(&malformed).is_err());
        }
    }

    #[test]
    fn known_fields_of_another_wire_type_are_refused() {
        let mut view = SpanView::default();
        // Span.kind (6, a varint) as fixed32; Span.status (15) as a varint; an attribute's
        // value (KeyValue 2) as a varint.
        let malformed: [&[u8]; 3] = [&[(6 << 3) | 5, 0, 0, 0, 0], &[15 << 3, 1], &[(9 << 3) | 2, 2, 2 << 3, 1]];
        for encoded in malformed {
            assert!(view.decode(encoded).is_err(), "{encoded:?}");
        }
        // Unknown fields of every wire type but groups are skipped.
        let mut encoded = span(1, 1_000).encode_to_vec();
        prost::encoding::uint64::encode(99, &1, &mut encoded);
        prost::encoding::fixed64::encode(100, &2, &mut encoded);
        prost::encoding::bytes::encode(101, &b"?".to_vec(), &mut encoded);
        prost::encoding::fixed32::encode((1 << 29) - 1, &3, &mut encoded);
        view.decode(&encoded).expect("unknown fields skipped");
        assert_eq!(to_wire(&view), span(1, 1_000));
    }
}
