//! Trace context and baggage in and out of HTTP headers, in the formats `OTEL_PROPAGATORS`
//! names. W3C trace context and baggage are the OpenTelemetry SDK's own propagators; B3 is
//! [`b3`].

mod b3;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

pub use b3::{B3Encoding, B3Propagator};

use crate::config::Propagator;

/// The configured formats: what is injected, and what is accepted on the way in.
#[derive(Clone, Debug)]
pub(crate) struct Propagation {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    inject: TextMapCompositePropagator,
    extract: TextMapCompositePropagator,
}

impl Propagation {
    pub(crate) fn new(configured: &[Propagator]) -> Self {
        let mut extract = Vec::with_capacity(configured.len() + 1);
        // B3 is always accepted and goes first, so that a valid traceparent, extracted after
        // it, wins when a caller sends both. Either B3 propagator reads both encodings.
        let is_b3 = |propagator: &Propagator| {
            matches!(propagator, Propagator::B3Single | Propagator::B3Multi)
        };
        if !configured.is_empty() {
            extract.push(boxed(Propagator::B3Multi));
        }
        extract.extend(
            configured
                .iter()
                .filter(|propagator| !is_b3(propagator))
                .map(|&propagator| boxed(propagator)),
        );
        let inject = configured
            .iter()
            .map(|&propagator| boxed(propagator))
            .collect();
        Propagation {
            inner: Arc::new(Inner {
                inject: TextMapCompositePropagator::new(inject),
                extract: TextMapCompositePropagator::new(extract),
            }),
        }
    }

    /// The remote parent and baggage that `headers` carry, or an empty context.
    pub(crate) fn extract(&self, headers: &HeaderMap) -> Context {
        self.inner
            .extract
            .extract_with_context(&Context::new(), &HeaderExtractor(headers))
    }

    /// Writes `cx`'s span context and baggage into `headers`.
    pub(crate) fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        self.inner
            .inject
            .inject_context(cx, &mut HeaderInjector(headers));
    }
}

fn boxed(propagator: Propagator) -> Box<dyn TextMapPropagator + Send + Sync> {
    match propagator {
        Propagator::TraceContext => Box::new(TraceContextPropagator::new()),
        Propagator::Baggage => Box::new(BaggagePropagator::new()),
        Propagator::B3Single => Box::new(B3Propagator::new(B3Encoding::Single)),
        Propagator::B3Multi => Box::new(B3Propagator::new(B3Encoding::Multi)),
    }
}

/// Installed as the global propagator by `init()`, for code that propagates by hand.
impl TextMapPropagator for Propagation {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.inner.inject.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.inner.extract.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        self.inner.inject.fields()
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

/// The headers the propagators look up on every request.
mod names {
    use http::HeaderName;

    pub(super) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    pub(super) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    pub(super) static BAGGAGE: HeaderName = HeaderName::from_static("baggage");
    pub(super) static B3: HeaderName = HeaderName::from_static("b3");
    pub(super) static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Every request is asked for these; a prepared name skips parsing the key each time.
        let value = match key {
            "traceparent" => self.0.get(&names::TRACEPARENT),
            "tracestate" => self.0.get(&names::TRACESTATE),
            "baggage" => self.0.get(&names::BAGGAGE),
            "b3" => self.0.get(&names::B3),
            "x-b3-traceid" => self.0.get(&names::B3_TRACE_ID),
            other => self.0.get(other),
        };
        value.and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagators only produce visible ASCII; anything else is a bug to skip, not to send.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).expect("ascii"),
                )
            })
            .collect()
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_wins_over_b3_and_baggage_rides_along() {
        let propagation = Propagation::new(&[Propagator::TraceContext, Propagator::Baggage]);
        let cx = propagation.extract(&headers(&[
            ("traceparent", TRACEPARENT),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("baggage", "tenant=acme,x-asm-prefer-tag=blue"),
        ]));
        let span = cx.span().span_context().clone();
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(
            cx.baggage().get("tenant").map(|v| v.as_str().to_owned()),
            Some("acme".to_owned())
        );

        let mut out = HeaderMap::new();
        propagation.inject(&cx, &mut out);
        assert_eq!(out["traceparent"], TRACEPARENT);
        assert!(
            out.get("x-b3-traceid").is_none(),
            "b3 is accepted but not sent unless configured"
        );
    }

    #[test]
    fn b3_alone_continues_the_trace_by_default() {
        let propagation = Propagation::new(&[Propagator::TraceContext, Propagator::Baggage]);
        let cx = propagation.extract(&headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn malformed_inbound_headers_yield_an_empty_context() {
        let propagation = Propagation::new(&[Propagator::TraceContext, Propagator::Baggage]);
        for traceparent in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let cx = propagation.extract(&headers(&[("traceparent", traceparent)]));
            assert!(
                !cx.span().span_context().is_valid(),
                "{traceparent} must not be continued"
            );
        }
        let oversize = format!("k={}", "v".repeat(9000));
        let cx = propagation.extract(&headers(&[("baggage", &oversize)]));
        assert_eq!(cx.baggage().len(), 0);
        let cx = propagation.extract(&headers(&[("baggage", "bad=%E0%A4%A,good=1")]));
        assert!(cx.baggage().get("bad").is_none());
    }

    #[test]
    fn none_propagates_nothing() {
        let propagation = Propagation::new(&[]);
        let cx = propagation.extract(&headers(&[("traceparent", TRACEPARENT)]));
        assert!(!cx.span().span_context().is_valid());
    }
}
