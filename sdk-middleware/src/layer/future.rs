//! The response future both sides share: it keeps the call's context current while the inner
//! service runs, then hands the call on to the response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::body::TracedBody;
use super::call::{Call, End, error_type_name};

pin_project! {
    /// The future of an instrumented service.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    // Dropped before the response head (a timeout, a `select!`, a peer gone): such calls
    // are recorded too, or latency alerts would miss exactly the slowest ones.
    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(End::Dropped);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Call) -> Self {
        ResponseFuture {
            inner,
            call: Some(call),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.call.as_ref() {
            Some(call) => {
                let _current = call.context().clone().attach();
                call.run(|| this.inner.poll(cx))
            }
            None => this.inner.poll(cx),
        };
        let result = ready!(result);
        let Some(mut call) = this.call.take() else {
            panic!("ResponseFuture polled after completion");
        };
        Poll::Ready(match result {
            Ok(response) => {
                call.observe_head(&response);
                Ok(response.map(|body| TracedBody::new(body, call)))
            }
            Err(error) => {
                call.finish(End::Failed(error_type_name::<E>()));
                Err(error)
            }
        })
    }
}
