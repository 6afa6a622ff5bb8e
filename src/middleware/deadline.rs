//! Every call has a deadline: the server's default, or the client's `grpc-timeout` when sooner.
//! Past it the call answers DEADLINE_EXCEEDED — tonic's own timeout answers CANCELLED, which
//! clients treat as "I gave up" rather than "the server ran out of time".

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::Status;
use tower::{Layer, Service};

/// Answer this much before the client's own deadline, so the client receives the server's
/// status instead of timing out on its side.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Clone)]
pub struct DeadlineLayer {
    pub default: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, default: self.default }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    default: Duration,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| d.saturating_sub(CLIENT_DEADLINE_MARGIN));
        let deadline = client.map_or(self.default, |c| c.min(self.default));
        let ends = tokio::time::Instant::now() + deadline;
        // Admission control inside the call weighs a queue's wait against the time it has left.
        let mut future = Box::pin(crate::admission::within_deadline(ends, self.inner.call(request)));
        Box::pin(async move {
            tokio::select! {
                result = &mut future => result,
                () = tokio::time::sleep(deadline) => {
                    // Dropping an abandoned SQLite call waits for its blocking query to finish
                    // (diesel-async keeps the connection consistent that way); do that off the
                    // async workers so the answer goes out now.
                    tokio::task::spawn_blocking(move || drop(future));
                    metrics::counter!("soko_requests_deadline_exceeded_total").increment(1);
                    Ok(Status::deadline_exceeded(format!("the call did not finish within {} ms", deadline.as_millis()))
                        .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
