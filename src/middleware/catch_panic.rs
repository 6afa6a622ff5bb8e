//! A panic while serving a call answers that call INTERNAL, logged and counted like any other
//! failure. Without this layer a panic unwinds hyper's task for the stream: the client gets a
//! reset stream and no status, and the request log, the RED metrics and error tracking never
//! see the call. Panics in the handler's future and in the response body (server streaming) are
//! both caught. The panic's text stays in the process (the panic hook prints it and Sentry's
//! panic integration sends it with its backtrace); the client learns only that the server failed.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::FutureExt;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;
use tower::{Layer, Service};

/// What a client is told. The request id (the `x-request-id` header) finds the log line.
const ANSWER: &str = "the server failed while handling this call; it has been logged";

/// Marks a response made for a panic, so that the request log does not report the call to
/// Sentry a second time: the panic integration already sent the panic with its backtrace.
#[derive(Debug, Clone, Copy)]
pub struct Panicked;

#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for CatchPanic<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<CatchPanicBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => future,
            Err(panic) => return Box::pin(std::future::ready(Ok(panic_response(panic.as_ref())))),
        };
        Box::pin(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result.map(|response| response.map(CatchPanicBody::new)),
                Err(panic) => Ok(panic_response(panic.as_ref())),
            }
        })
    }
}

/// A trailers-only INTERNAL answer.
fn panic_response<B>(panic: &(dyn Any + Send)) -> http::Response<CatchPanicBody<B>> {
    log_panic(panic);
    let mut response = Status::internal(ANSWER).into_http::<CatchPanicBody<B>>();
    response.extensions_mut().insert(Panicked);
    response
}

fn log_panic(panic: &(dyn Any + Send)) {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    metrics::counter!("soko_panics_total").increment(1);
    tracing::error!(panic = text, "a call panicked; answered INTERNAL");
}

pin_project! {
    /// The inner body, with a panic while producing it turned into INTERNAL trailers.
    pub struct CatchPanicBody<B> {
        #[pin]
        inner: Option<B>,
    }
}

impl<B> CatchPanicBody<B> {
    fn new(inner: B) -> Self {
        Self { inner: Some(inner) }
    }
}

/// The body of a trailers-only answer: empty.
impl<B> Default for CatchPanicBody<B> {
    fn default() -> Self {
        Self { inner: None }
    }
}

impl<B: Body> Body for CatchPanicBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else { return Poll::Ready(None) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                log_panic(panic.as_ref());
                // The inner body is dropped: a body that panicked is not polled again.
                this.inner.set(None);
                let mut trailers = http::HeaderMap::new();
                // Messages already sent stay sent; the status in the trailers ends the call.
                let _ = Status::internal(ANSWER).add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    async fn call<F, Fut>(handler: F) -> (http::Response<()>, Option<http::HeaderMap>)
    where
        F: FnMut(http::Request<()>) -> Fut,
        Fut: Future<Output = Result<http::Response<Boxed>, Infallible>> + Send + 'static,
    {
        let mut service = CatchPanicLayer.layer(tower::service_fn(handler));
        let response = service.call(http::Request::new(())).await.unwrap();
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        (http::Response::from_parts(parts, ()), collected.trailers().cloned())
    }

    fn status_of(response: &http::Response<()>, trailers: Option<&http::HeaderMap>) -> Status {
        trailers
            .and_then(Status::from_header_map)
            .or_else(|| Status::from_header_map(response.headers()))
            .expect("a grpc-status")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_without_its_text() {
        let (response, trailers) = call(|_| async { panic!("secret detail of the bug") }).await;
        let status = status_of(&response, trailers.as_ref());
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), ANSWER);
        assert!(response.extensions().get::<Panicked>().is_some());
    }

    #[tokio::test]
    async fn a_panic_before_the_future_answers_internal() {
        let (response, trailers) =
            call(|_| -> std::future::Ready<Result<http::Response<Boxed>, Infallible>> { panic!("in call") }).await;
        assert_eq!(status_of(&response, trailers.as_ref()).code(), tonic::Code::Internal);
    }

    /// A streaming body that sends one message and then panics: the message arrives and the
    /// trailers say INTERNAL.
    #[tokio::test]
    async fn a_panicking_body_ends_with_internal_trailers() {
        let frames = futures_util::stream::iter([0, 1]).map(|i| {
            if i == 1 {
                panic!("in the stream");
            }
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first")))
        });
        let body = Boxed::new(http_body_util::StreamBody::new(frames));
        let mut body = Some(body);
        let mut service = CatchPanicLayer.layer(tower::service_fn(move |_: http::Request<()>| {
            let body = body.take().unwrap();
            async move { Ok::<_, Infallible>(http::Response::new(body)) }
        }));
        let response = service.call(http::Request::new(())).await.unwrap();
        assert!(response.extensions().get::<Panicked>().is_none());
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(Status::from_header_map(&trailers).unwrap().code(), tonic::Code::Internal);
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"first"));
    }

    #[tokio::test]
    async fn calls_that_do_not_panic_pass_through() {
        let (response, trailers) = call(|_| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok"))),
                Ok(Frame::trailers(trailers)),
            ]));
            Ok(http::Response::new(Boxed::new(body)))
        })
        .await;
        assert_eq!(status_of(&response, trailers.as_ref()).code(), tonic::Code::Ok);
    }
}
