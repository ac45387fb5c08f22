//! The request size cap of the HTTP ingest routes, applied so that a refused client still
//! reads its refusal.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use futures::StreamExt as _;

/// Longest a refused body is read and thrown away before its 413 goes out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Caps the request bodies of `router` at `limit` bytes.
///
/// A body whose declared length is over the cap is answered 413 without being kept. It is
/// first read and thrown away, for at most [`DRAIN_TIMEOUT`]: a server that answers and
/// closes while the client is still sending leaves unread bytes behind, the kernel then
/// resets the connection, and the client loses the 413 it had not read yet. A body without a
/// declared length is cut off at the cap by `DefaultBodyLimit`.
pub(crate) fn with_body_limit<S: Clone + Send + Sync + 'static>(router: Router<S>, limit: usize) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, refuse_declared_oversize))
}

async fn refuse_declared_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    let Some(length) = declared.filter(|&length| length > limit as u64) else {
        return next.run(request).await;
    };
    let mut body = request.into_body().into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    let message = format!("request body of {length} bytes is over the {limit}-byte cap (limits.max_request_bytes)");
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}
