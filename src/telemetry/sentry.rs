//! Error tracking with Sentry (issue 22): panics, calls that end INTERNAL, UNKNOWN or DATA_LOSS,
//! and dependency breakers that open (as warnings). Expected refusals (bad input, credentials,
//! not found, rate limits) are the client's doing and are never sent.
//!
//! Off unless `SENTRY_DSN` is set: then no client exists, no layer is in the call path and the
//! request log does not look for a hub, so nothing is sent and nothing is slower.
//!
//! Events leave through [`HyperTransport`], on the hyper and rustls this binary already links:
//! the sentry crate's own transports would bring reqwest or ureq and native-tls, a second HTTP
//! and TLS stack for a few requests a minute. Every event is scrubbed on that thread, off the
//! request path, before it is sent ([`Scrubber`]): no authorization metadata, API key,
//! password, token or credentialed URL leaves the process, whichever code path put it into the
//! event. Each kind of failure sends at most a few events per second ([`EventBudget`]).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sentry::{
    Envelope, Hub, Level,
    protocol::{EnvelopeItem, Event, Value},
    transports::{RateLimiter, RateLimitingCategory},
    types::Dsn,
};

use crate::configuration::Secret;

/// `SENTRY_*`: where events go and what they say about the build.
#[derive(Clone)]
pub struct SentryConfig {
    pub dsn: Dsn,
    /// `SENTRY_RELEASE`, by default `soko@<version>+<commit>`.
    pub release: String,
    /// `SENTRY_ENVIRONMENT`, by default `SOKO_ENV`.
    pub environment: String,
    /// `SENTRY_TRACES_SAMPLE_RATE`: the share of calls sent as performance traces.
    pub traces_sample_rate: f32,
    /// `SOKO_SENTRY_EVENTS_PER_SECOND`: events one kind of failure may send, on average.
    pub events_per_second: f64,
    /// Values that must never leave the process (the JWT secrets, the metrics token, database
    /// and Redis passwords), replaced wherever they appear in an event.
    pub secrets: Vec<Secret>,
}

impl std::fmt::Debug for SentryConfig {
    // The DSN's key lets anyone post events into the project.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryConfig")
            .field("dsn", &format_args!("{}://***@{}/{}", self.dsn.scheme(), self.dsn.host(), self.dsn.project_id()))
            .field("release", &self.release)
            .field("environment", &self.environment)
            .field("traces_sample_rate", &self.traces_sample_rate)
            .field("events_per_second", &self.events_per_second)
            .finish()
    }
}

/// The default release name: the crate version and the commit it was built from.
pub fn default_release() -> String {
    format!("soko@{}+{}", crate::build_info::VERSION, crate::build_info::GIT_COMMIT)
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static BUDGET: OnceLock<EventBudget> = OnceLock::new();

/// Whether events are sent: the request log looks for a hub only then.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts the client; events are flushed when the guard drops (at the end of `main`).
pub fn init(config: &SentryConfig) -> sentry::ClientInitGuard {
    let guard = sentry::init(options(config));
    let _ = BUDGET.set(EventBudget::new(config.events_per_second));
    // Present from the start, so that the dashboard's panel reads zero rather than nothing.
    crate::telemetry::metrics();
    metrics::counter!("soko_sentry_events_dropped_total", "reason" => "budget").absolute(0);
    ENABLED.store(true, Ordering::Relaxed);
    guard
}

fn options(config: &SentryConfig) -> sentry::ClientOptions {
    let scrubber = Arc::new(Scrubber::new(&config.secrets));
    let transport = Arc::new(HyperTransport::start(config.dsn.clone(), scrubber.clone()));
    let mut options = sentry::ClientOptions::new()
        .release(config.release.clone())
        .environment(config.environment.clone())
        .traces_sample_rate(config.traces_sample_rate)
        // No IP addresses, cookies or sensitive headers from the integrations.
        .send_default_pii(false)
        // Scrubbing is the transport thread's job: in a `before_send` hook its JSON round trip
        // of the whole event ran on the request path of every failing call.
        .transport(transport);
    options.dsn = Some(config.dsn.clone());
    options
}

/// The tracing layer: warnings and errors logged while a call runs become breadcrumbs of that
/// call's hub, so the event of a failed call carries its cause. Nothing becomes an event by
/// itself: calls are captured once, by the request log, with their method and ids.
pub fn tracing_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    sentry::integrations::tracing::BreadcrumbLayer::new().with_filter(tracing_subscriber::filter::LevelFilter::WARN)
}

/// What the request log knows about a call that ended in a server failure.
pub struct CallFailure<'a> {
    pub method: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    /// The caller's id as the log names it (`user:<id>`, `key:<id>`): never an email or token.
    pub caller: Option<&'a str>,
}

/// Sends one event for a call that ended INTERNAL, UNKNOWN or DATA_LOSS, on the call's own hub
/// (its breadcrumbs are the warnings and errors logged while it ran), unless this method and
/// status have spent their budget.
pub fn capture_call_failure(hub: &Hub, failure: &CallFailure<'_>) {
    if !within_budget(&(failure.method, failure.code)) {
        return;
    }
    let mut event = Event {
        level: Level::Error,
        message: Some(format!("{} ended {}: {}", failure.method, failure.code, failure.message)),
        // One issue per method and status: the cause is in the breadcrumbs and the log line.
        fingerprint: vec![failure.method.to_owned().into(), failure.code.to_owned().into()].into(),
        transaction: Some(failure.method.to_owned()),
        ..Default::default()
    };
    event.tags.insert("rpc.method".into(), failure.method.into());
    event.tags.insert("rpc.grpc.status_code".into(), failure.code.into());
    event.tags.insert("request_id".into(), failure.request_id.into());
    if let Some(trace_id) = failure.trace_id {
        event.tags.insert("trace_id".into(), trace_id.into());
    }
    if let Some(caller) = failure.caller {
        event.user = Some(sentry::User { id: Some(caller.to_owned()), ..Default::default() });
    }
    hub.capture_event(event);
}

/// A dependency's breaker opened: a warning, sent once per opening.
pub fn capture_breaker_opened(dependency: &str, error: &str) {
    if !enabled() || !within_budget(&("circuit-breaker", dependency)) {
        return;
    }
    let mut event = Event {
        level: Level::Warning,
        message: Some(format!("circuit breaker opened: the {dependency} is failing: {error}")),
        fingerprint: vec!["circuit-breaker".into(), dependency.to_owned().into()].into(),
        ..Default::default()
    };
    event.tags.insert("dependency".into(), dependency.into());
    Hub::main().capture_event(event);
}

/// Whether one more event of this kind may be sent (always, before `init`).
fn within_budget(kind: &impl std::hash::Hash) -> bool {
    let allowed = BUDGET.get().is_none_or(|budget| budget.allow(kind, Instant::now()));
    if !allowed {
        metrics::counter!("soko_sentry_events_dropped_total", "reason" => "budget").increment(1);
    }
    allowed
}

/// A token bucket per kind of event (a method and status, a breaker's dependency). A burst of
/// failures is one Sentry issue: sending each of thousands of identical events a second costs
/// every failing call ~20x a good one (BENCHMARKS.md) and Sentry's quota, and tells nobody
/// more. Kinds have buckets of their own, so one noisy failure cannot hide another. Events
/// over budget are counted (`soko_sentry_events_dropped_total{reason="budget"}`); how often a
/// call fails is `soko_grpc_server_handled_total`'s to say.
pub struct EventBudget {
    per_second: f64,
    burst: f64,
    hasher: RandomState,
    /// Tokens left and when they were counted, by the kind's hash.
    buckets: Mutex<HashMap<u64, (f64, Instant)>>,
}

/// Kinds kept before the table is cleared: methods × statuses, far fewer in practice.
const MAX_KINDS: usize = 4096;

impl EventBudget {
    /// `per_second` on average, in bursts of up to ten seconds' worth (at least one event).
    pub fn new(per_second: f64) -> Self {
        Self {
            per_second,
            burst: (per_second * 10.0).max(1.0),
            hasher: RandomState::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, kind: &impl std::hash::Hash, now: Instant) -> bool {
        let key = self.hasher.hash_one(kind);
        let Ok(mut buckets) = self.buckets.lock() else { return true };
        if buckets.len() >= MAX_KINDS && !buckets.contains_key(&key) {
            buckets.clear();
        }
        let (tokens, then) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*then).as_secs_f64() * self.per_second).min(self.burst);
        *then = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Replaces secrets in every string of an event.
pub struct Scrubber {
    /// Known secret values, longest first so that one containing another is replaced whole.
    values: Vec<String>,
}

const REDACTED: &str = "[redacted]";

/// Header names whose values are credentials whatever the integration thinks.
fn sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["authorization", "cookie", "api-key", "apikey", "token", "secret", "password", "session"]
        .iter()
        .any(|s| name.contains(s))
}

impl Scrubber {
    pub fn new(secrets: &[Secret]) -> Self {
        let mut values: Vec<String> = secrets
            .iter()
            .filter_map(|s| std::str::from_utf8(s.expose()).ok())
            // A short "secret" would redact ordinary words.
            .filter(|s| s.len() >= 6)
            .map(str::to_owned)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    pub fn event(&self, event: Event<'static>) -> Event<'static> {
        let mut value = match serde_json::to_value(&event) {
            Ok(v) => v,
            // Unreachable for events the SDK made; an event we cannot inspect is not sent whole.
            Err(_) => return Event { event_id: event.event_id, level: event.level, ..Default::default() },
        };
        if let Some(request) = value.get_mut("request").and_then(Value::as_object_mut) {
            if let Some(Value::Object(headers)) = request.get_mut("headers") {
                headers.retain(|name, _| !sensitive_header(name));
            }
            request.remove("cookies");
            request.remove("env");
        }
        if let Some(user) = value.get_mut("user").and_then(Value::as_object_mut) {
            user.retain(|k, _| k == "id");
        }
        self.walk(&mut value);
        serde_json::from_value(value).unwrap_or_else(|_| Event { event_id: event.event_id, ..Default::default() })
    }

    /// The envelope with each event scrubbed field by field (its breadcrumbs, request and user
    /// included); other items are left to the text pass over the whole envelope.
    pub fn envelope(&self, envelope: Envelope) -> Envelope {
        if envelope.event().is_none() {
            return envelope;
        }
        let mut clean = Envelope::new().with_headers(envelope.headers().clone());
        for item in envelope.into_items() {
            match item {
                EnvelopeItem::Event(event) => clean.add_item(self.event(*event)),
                other => clean.add_item(other),
            }
        }
        clean
    }

    fn walk(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(clean) = self.text(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v)),
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if sensitive_key(key) {
                        *v = Value::String(REDACTED.into());
                    } else {
                        self.walk(v);
                    }
                }
            }
            _ => {}
        }
    }

    /// The text with secrets replaced, or `None` when it holds none.
    pub fn text(&self, s: &str) -> Option<String> {
        let mut out = s.to_owned();
        for secret in &self.values {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        let out = redact_url_credentials(&out);
        let out = redact_tokens(&out);
        (out != s).then_some(out)
    }
}

/// Keys of structured data that hold credentials (`password`, `api_key`, `authorization`, ...).
fn sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "password" || key.contains("secret") || key.contains("api_key") || key == "authorization" || key == "token"
}

/// `scheme://user:password@host` → `scheme://[redacted]@host`.
fn redact_url_credentials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end =
            tail.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str(REDACTED);
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Bearer credentials, JWTs and Soko's own secrets (`soko_ak_…` API keys, `soko_rt_…` refresh
/// tokens), wherever they appear in text.
fn redact_tokens(s: &str) -> String {
    let token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/');
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < s.len() {
        let rest = &s[i..];
        let skip = if rest.len() > 7 && rest[..7].eq_ignore_ascii_case("bearer ") {
            Some(7)
        } else if rest.starts_with("eyJ") || rest.starts_with("soko_ak_") || rest.starts_with("soko_rt_") {
            Some(0)
        } else {
            None
        };
        let at_boundary = i == 0 || !token_char(bytes[i - 1] as char);
        if let (Some(skip), true) = (skip, at_boundary) {
            let start = i + skip;
            let len = s[start..].find(|c: char| !token_char(c)).unwrap_or(s.len() - start);
            // "eyJ" starts ordinary base64 too: a JWT has two dots.
            let token = &s[start..start + len];
            if len >= 8 && (!token.starts_with("eyJ") || token.matches('.').count() == 2) {
                out.push_str(&s[last..start]);
                out.push_str(REDACTED);
                i = start + len;
                last = i;
                continue;
            }
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out.push_str(&s[last..]);
    out
}

/// Sends envelopes from a thread of its own, so that `send_envelope` never blocks a caller and
/// the final flush at exit does not depend on the server's runtime still running.
pub struct HyperTransport {
    sender: SyncSender<Task>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

enum Task {
    Send(Box<Envelope>),
    Flush(SyncSender<()>),
    Stop,
}

/// Envelopes waiting to be sent; more are dropped (counted) rather than held in memory while
/// Sentry is down or slow.
const QUEUE: usize = 64;
/// One envelope's whole request, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl HyperTransport {
    pub fn start(dsn: Dsn, scrubber: Arc<Scrubber>) -> Self {
        let (sender, receiver) = sync_channel(QUEUE);
        let worker = std::thread::Builder::new()
            .name("sentry-transport".into())
            .spawn(move || run(dsn, scrubber, receiver))
            .expect("spawning the Sentry transport thread");
        Self { sender, worker: Mutex::new(Some(worker)) }
    }
}

impl sentry::Transport for HyperTransport {
    fn send_envelope(&self, envelope: Envelope) {
        match self.sender.try_send(Task::Send(Box::new(envelope))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("soko_sentry_events_dropped_total", "reason" => "queue_full").increment(1);
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = sync_channel(1);
        if self.sender.send(Task::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        let _ = self.sender.send(Task::Stop);
        if let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) {
            let _ = worker.join();
        }
        flushed
    }
}

fn run(dsn: Dsn, scrubber: Arc<Scrubber>, tasks: Receiver<Task>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soko: Sentry is off: no runtime for its transport: {e}");
            return;
        }
    };
    let sender = Sender::new(dsn);
    let mut limits = RateLimiter::new();
    for task in tasks {
        match task {
            Task::Send(envelope) => {
                // Sentry's back-off (429, rate-limit headers) for this kind of item: events, or
                // the performance traces.
                let category = if envelope.items().any(|i| matches!(i, sentry::protocol::EnvelopeItem::Transaction(_)))
                {
                    RateLimitingCategory::Transaction
                } else {
                    RateLimitingCategory::Error
                };
                if limits.is_disabled(category).is_some() {
                    metrics::counter!("soko_sentry_events_dropped_total", "reason" => "rate_limited").increment(1);
                    continue;
                }
                let envelope = scrubber.envelope(*envelope);
                let mut body = Vec::new();
                if envelope.to_writer(&mut body).is_err() {
                    continue;
                }
                // The last line of defence: whatever a custom hook or integration added.
                if let Ok(text) = std::str::from_utf8(&body)
                    && let Some(clean) = scrubber.text(text)
                {
                    body = clean.into_bytes();
                }
                match runtime.block_on(async { tokio::time::timeout(SEND_TIMEOUT, sender.post(body)).await }) {
                    Ok(Ok(response)) => {
                        if let Some(limit) = response.rate_limits {
                            limits.update_from_sentry_header(&limit);
                        } else if let Some(retry) = response.retry_after {
                            limits.update_from_retry_after(&retry);
                        } else if response.status == 429 {
                            limits.update_from_429();
                        }
                        let outcome = if response.status < 300 { "sent" } else { "refused" };
                        metrics::counter!("soko_sentry_events_total", "outcome" => outcome).increment(1);
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("soko_sentry_events_total", "outcome" => "failed").increment(1);
                        // Not through tracing: the tracing layer would turn it into a breadcrumb.
                        eprintln!("soko: sending an event to Sentry failed: {e}");
                    }
                    Err(_) => {
                        metrics::counter!("soko_sentry_events_total", "outcome" => "failed").increment(1);
                    }
                }
            }
            Task::Flush(done) => {
                let _ = done.send(());
            }
            Task::Stop => break,
        }
    }
}

struct Response {
    status: u16,
    retry_after: Option<String>,
    rate_limits: Option<String>,
}

/// One HTTP/1.1 POST per envelope to the DSN's envelope endpoint: errors are rare, so a pool
/// would hold a connection open for nothing.
struct Sender {
    dsn: Dsn,
    url: http::Uri,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Sender {
    fn new(dsn: Dsn) -> Self {
        let url = dsn.envelope_api_url().as_str().parse().expect("the DSN's envelope URL is a URI");
        let tls = (dsn.scheme() == sentry::types::Scheme::Https).then(|| {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Self { dsn, url, tls }
    }

    async fn post(&self, body: Vec<u8>) -> anyhow::Result<Response> {
        use anyhow::Context;
        let host = self.dsn.host().to_owned();
        let port = self.dsn.port();
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.context("connecting")?;
        let _ = tcp.set_nodelay(true);
        let auth = self.dsn.to_auth(Some(concat!("soko/", env!("CARGO_PKG_VERSION")))).to_string();
        let request = http::Request::post(self.url.clone())
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONTENT_TYPE, "application/x-sentry-envelope")
            .header("x-sentry-auth", auth)
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
        let response = match &self.tls {
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())?;
                let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
                send(hyper_util::rt::TokioIo::new(stream), request).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), request).await?,
        };
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Response {
            status: response.status().as_u16(),
            retry_after: header("retry-after"),
            rate_limits: header("x-sentry-rate-limits"),
        })
    }
}

async fn send<T>(
    io: T,
    request: http::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(&[Secret::new(b"jwt-secret-value-123".to_vec()), Secret::new(b"abc".to_vec())])
    }

    #[test]
    fn secrets_in_text_are_redacted() {
        let s = scrubber();
        let cases = [
            ("signing with jwt-secret-value-123 failed", "signing with [redacted] failed"),
            ("postgres://soko:pa55word@db:5432/soko?x=1", "postgres://[redacted]@db:5432/soko?x=1"),
            ("redis://:hunter2@cache/0 and http://host/path", "redis://[redacted]@cache/0 and http://host/path"),
            ("authorization: Bearer abc.def-ghi_jkl", "authorization: Bearer [redacted]"),
            ("key soko_ak_0123456789abcdef used", "key [redacted] used"),
            ("token eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl end", "token [redacted] end"),
        ];
        for (input, expected) in cases {
            assert_eq!(s.text(input).as_deref(), Some(expected), "{input}");
        }
        // Short configured values, plain words and base64 that is not a JWT are left alone.
        assert_eq!(s.text("abc eyJust-a-word http://example.com/a@b"), None);
    }

    /// A panic on a thread whose hub has a client arrives as an event, its message scrubbed,
    /// through the real transport to a local HTTP server.
    #[test]
    fn a_panic_is_sent_scrubbed() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (got, bodies) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                        let _ = got.send(body.to_owned());
                        break;
                    }
                }
            }
        });
        let config = SentryConfig {
            dsn: format!("http://key@{addr}/1").parse().unwrap(),
            release: default_release(),
            environment: "test".into(),
            traces_sample_rate: 0.0,
            events_per_second: 1.0,
            secrets: vec![Secret::new(b"jwt-secret-value-123".to_vec())],
        };
        let client = Arc::new(sentry::Client::from_config(sentry::apply_defaults(options(&config))));
        let hub = Arc::new(Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default())));
        let panicked = Hub::run(hub, || std::panic::catch_unwind(|| panic!("boom near jwt-secret-value-123")));
        assert!(panicked.is_err());
        assert!(client.flush(Some(Duration::from_secs(5))));
        let body = bodies.recv_timeout(Duration::from_secs(5)).expect("an envelope");
        assert!(body.contains("\"type\":\"panic\"") || body.contains("\"panic\""), "{body}");
        assert!(body.contains("boom near [redacted]"), "{body}");
        assert!(!body.contains("jwt-secret-value-123"), "{body}");
    }

    #[test]
    fn each_kind_of_event_has_a_budget_of_its_own() {
        let budget = EventBudget::new(2.0);
        let start = Instant::now();
        let sent = |kind: &str, at: Duration| (0..100).filter(|_| budget.allow(&kind, start + at)).count();
        // A burst of ten seconds' worth, then nothing until tokens come back.
        assert_eq!(sent("GetProduct INTERNAL", Duration::ZERO), 20);
        assert_eq!(sent("GetProduct INTERNAL", Duration::from_millis(100)), 0);
        // Another kind is not held back by the first.
        assert_eq!(sent("Login UNKNOWN", Duration::from_millis(100)), 20);
        // Two per second come back.
        assert_eq!(sent("GetProduct INTERNAL", Duration::from_millis(3100)), 6);
        // A slow rate still allows one event.
        assert!(EventBudget::new(0.01).allow(&"x", start));
    }

    #[test]
    fn envelopes_are_scrubbed_field_by_field() {
        let mut event = Event { message: Some("db at mysql://root:toor@h/x".into()), ..Default::default() };
        event.extra.insert("password".into(), "hunter2".into());
        let clean = scrubber().envelope(Envelope::from(event));
        let mut body = Vec::new();
        clean.to_writer(&mut body).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("toor") && !text.contains("hunter2"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn events_lose_credentials_headers_and_user_details() {
        let mut event = Event { message: Some("db at mysql://root:toor@h/x".into()), ..Default::default() };
        event.request = Some(sentry::protocol::Request {
            headers: [("authorization", "Bearer x"), ("x-api-key", "k"), ("x-request-id", "r1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        });
        event.user = Some(sentry::User {
            id: Some("user:42".into()),
            email: Some("ada@example.com".into()),
            ..Default::default()
        });
        event.extra.insert("password".into(), "hunter2".into());
        let clean = scrubber().event(event);
        let text = serde_json::to_string(&clean).unwrap();
        for secret in ["toor", "Bearer x", "x-api-key", "ada@example.com", "hunter2"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("x-request-id") && text.contains("user:42"), "{text}");
    }
}
