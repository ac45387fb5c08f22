//! OTLP trace exports decoded down to the span, but not into it.
//!
//! Decoding a whole `ExportTraceServiceRequest` with prost allocates every span, and every
//! span's attribute, event and link lists, only for conversion to copy them into Arrow and
//! drop them again. A [`TraceExport`] decodes the envelope (resources and scopes) and keeps
//! each span as the slice of the request that encodes it. Conversion decodes the spans one
//! at a time into a single reused [`SpanView`](super::span::SpanView), whose lists keep
//! their capacity from one span to the next.
//!
//! A malformed span still fails the whole request, as a malformed request does: it is
//! found during conversion, before anything is written.

use bytes::Bytes;
use prost::Message as _;

use super::protobuf::{WireError, WireValue, fields};
use super::wire::{InstrumentationScope, Resource};

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
        for field in fields(body) {
            match field? {
                (1, WireValue::Len(resource_spans)) => export.resource_spans.push(ResourceSpans::decode(body, resource_spans)?),
                (field @ 1, _) => return Err(WireError::WrongWireType { message: "ExportTraceServiceRequest", field }),
                _ => {}
            }
        }
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
    /// Decodes `encoded`, a slice of `body`.
    fn decode(body: &Bytes, encoded: &[u8]) -> Result<Self, WireError> {
        let mut resource_spans = ResourceSpans::default();
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Len(resource)) => resource_spans.resource.get_or_insert_default().merge(body.slice_ref(resource))?,
                (2, WireValue::Len(scope_spans)) => resource_spans.scope_spans.push(ScopeSpans::decode(body, scope_spans)?),
                (3, WireValue::Len(url)) => resource_spans.schema_url = body.slice_ref(url),
                (field @ 1..=3, _) => return Err(WireError::WrongWireType { message: "ResourceSpans", field }),
                _ => {}
            }
        }
        Ok(resource_spans)
    }
}

impl ScopeSpans {
    /// Decodes `encoded`, a slice of `body`.
    fn decode(body: &Bytes, encoded: &[u8]) -> Result<Self, WireError> {
        let mut scope_spans = ScopeSpans::default();
        for field in fields(encoded) {
            match field? {
                (1, WireValue::Len(scope)) => scope_spans.scope.get_or_insert_default().merge(body.slice_ref(scope))?,
                (2, WireValue::Len(span)) => scope_spans.spans.push(body.slice_ref(span)),
                (3, WireValue::Len(url)) => scope_spans.schema_url = body.slice_ref(url),
                (field @ 1..=3, _) => return Err(WireError::WrongWireType { message: "ScopeSpans", field }),
                _ => {}
            }
        }
        Ok(scope_spans)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::ingest::span::SpanView;
    use crate::test_data::sample_traces_request;

    #[test]
    fn the_envelope_decodes_as_prost_does_and_keeps_spans_encoded() {
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
        assert_eq!(scope_spans.schema_url, expected.schema_url);
        let expected_spans: Vec<Vec<u8>> = expected.spans.iter().map(Message::encode_to_vec).collect();
        assert_eq!(scope_spans.spans, expected_spans);
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
        assert!(SpanView::default().decode(encoded_span).is_err());
    }
}
