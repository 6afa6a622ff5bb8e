//! Error tracking (issue 22): the real `soko` binary with `SENTRY_DSN` pointed at a recorder that
//! this test runs. Server failures and an opened breaker arrive as events with the call's ids;
//! expected refusals never do; and no secret the process holds or was sent ever leaves it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};

use crate::common::process::SokoProcess;
use soko::proto::{
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    soko::auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
};

/// One HTTP request the recorder received.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server that answers 200 to everything and keeps what it was sent.
#[derive(Clone, Default)]
struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        let body = buf[end + 4..end + 4 + length].to_vec();
                        received.lock().unwrap().push(Received { head, body });
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
                        return;
                    }
                });
            }
        });
        addr
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The event items received so far (transactions and client reports aside).
    fn events(&self) -> Vec<serde_json::Value> {
        self.all().iter().flat_map(|r| items(&r.body, "event")).collect()
    }

    async fn until(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let started = Instant::now();
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "never received {what}: {events:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The payloads of an envelope's items of type `kind`: an envelope is a header line, then for
/// each item a header line and a payload line.
fn items(envelope: &[u8], kind: &str) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(envelope);
    let mut lines = text.lines().skip(1);
    let mut out = Vec::new();
    while let (Some(header), Some(payload)) = (lines.next(), lines.next()) {
        let header: serde_json::Value = serde_json::from_str(header).unwrap_or_default();
        if header["type"] == kind
            && let Ok(value) = serde_json::from_str(payload)
        {
            out.push(value);
        }
    }
    out
}

const JWT_SECRET: &str = "sentry-test-jwt-secret-0123456789abcdef";
const REDIS_PASSWORD: &str = "redis-pass-never-sent";
const EMAIL: &str = "ada.sentry@example.com";
const PASSWORD: &str = "correct-horse-battery";
const GET: &str = "/soko.catalog.v1.CatalogService/GetProduct";

fn with_request_id<T>(message: T, id: &str, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn failures_reach_sentry_with_their_ids_and_without_secrets() {
    let recorder = Recorder::default();
    let addr = recorder.start().await;
    let dsn = format!("http://publickey123@{addr}/42");
    // Redis on a closed port: its prober opens the breaker, a warning event.
    let redis = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1");
    let soko = SokoProcess::start(&[
        ("SENTRY_DSN", &dsn),
        ("SENTRY_ENVIRONMENT", "ci"),
        ("SENTRY_TRACES_SAMPLE_RATE", "1.0"),
        // A budget of 3 events in a burst for each kind of failure.
        ("SOKO_SENTRY_EVENTS_PER_SECOND", "0.3"),
        ("JWT_SECRET", JWT_SECRET),
        ("REDIS_URL", &redis),
    ])
    .await;
    let channel = soko.channel().await;
    let registered = AuthServiceClient::new(channel.clone())
        .register(auth_pb::RegisterRequest {
            email: EMAIL.into(),
            password: PASSWORD.into(),
            role: auth_pb::Role::Buyer.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = registered.user.unwrap().id;
    let tokens = registered.tokens.unwrap();
    let mut catalog = CatalogServiceClient::new(channel.clone());

    // Expected refusals: bad input, a missing product, a bad credential.
    let bad = pb::GetProductRequest { id: "not an id".into(), ..Default::default() };
    let refused = catalog.get_product(with_request_id(bad, "refused-invalid", None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let missing = pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() };
    let refused = catalog.get_product(with_request_id(missing, "refused-missing", Some(&tokens.access_token))).await;
    assert_eq!(refused.unwrap_err().code(), Code::NotFound);
    let forged = pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() };
    let refused = catalog.get_product(with_request_id(forged, "refused-token", Some("not.a.token"))).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);

    // A server failure: the products table disappears behind Soko's back.
    {
        use diesel::{Connection, RunQueryDsl};
        let path = soko.data_dir().join("soko.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query("PRAGMA busy_timeout = 5000").execute(&mut conn).unwrap();
        diesel::sql_query("ALTER TABLE products RENAME TO products_gone").execute(&mut conn).unwrap();
    }
    let lost = pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() };
    let failed = catalog.get_product(with_request_id(lost, "failed-internal", Some(&tokens.access_token))).await;
    assert_eq!(failed.unwrap_err().code(), Code::Internal);
    // A burst of the same failure: a few events, the rest dropped before they are built.
    for i in 0..30 {
        let lost = pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() };
        let failed = catalog.get_product(with_request_id(lost, &format!("burst-{i}"), None)).await;
        assert_eq!(failed.unwrap_err().code(), Code::Internal);
    }

    let events = recorder
        .until("the failed call and the Redis breaker", |events| {
            let failed = events.iter().any(|e| e["tags"]["request_id"] == "failed-internal");
            let breaker = events.iter().any(|e| e["tags"]["dependency"] == "redis");
            failed && breaker
        })
        .await;

    let call = events.iter().find(|e| e["tags"]["request_id"] == "failed-internal").unwrap();
    // The protocol leaves out the default level, error.
    let level = |event: &serde_json::Value| event["level"].as_str().unwrap_or("error").to_owned();
    assert_eq!(level(call), "error");
    assert_eq!(call["tags"]["rpc.method"], GET);
    assert_eq!(call["tags"]["rpc.grpc.status_code"], "INTERNAL");
    assert_eq!(call["user"]["id"], format!("user:{user_id}"), "the caller's id: {call:#}");
    assert_eq!(call["environment"], "ci");
    assert!(call["release"].as_str().unwrap().starts_with("soko@"), "{call:#}");
    // The cause, logged while the call ran, travels as a breadcrumb.
    let crumbs = call["breadcrumbs"]["values"].to_string();
    assert!(crumbs.contains("products"), "the cause is among the breadcrumbs: {crumbs}");

    let breaker = events.iter().find(|e| e["tags"]["dependency"] == "redis").unwrap();
    assert_eq!(level(breaker), "warning");

    // Expected refusals are never events; every error event is a server failure.
    for event in &events {
        let id = event["tags"]["request_id"].as_str().unwrap_or_default();
        assert!(!id.starts_with("refused"), "an expected refusal was sent: {event:#}");
        if level(event) == "error" {
            assert_eq!(event["tags"]["rpc.grpc.status_code"], "INTERNAL", "{event:#}");
        }
    }

    // What left the process, headers included, holds no secret and no personal detail.
    let received = recorder.all();
    let auth = received.iter().find(|r| r.head.to_ascii_lowercase().contains("x-sentry-auth")).unwrap();
    assert!(auth.head.contains("sentry_key=publickey123"), "{}", auth.head);
    let everything: String =
        received.iter().map(|r| format!("{}\n{}\n", r.head, String::from_utf8_lossy(&r.body))).collect();
    for secret in [JWT_SECRET, REDIS_PASSWORD, EMAIL, PASSWORD, &tokens.access_token, &tokens.refresh_token] {
        assert!(!everything.contains(secret), "`{secret}` reached Sentry");
    }
    // The burst spent its budget: the first failure and two more (a token may have come back
    // while it ran), and the metrics count the rest.
    let exposition = soko.metrics().await;
    let dropped: f64 = exposition
        .lines()
        .find(|l| l.starts_with("soko_sentry_events_dropped_total{") && l.contains("reason=\"budget\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_default();
    assert!(dropped >= 27.0, "{dropped} events over budget counted:\n{exposition}");
    // Whatever was queued has arrived by now.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let internal = recorder.events().iter().filter(|e| e["tags"]["rpc.grpc.status_code"] == "INTERNAL").count();
    assert!((1..=4).contains(&internal), "{internal} events for one kind of failure in a burst of 31");

    // Sampled at 1.0, the calls were sent as performance traces too.
    let transactions: Vec<_> = received.iter().flat_map(|r| items(&r.body, "transaction")).collect();
    assert!(!transactions.is_empty(), "no performance traces");
}
