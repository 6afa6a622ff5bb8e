//! Malformed request *framing* is the client's fault too. The codec (`proto::codec`) answers
//! INVALID_ARGUMENT for bytes that are not a message, but tonic and tonic-web reject a body
//! before any codec sees it (a frame cut short, an unknown compression flag, gzip that does not
//! inflate, grpc-web-text that is not base64) and call that INTERNAL. On a server the only body
//! tonic decodes is the request, so these answers are re-labelled INVALID_ARGUMENT, keeping the
//! original text. The one exception is the gRPC spec's own: a compressed flag with no
//! `grpc-encoding` MUST answer INTERNAL, so it stays.
//!
//! A client that goes away before its request has been read (it reset the stream or closed the
//! connection) reaches tonic as a body error, which it calls UNKNOWN. Nobody receives that
//! answer, but logs, metrics and error tracking do, so it is re-labelled CANCELLED: the client's
//! doing, not a server failure.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::HeaderMap;
use tonic::{Code, Status};
use tower::{Layer, Service};

/// Texts of tonic 0.14's request-body rejections that are not the codec's. Pinned by
/// `security_review::malformed_framing_is_invalid_argument_not_internal`, which fails if an
/// upgrade rewords them.
const CLIENT_FAULTS: &[&str] = &[
    "Unexpected EOF decoding stream",
    "protocol error: received message with invalid compression flag",
    "Error decompressing",
    "tonic-web: ",
];

/// The text of hyper's body error when the client reset the stream or dropped the connection
/// mid-request (tonic 0.14, hyper 1), as tonic passes it on under UNKNOWN.
const CLIENT_GONE: &str = "h2 protocol error: error reading a body from connection";

#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFaultLayer;

impl<S> Layer<S> for ClientFaultLayer {
    type Service = ClientFault<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientFault { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ClientFault<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for ClientFault<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            relabel(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites a trailers-only INTERNAL answer that is one of tonic's request rejections, and an
/// UNKNOWN one that says the client went away.
fn relabel(headers: &mut HeaderMap) {
    if headers.get("grpc-status").is_none_or(|v| v.as_bytes() != b"13" && v.as_bytes() != b"2") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else { return };
    let relabelled = match status.code() {
        Code::Internal if CLIENT_FAULTS.iter().any(|p| status.message().starts_with(p)) => {
            Status::invalid_argument(format!("the request is malformed: {}", status.message()))
        }
        Code::Unknown if status.message().starts_with(CLIENT_GONE) => {
            Status::cancelled(format!("the client went away before its request was read: {}", status.message()))
        }
        _ => return,
    };
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    // Only fails for a message that cannot be a header value; ours is tonic's own text.
    let _ = relabelled.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn only_tonics_request_rejections_are_relabelled() {
        let mut cut = answer(&Status::internal("Unexpected EOF decoding stream."));
        relabel(&mut cut);
        let cut = Status::from_header_map(&cut).unwrap();
        assert_eq!(cut.code(), Code::InvalidArgument);
        assert!(cut.message().ends_with("Unexpected EOF decoding stream."), "{cut:?}");

        let mut gone =
            answer(&Status::unknown(format!("{CLIENT_GONE}: stream error received: not a result of an error")));
        relabel(&mut gone);
        assert_eq!(Status::from_header_map(&gone).unwrap().code(), Code::Cancelled);

        for kept in [
            Status::internal("a real bug"),
            Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            Status::unavailable("Unexpected EOF decoding stream."),
            Status::unknown("something else unknown"),
        ] {
            let mut headers = answer(&kept);
            relabel(&mut headers);
            let after = Status::from_header_map(&headers).unwrap();
            assert_eq!((after.code(), after.message()), (kept.code(), kept.message()));
        }
    }
}
