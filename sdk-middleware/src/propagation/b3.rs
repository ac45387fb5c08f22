//! Zipkin B3 propagation (<https://github.com/openzipkin/b3-propagation>), spoken by Envoy,
//! Istio and Kitex: the single `b3` header and the `x-b3-*` headers.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const B3_SINGLE: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

/// Which B3 headers to write. Both encodings are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3Encoding {
    /// `b3: {trace id}-{span id}-{sampled}`.
    Single,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`.
    Multi,
}

/// A [`TextMapPropagator`] for B3.
#[derive(Debug)]
pub struct B3Propagator {
    encoding: B3Encoding,
    fields: Vec<String>,
}

impl B3Propagator {
    /// A propagator that writes `encoding` and reads both encodings.
    pub fn new(encoding: B3Encoding) -> Self {
        let fields = match encoding {
            B3Encoding::Single => vec![B3_SINGLE.to_owned()],
            B3Encoding::Multi => [B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED]
                .map(str::to_owned)
                .to_vec(),
        };
        B3Propagator { encoding, fields }
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        let sampled = if span_context.is_sampled() { "1" } else { "0" };
        match self.encoding {
            B3Encoding::Single => injector.set(
                B3_SINGLE,
                format!(
                    "{}-{}-{sampled}",
                    span_context.trace_id(),
                    span_context.span_id()
                ),
            ),
            B3Encoding::Multi => {
                injector.set(B3_TRACE_ID, span_context.trace_id().to_string());
                injector.set(B3_SPAN_ID, span_context.span_id().to_string());
                injector.set(B3_SAMPLED, sampled.to_owned());
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let extracted = match extractor.get(B3_SINGLE) {
            Some(single) => parse_single(single),
            None => parse_multi(extractor),
        };
        match extracted {
            Some(span_context) => cx.with_remote_span_context(span_context),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

/// `{trace id}-{span id}[-{sampling state}[-{parent span id}]]`; a lone sampling state
/// carries no trace to continue.
fn parse_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace_id = parse_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => true,
        Some(state) => parse_sampling_state(state)?,
    };
    if let Some(parent) = parts.next() {
        parse_span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace_id, span_id, sampled))
}

fn parse_multi(extractor: &dyn Extractor) -> Option<SpanContext> {
    let trace_id = parse_trace_id(extractor.get(B3_TRACE_ID)?.trim())?;
    let span_id = parse_span_id(extractor.get(B3_SPAN_ID)?.trim())?;
    // Debug (`x-b3-flags: 1`) implies sampled; an absent decision defers to us, and we sample.
    let debug = extractor
        .get(B3_FLAGS)
        .is_some_and(|flags| flags.trim() == "1");
    let sampled = match extractor.get(B3_SAMPLED) {
        Some(state) => debug || parse_sampling_state(state.trim())?,
        None => true,
    };
    Some(remote(trace_id, span_id, sampled))
}

fn parse_sampling_state(state: &str) -> Option<bool> {
    match state {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// 32 or 16 lowercase hex digits; a 64-bit id is the low half of a 128-bit one.
fn parse_trace_id(hex: &str) -> Option<TraceId> {
    if !(hex.len() == 32 || hex.len() == 16) || !is_lower_hex(hex) {
        return None;
    }
    let id = TraceId::from_hex(hex).ok()?;
    (id != TraceId::INVALID).then_some(id)
}

fn parse_span_id(hex: &str) -> Option<SpanId> {
    if hex.len() != 16 || !is_lower_hex(hex) {
        return None;
    }
    let id = SpanId::from_hex(hex).ok()?;
    (id != SpanId::INVALID).then_some(id)
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(pairs: &[(&str, &str)]) -> SpanContext {
        let carrier: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let cx =
            B3Propagator::new(B3Encoding::Multi).extract_with_context(&Context::new(), &carrier);
        cx.span().span_context().clone()
    }

    #[test]
    fn single_header_with_all_parts() {
        let span = extract(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        assert_eq!(
            span.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(span.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(span.is_sampled() && span.is_remote());
    }

    #[test]
    fn sixty_four_bit_trace_ids_are_left_padded() {
        let span = extract(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        assert_eq!(
            span.trace_id().to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(!span.is_sampled());
    }

    #[test]
    fn debug_flag_means_sampled() {
        let span = extract(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        assert!(span.is_sampled());
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for single in [
            "0",
            "1",
            "d",
            "xyz-e457b5a2e4d86bd1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-7",
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1",
        ] {
            assert!(!extract(&[("b3", single)]).is_valid(), "{single}");
        }
        assert!(!extract(&[("x-b3-traceid", "a3ce929d0e0e4736")]).is_valid());
    }

    #[test]
    fn injects_the_configured_encoding() {
        let cx = Context::new().with_remote_span_context(remote(
            TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").expect("hex"),
            SpanId::from_hex("e457b5a2e4d86bd1").expect("hex"),
            true,
        ));
        let mut single = HashMap::new();
        B3Propagator::new(B3Encoding::Single).inject_context(&cx, &mut single);
        assert_eq!(
            single["b3"],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        let mut multi = HashMap::new();
        B3Propagator::new(B3Encoding::Multi).inject_context(&cx, &mut multi);
        assert_eq!(multi["x-b3-spanid"], "e457b5a2e4d86bd1");
        assert_eq!(multi["x-b3-sampled"], "1");
    }
}
