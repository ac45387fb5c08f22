//! What handler code can read about the request it serves, and how it keeps that context
//! when work moves to another task.

use std::future::Future;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tokio::task::JoinHandle;

use crate::lane::Lane;

/// The trace id of the current span, if there is one.
pub fn trace_id() -> Option<TraceId> {
    let cx = Context::current();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// The id of the current span, if there is one.
pub fn span_id() -> Option<SpanId> {
    let cx = Context::current();
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then(|| span_context.span_id())
}

/// The value of baggage entry `key` in the current context.
pub fn baggage(key: &str) -> Option<String> {
    Context::current()
        .baggage()
        .get(key)
        .map(|value| value.as_str().to_owned())
}

/// The lane of the request being served, if it came with one.
pub fn lane() -> Option<Lane> {
    Context::current().get::<Lane>().cloned()
}

/// `tokio::spawn` that carries the current context (trace, baggage, lane) into the task, so
/// outbound calls made there still propagate them.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.with_context(Context::current()))
}
