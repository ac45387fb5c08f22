//! Checks the generated data against the shape the module documents.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::{Generator, RequestPool, RequestStatistics, Shape, rekey_and_shift, span_count};

const NOW: u64 = 1_700_000_000_000_000_000;

fn spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .flat_map(|scope| &scope.spans)
}

#[test]
fn same_seed_generates_the_same_requests() {
    for shape in Shape::ALL {
        let first = Generator::new(shape, 7).request(300, NOW);
        let second = Generator::new(shape, 7).request(300, NOW);
        let other_seed = Generator::new(shape, 8).request(300, NOW);
        assert_eq!(first, second, "{shape}");
        assert_ne!(first, other_seed, "{shape}");
    }
}

#[test]
fn mesh_matches_its_documented_shape() {
    let mut generator = Generator::new(Shape::Mesh, 1);
    assert_eq!(generator.service_count(), 20);
    assert!(
        (180..=220).contains(&generator.operation_count()),
        "{}",
        generator.operation_count()
    );

    let requests: Vec<_> = (0..20).map(|_| generator.request(500, NOW)).collect();
    for request in &requests {
        let spans_in_request = span_count(request);
        assert!((500..550).contains(&spans_in_request), "{spans_in_request}");
    }
    let statistics = RequestStatistics::from_requests(&requests);
    assert!(statistics.min_spans_per_trace >= 5, "{statistics}");
    assert!(statistics.max_spans_per_trace <= 50, "{statistics}");
    assert!(
        (0.01..0.035).contains(&statistics.error_fraction()),
        "{statistics}"
    );
    assert!(
        statistics.spans_with_events > 0 && statistics.spans_with_links > 0,
        "{statistics}"
    );
}

#[test]
fn mesh_children_lie_inside_their_parents_and_before_now() {
    let request = Generator::new(Shape::Mesh, 3).request(2_000, NOW);
    let by_id: HashMap<(&[u8], &[u8]), &Span> = spans(&request)
        .map(|span| ((span.trace_id.as_slice(), span.span_id.as_slice()), span))
        .collect();
    for span in spans(&request) {
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        assert!(span.end_time_unix_nano <= NOW);
        if span.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id[&(span.trace_id.as_slice(), span.parent_span_id.as_slice())];
        assert!(
            span.start_time_unix_nano >= parent.start_time_unix_nano,
            "{} under {}",
            span.name,
            parent.name
        );
        // Messaging consumers run after their producer ended, as asynchronous messaging does.
        if span.kind != SpanKind::Consumer as i32 {
            assert!(
                span.end_time_unix_nano <= parent.end_time_unix_nano,
                "{} under {}",
                span.name,
                parent.name
            );
        }
    }
}

#[test]
fn spec_spans_have_ten_twenty_character_attributes() {
    let request = Generator::new(Shape::Spec, 1).request(100, NOW);
    assert_eq!(span_count(&request), 100);
    assert_eq!(request.resource_spans.len(), 1);
    for span in spans(&request) {
        assert_eq!(span.attributes.len(), 10);
        for attribute in &span.attributes {
            assert_eq!(attribute.key.len(), 20);
            let value = attribute
                .value
                .as_ref()
                .and_then(|value| value.value.as_ref());
            assert!(
                matches!(value, Some(Value::StringValue(text)) if text.len() == 20),
                "{attribute:?}"
            );
        }
    }
}

#[test]
fn rekeying_changes_ids_but_keeps_traces_trees_and_links_together() {
    let original = Generator::new(Shape::Mesh, 5).request(1_000, NOW);
    let mut rekeyed = original.clone();
    rekey_and_shift(&mut rekeyed, 3, 1_000);

    let trace_count = |request: &ExportTraceServiceRequest| {
        spans(request)
            .map(|span| span.trace_id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert_eq!(trace_count(&original), trace_count(&rekeyed));
    let rekeyed_span_ids: std::collections::HashMap<&[u8], &[u8]> = spans(&original)
        .zip(spans(&rekeyed))
        .map(|(before, after)| (&before.span_id[..], &after.span_id[..]))
        .collect();
    for (before, after) in spans(&original).zip(spans(&rekeyed)) {
        assert_ne!(before.trace_id, after.trace_id);
        assert_ne!(before.span_id, after.span_id);
        // Every byte of an id is re-keyed, so no long run of an id's hex repeats.
        assert_ne!(before.trace_id[8..12], after.trace_id[8..12]);
        assert_ne!(before.span_id[..4], after.span_id[..4]);
        if !before.parent_span_id.is_empty() {
            assert_eq!(
                after.parent_span_id,
                rekeyed_span_ids[&before.parent_span_id[..]],
                "a parent keeps its child"
            );
        }
        assert_eq!(
            before.start_time_unix_nano + 1_000,
            after.start_time_unix_nano
        );
        for link in &after.links {
            assert_eq!(
                link.trace_id, after.trace_id,
                "links point into the same, re-keyed trace"
            );
        }
    }
}

#[test]
fn pool_cycles_through_its_requests() {
    let pool = RequestPool::generate(Shape::Spec, 1, 3, 10, NOW);
    assert_eq!(pool.total_spans(), 30);
    assert_eq!(pool.prepare(0, NOW), pool.requests()[0]);
    let second_pass = pool.prepare(3, NOW);
    assert_eq!(span_count(&second_pass), 10);
    assert_ne!(second_pass, pool.requests()[0]);
}
