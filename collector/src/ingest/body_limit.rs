//! The request size cap of the HTTP ingest routes, applied so that a refused client still
//! reads its refusal.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use bytes::BytesMut;
use futures::StreamExt as _;

/// Longest a refused body is read and thrown away before its 413 goes out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers a request the cap refuses, given its headers, the status (413, or 400 for a body
/// that could not be read) and what went wrong: in the error format of the routes.
pub(crate) type Refuse = fn(&HeaderMap, StatusCode, String) -> Response;

/// [`Refuse`] as plain text, for routes without an error format of their own.
pub(crate) fn refuse_as_text(_: &HeaderMap, status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// Caps the request bodies of `router` at `limit` bytes; `refuse` answers what goes over.
///
/// A body over the cap is answered 413 without being kept. It is first read and thrown away,
/// for at most [`DRAIN_TIMEOUT`]: a server that answers and closes while the client is still
/// sending leaves unread bytes behind, the kernel then resets the connection, and the client
/// loses the 413 it had not read yet. A body without a declared length (chunked) is read up
/// to the cap here, so one that goes over is drained the same way; `DefaultBodyLimit` stays
/// as the extractors' own bound.
pub(crate) fn with_body_limit<S: Clone + Send + Sync + 'static>(router: Router<S>, limit: usize, refuse: Refuse) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state((limit, refuse), refuse_oversize))
}

async fn refuse_oversize(State((limit, refuse)): State<(usize, Refuse)>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length <= limit as u64 => next.run(request).await,
        Some(length) => {
            let (parts, body) = request.into_parts();
            drain(body.into_data_stream()).await;
            let message = format!("request body of {length} bytes is over the {limit}-byte cap (limits.max_request_bytes)");
            refuse(&parts.headers, StatusCode::PAYLOAD_TOO_LARGE, message)
        }
        None => {
            let (parts, body) = request.into_parts();
            let mut chunks = body.into_data_stream();
            let mut buffered = BytesMut::new();
            while let Some(chunk) = chunks.next().await {
                let Ok(chunk) = chunk else {
                    return refuse(&parts.headers, StatusCode::BAD_REQUEST, "the request body could not be read".to_owned());
                };
                if buffered.len() + chunk.len() > limit {
                    drain(chunks).await;
                    let message = format!("request body is over the {limit}-byte cap (limits.max_request_bytes)");
                    return refuse(&parts.headers, StatusCode::PAYLOAD_TOO_LARGE, message);
                }
                buffered.extend_from_slice(&chunk);
            }
            next.run(Request::from_parts(parts, Body::from(buffered.freeze()))).await
        }
    }
}

/// Reads the rest of a refused body and throws it away, for at most [`DRAIN_TIMEOUT`].
async fn drain(mut body: BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}
