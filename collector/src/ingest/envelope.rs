//! OTLP trace exports decoded down to the span, but not into it.
//!
//! Decoding a whole `ExportTraceServiceRequest` with prost allocates every span, and every
//! span's attribute, event and link lists, only for conversion to copy them into Arrow and
//! drop them again. A [`TraceExport`] decodes the envelope (resources and scopes) and keeps
//! each span as the slice of the request that encodes it. Conversion decodes the spans one
//! at a time into a single reused [`Span`](super::wire::Span) (see [`decode_span`]), whose
//! lists keep their capacity from one span to the next.
//!
//! A malformed span still fails the whole request, as a malformed request does: it is
//! found during conversion, before anything is written.

use bytes::Bytes;
use prost::Message as _;

use super::wire::{InstrumentationScope, Resource, Span};

/// Why a request is not valid protobuf.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The envelope (request, resource, scope) does not parse.
    #[error("{0}")]
    Malformed(&'static str),
    /// prost could not decode a message inside it: a resource, a scope or a span.
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// `ExportTraceServiceRequest`, its spans left encoded.
#[derive(Debug, Clone, Default)]
pub struct TraceExport {
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`, its spans left encoded.
#[derive(Debug, Clone, Default)]
pub struct ResourceSpans {
    pub resource: Option<Resource>,
    pub scope_spans: Vec<ScopeSpans>,
    pub schema_url: Bytes,
}

/// `ScopeSpans`, each span the bytes of its encoded `Span` message.
#[derive(Debug, Clone, Default)]
pub struct ScopeSpans {
    pub scope: Option<InstrumentationScope>,
    pub spans: Vec<Bytes>,
    pub schema_url: Bytes,
}

impl TraceExport {
    /// Decodes the envelope of an encoded `ExportTraceServiceRequest`.
    pub fn decode(body: &Bytes) -> Result<Self, WireError> {
        let mut export = TraceExport::default();
        for_each_message_field(body, 1, |_, field| {
            export.resource_spans.push(ResourceSpans::decode(&field)?);
            Ok(())
        })?;
        Ok(export)
    }

    /// Spans in the request.
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum()
    }
}

impl ResourceSpans {
    fn decode(encoded: &Bytes) -> Result<Self, WireError> {
        let mut resource_spans = ResourceSpans::default();
        for_each_message_field(encoded, 3, |tag, field| {
            match tag {
                1 => resource_spans.resource.get_or_insert_default().merge(field)?,
                2 => resource_spans.scope_spans.push(ScopeSpans::decode(&field)?),
                _ => resource_spans.schema_url = field,
            }
            Ok(())
        })?;
        Ok(resource_spans)
    }
}

impl ScopeSpans {
    fn decode(encoded: &Bytes) -> Result<Self, WireError> {
        let mut scope_spans = ScopeSpans::default();
        for_each_message_field(encoded, 3, |tag, field| {
            match tag {
                1 => scope_spans.scope.get_or_insert_default().merge(field)?,
                2 => scope_spans.spans.push(field),
                _ => scope_spans.schema_url = field,
            }
            Ok(())
        })?;
        Ok(scope_spans)
    }
}

/// Decodes an encoded span into `span`, replacing what it held but keeping the capacity of
/// its lists.
pub fn decode_span(encoded: &Bytes, span: &mut Span) -> Result<(), WireError> {
    span.clear();
    Ok(span.merge(encoded.clone())?)
}

/// Calls `each` with the number and bytes of every field of the message `encoded` numbered
/// `1..=last_tag`, in wire order, and skips the others (unknown fields). Every field up to
/// `last_tag` must be length-delimited, as in the envelope messages of OTLP.
fn for_each_message_field(
    encoded: &Bytes,
    last_tag: u64,
    mut each: impl FnMut(u64, Bytes) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut reader = Reader { bytes: encoded, at: 0 };
    while reader.at < encoded.len() {
        let key = reader.varint()?;
        let (tag, wire_type) = (key >> 3, key & 0b111);
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(WireError::Malformed("invalid field number"));
        }
        match wire_type {
            LENGTH_DELIMITED => {
                let field = reader.length_delimited()?;
                if tag <= last_tag {
                    each(tag, field)?;
                }
            }
            _ if tag <= last_tag => return Err(WireError::Malformed("invalid wire type")),
            VARINT => {
                reader.varint()?;
            }
            FIXED64 => reader.skip(8)?,
            FIXED32 => reader.skip(4)?,
            _ => return Err(WireError::Malformed("unsupported wire type")),
        }
    }
    Ok(())
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

/// A cursor over an encoded message.
struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(WireError::Malformed("truncated varint"));
            };
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed("varint longer than ten bytes"))
    }

    fn skip(&mut self, len: usize) -> Result<(), WireError> {
        self.take(len).map(drop)
    }

    fn length_delimited(&mut self) -> Result<Bytes, WireError> {
        let len = usize::try_from(self.varint()?).map_err(|_| WireError::Malformed("field too long"))?;
        self.take(len)
    }

    fn take(&mut self, len: usize) -> Result<Bytes, WireError> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(WireError::Malformed("field runs past the end of its message"));
        };
        let field = self.bytes.slice(self.at..end);
        self.at = end;
        Ok(field)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::ingest::wire;
    use crate::test_data::sample_traces_request;

    #[test]
    fn envelope_and_spans_decode_to_what_prost_decodes() {
        let mut request = sample_traces_request(3);
        request.resource_spans[0].schema_url = Bytes::from_static(b"https://opentelemetry.io/schemas/1.26.0");
        let encoded = Bytes::from(request.encode_to_vec());

        let export = TraceExport::decode(&encoded).expect("valid request");
        assert_eq!(export.span_count(), 3);
        let (resource_spans, expected) = (&export.resource_spans[0], &request.resource_spans[0]);
        assert_eq!(resource_spans.resource, expected.resource);
        assert_eq!(resource_spans.schema_url, expected.schema_url);
        let (scope_spans, expected) = (&resource_spans.scope_spans[0], &expected.scope_spans[0]);
        assert_eq!(scope_spans.scope, expected.scope);
        let mut span = wire::Span::default();
        for (encoded, expected) in scope_spans.spans.iter().zip(&expected.spans) {
            decode_span(encoded, &mut span).expect("valid span");
            assert_eq!(&span, expected);
        }
    }

    #[test]
    fn a_reused_span_keeps_nothing_of_the_previous_one() {
        let request = sample_traces_request(2);
        let mut spans = request.resource_spans[0].scope_spans[0].spans.clone();
        spans[1].attributes.clear();
        spans[1].status = None;
        let mut span = wire::Span::default();
        for expected in &spans {
            decode_span(&Bytes::from(expected.encode_to_vec()), &mut span).expect("valid span");
            assert_eq!(&span, expected);
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_malformed_envelopes_refused() {
        let mut encoded = sample_traces_request(1).encode_to_vec();
        // Field 9 of every wire type: varint, fixed64, length-delimited, fixed32.
        encoded.extend_from_slice(&[9 << 3, 1, (9 << 3) | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        encoded.extend_from_slice(&[(9 << 3) | 2, 2, 0xff, 0xff, (9 << 3) | 5, 0, 0, 0, 0]);
        let export = TraceExport::decode(&Bytes::from(encoded.clone())).expect("unknown fields skipped");
        assert_eq!(export.span_count(), 1);

        // Cut inside `resource_spans`, before the 20 bytes of unknown fields.
        let truncated = Bytes::from(encoded[..encoded.len() - 25].to_vec());
        assert!(TraceExport::decode(&truncated).is_err());
        // `resource_spans` (field 1) as a varint instead of a message.
        assert!(TraceExport::decode(&Bytes::from_static(&[1 << 3, 1])).is_err());
        // A group (wire type 3), which OTLP never uses.
        assert!(TraceExport::decode(&Bytes::from_static(&[(9 << 3) | 3])).is_err());
    }

    #[test]
    fn a_malformed_span_is_found_when_it_is_decoded() {
        // { resource_spans: [{ scope_spans: [{ spans: [<one byte that is no message>] }] }] }
        let encoded = Bytes::from_static(&[(1 << 3) | 2, 5, (2 << 3) | 2, 3, (2 << 3) | 2, 1, 0xff]);
        let export = TraceExport::decode(&encoded).expect("the envelope is valid");
        let encoded_span = &export.resource_spans[0].scope_spans[0].spans[0];
        assert!(decode_span(encoded_span, &mut wire::Span::default()).is_err());
    }
}
