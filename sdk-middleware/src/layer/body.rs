//! The response body wrapper: a call ends when its body does, because a gRPC status arrives
//! in the trailers and a streamed response is not done when its head is.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::call::{Call, End, error_type_name};

pin_project! {
    /// A response body that finishes its call's span and metric when it ends or is dropped.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                call.finish(End::Dropped);
            }
        }
    }
}

impl<B: Body> TracedBody<B> {
    pub(crate) fn new(inner: B, call: Call) -> Self {
        // A body that is empty from the start may never be polled: the call is over now.
        if inner.is_end_stream() {
            call.finish(End::Complete);
            return TracedBody { inner, call: None };
        }
        TracedBody {
            inner,
            call: Some(call),
        }
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        // A streaming handler runs inside this poll: it sees its request's context too.
        let frame = {
            let _current = this
                .call
                .as_ref()
                .map(|call| call.context().clone().attach());
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut()) {
                    call.observe_trailers(trailers);
                }
                // Servers stop polling a body that says it has ended.
                if this.inner.is_end_stream()
                    && let Some(call) = this.call.take()
                {
                    call.finish(End::Complete);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.finish(End::Failed(error_type_name::<B::Error>()));
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    call.finish(End::Complete);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
