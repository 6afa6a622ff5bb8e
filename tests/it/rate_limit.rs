//! Abuse protection: rate limits per class and caller (locally and shared through Redis, with
//! fallback when Redis fails), trusted-proxy client IPs, deadlines, load shedding and message
//! limits. The limiter doesn't depend on the SQL backend, so these run on the embedded default.

use crate::common;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Backend, TestApp, http, spawn_app_with, spawn_on};
use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
use soko::proto::{
    catalog as pb,
    soko::{
        admin::v1::ListUsersRequest,
        auth::v1::LoginRequest,
        search::v1::{SearchByImageRequest, SearchProductsRequest, search_service_client::SearchServiceClient},
    },
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn shared_redis_url() -> String {
    std::env::var("SOKO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or earlier run) uses, so tests sharing one Redis don't collide.
fn fresh_prefix() -> String {
    format!("soko-test-{}", uuid::Uuid::new_v4().simple())
}

fn assert_rate_limited(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo detail").retry_delay.expect("a delay");
    assert!(status.get_details_quota_failure().is_some(), "QuotaFailure detail");
    let header = status.metadata().get("retry-after").expect("retry-after").to_str().unwrap();
    assert_eq!(header.parse::<u64>().unwrap(), retry.as_secs());
    assert_eq!(status.metadata().get("ratelimit-remaining").unwrap(), "0");
    assert!(status.metadata().get("ratelimit-limit").is_some());
    retry
}

/// Quotas of 2 per second per class, everything else out of the way.
fn two_per_second_for(class: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![("SOKO_RATE_LIMIT_GLOBAL".into(), "1000/sec".into())];
    vars.push((format!("SOKO_RATE_LIMIT_{}", class.to_uppercase()), "2/sec,burst=2".into()));
    vars
}

async fn app_with(vars: &[(String, String)]) -> TestApp {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(Backend::Sqlite, &vars).await
}

/// Calls `call` until it is rate limited (at most `n` + 1 times), checks the refusal, waits the
/// advertised delay and checks the next call passes.
async fn exhaust_then_recover<F, Fut, T>(n: usize, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    // Setting up the test (logging in the admin) spent from some buckets; let them refill.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..n {
        match call().await {
            Ok(response) => {
                let remaining = response.metadata().get("ratelimit-remaining").expect("remaining budget on success");
                assert_eq!(remaining.to_str().unwrap(), (n - 1 - i).to_string());
            }
            Err(status) => assert_ne!(status.code(), Code::ResourceExhausted, "call {i} is within the quota"),
        }
    }
    let refused = call().await.err().expect("the call past the quota is refused");
    let retry = assert_rate_limited(&refused);
    tokio::time::sleep(retry).await;
    match call().await {
        Ok(_) => {}
        Err(status) => assert_ne!(status.code(), Code::ResourceExhausted, "after the advertised delay it passes"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_past_its_quota_is_refused_with_retry_info_then_passes_after_the_delay() {
    // global: any method, per anonymous IP.
    let app = app_with(&[("SOKO_RATE_LIMIT_GLOBAL".into(), "2/sec,burst=2".into())]).await;
    let anonymous = app.catalog_as(None);
    exhaust_then_recover(2, || {
        let mut c = anonymous.clone();
        async move { c.list_categories(pb::ListCategoriesRequest {}).await }
    })
    .await;

    // auth: logins per IP, whatever their outcome.
    let app = app_with(&two_per_second_for("auth")).await;
    let auth = app.auth();
    exhaust_then_recover(2, || {
        let mut c = auth.clone();
        async move { c.login(LoginRequest { email: "nobody@soko.test".into(), password: "wrong-password".into() }).await }
    })
    .await;

    // search and upload: public search methods, per IP.
    let app = app_with(&two_per_second_for("search")).await;
    let search = SearchServiceClient::new(app.channel.clone());
    exhaust_then_recover(2, || {
        let mut c = search.clone();
        async move { c.search_products(SearchProductsRequest::default()).await }
    })
    .await;
    let app = app_with(&two_per_second_for("upload")).await;
    let search = SearchServiceClient::new(app.channel.clone());
    exhaust_then_recover(2, || {
        let mut c = search.clone();
        async move { c.search_by_image(SearchByImageRequest::default()).await }
    })
    .await;

    // transaction: catalog writes, per user.
    let app = app_with(&two_per_second_for("transaction")).await;
    let seller = app.seller("Quota Shop").await.id;
    let catalog = app.catalog.clone();
    exhaust_then_recover(2, || {
        let mut c = catalog.clone();
        let product = common::product(&seller, "Limited", "shoes", 100);
        async move { c.create_product(pb::CreateProductRequest { product: Some(product) }).await }
    })
    .await;

    // admin: admin methods, per admin.
    let app = app_with(&two_per_second_for("admin")).await;
    let admin = app.admin_as(Some(&app.admin_token));
    exhaust_then_recover(2, || {
        let mut c = admin.clone();
        async move { c.list_users(ListUsersRequest::default()).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_have_their_own_quota() {
    let app = app_with(&[
        ("SOKO_RATE_LIMIT_GLOBAL".into(), "2/sec,burst=2".into()),
        ("SOKO_RATE_LIMIT_API_KEY".into(), "5/sec,burst=5".into()),
    ])
    .await;
    let mut admin = app.admin_as(Some(&app.admin_token));
    let me = admin.list_users(ListUsersRequest::default()).await.unwrap().into_inner().users[0].id.clone();
    let key = admin
        .create_api_key(soko::proto::soko::admin::v1::CreateApiKeyRequest {
            user_id: me,
            display_name: "importer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut with_key = soko::proto::catalog::catalog_service_client::CatalogServiceClient::new(app.channel.clone());
    let mut passed = 0;
    for _ in 0..6 {
        let mut request = tonic::Request::new(pb::ListCategoriesRequest {});
        request.metadata_mut().insert("x-api-key", key.parse().unwrap());
        match with_key.list_categories(request).await {
            Ok(_) => passed += 1,
            Err(status) => {
                assert_rate_limited(&status);
            }
        }
    }
    assert_eq!(passed, 5, "the key's quota, not the global 2");
}

/// Drives calls at twice the allowed rate for a fixed period and compares admitted with allowed.
async fn admitted_over_allowed(app: &TestApp, quota_per_sec: u32, burst: u32, seconds: u32) -> f64 {
    let anonymous = app.catalog_as(None);
    let interval = Duration::from_secs(1) / (2 * quota_per_sec);
    let total = 2 * quota_per_sec * seconds;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..total {
        ticker.tick().await;
        let mut c = anonymous.clone();
        calls.push(tokio::spawn(async move { c.list_categories(pb::ListCategoriesRequest {}).await.is_ok() }));
    }
    let mut admitted = 0;
    for call in calls {
        if call.await.unwrap() {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(burst) + elapsed * f64::from(quota_per_sec);
    f64::from(admitted) / allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_twice_the_allowed_load_admissions_match_the_quota_locally_and_in_redis() {
    let prefix = fresh_prefix();
    for redis in [false, true] {
        let mut vars = vec![("SOKO_RATE_LIMIT_GLOBAL".to_string(), "50/sec,burst=5".to_string())];
        if redis {
            vars.push(("REDIS_URL".into(), shared_redis_url()));
            vars.push(("SOKO_REDIS_KEY_PREFIX".into(), prefix.clone()));
        }
        let app = app_with(&vars).await;
        let ratio = admitted_over_allowed(&app, 50, 5, 4).await;
        println!("redis={redis}: admitted / allowed = {ratio:.4}");
        assert!((0.98..=1.02).contains(&ratio), "redis={redis}: admitted / allowed = {ratio:.4}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_enforce_one_combined_quota() {
    let prefix = fresh_prefix();
    let redis = shared_redis_url();
    let vars = [
        ("SOKO_RATE_LIMIT_GLOBAL", "10/min"),
        ("REDIS_URL", redis.as_str()),
        ("SOKO_REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let a = spawn_app_with(Backend::Sqlite, &vars).await;
    let url = a.database.as_ref().unwrap().url.clone();
    let b = spawn_on(&url, &vars).await;
    let mut admitted = 0;
    // The same admin on both replicas: one user, one bucket. Each login above spent one call.
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        if app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "ten per minute across both replicas, not ten each");
}

/// A Redis of this test's own, to stop and kill without disturbing anyone else's.
struct RedisProcess {
    child: Child,
    port: u16,
}

impl RedisProcess {
    async fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(|| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, name: &str) {
        assert!(
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap().success()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.signal_quietly();
        self.kill();
    }
}

impl RedisProcess {
    fn signal_quietly(&self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).status();
    }
}

async fn readiness(app: &TestApp) -> serde_json::Value {
    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    serde_json::from_slice(&ready.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_falls_back_to_local_limits_fast_and_heals() {
    let mut redis = RedisProcess::start(None).await;
    let url = redis.url();
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("SOKO_RATE_LIMIT_GLOBAL", "5/sec,burst=5"), ("REDIS_URL", url.as_str()), ("SOKO_REDIS_TIMEOUT_MS", "200")],
    )
    .await;
    let anonymous = app.catalog_as(None);
    let call = || {
        let mut c = anonymous.clone();
        async move {
            let started = Instant::now();
            let result = c.list_categories(pb::ListCategoriesRequest {}).await;
            (result, started.elapsed())
        }
    };
    assert!(call().await.0.is_ok());
    assert_eq!(readiness(&app).await["checks"]["rate_limiter"]["backend"], "redis");

    // Hung Redis: every call still answers within its budget, limited locally.
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_millis(1100)).await; // let the bucket refill
    let mut outcomes = Vec::new();
    let mut waited_out_the_timeout = 0;
    for _ in 0..7 {
        let (result, took) = call().await;
        assert!(took < Duration::from_millis(500), "a hung Redis cost a call {took:?}");
        waited_out_the_timeout += usize::from(took >= Duration::from_millis(200));
        outcomes.push(result.map(|_| ()).map_err(|s| s.code()));
    }
    // The first call to meet the hung Redis (or the prober, if it got there first) opens the
    // breaker; after that only the prober waits on Redis.
    assert!(waited_out_the_timeout <= 1, "{waited_out_the_timeout} calls paid the Redis timeout");
    tokio::time::sleep(Duration::from_millis(1100)).await; // several probes, and a refilled bucket
    for _ in 0..3 {
        let (_, took) = call().await;
        assert!(took < Duration::from_millis(200), "a call waited {took:?} on a Redis known to be hung");
    }
    assert!(outcomes[..5].iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(outcomes[6], Err(Code::ResourceExhausted), "limits still apply, locally: {outcomes:?}");
    let ready = readiness(&app).await;
    assert_eq!(ready["checks"]["rate_limiter"]["degraded"], true, "{ready}");
    assert_eq!(ready["status"], "ready", "a degraded limiter doesn't make the replica unready");
    let metrics = http::request(app.ops_addr, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("soko_redis_degraded 1"));

    // Dead Redis: same.
    redis.kill();
    let (result, took) = call().await;
    assert!(took < Duration::from_millis(500));
    assert!(result.is_ok() || result.unwrap_err().code() == Code::ResourceExhausted);

    // Redis returns (empty): shared limits resume.
    let _back = RedisProcess::start(Some(redis.port)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = call().await;
        if readiness(&app).await["checks"]["rate_limiter"]["degraded"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the limiter did not return to Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = app_with(&[("SOKO_RATE_LIMIT_GLOBAL".into(), "2/sec,burst=2".into())]).await;
    // Logging in the test's admin spent from this IP's bucket; let it refill.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut anonymous = soko::proto::catalog::catalog_service_client::CatalogServiceClient::new(app.channel.clone());
    let mut codes = Vec::new();
    for i in 0..4 {
        let mut request = tonic::Request::new(pb::ListCategoriesRequest {});
        request.metadata_mut().insert("x-forwarded-for", format!("198.51.100.{i}").parse().unwrap());
        request.metadata_mut().insert("x-real-ip", format!("203.0.113.{i}").parse().unwrap());
        codes.push(anonymous.list_categories(request).await.map(|_| ()).map_err(|s| s.code()));
    }
    assert_eq!(codes, [Ok(()), Ok(()), Err(Code::ResourceExhausted), Err(Code::ResourceExhausted)]);

    // Behind a trusted proxy, the forwarded address is the client.
    let app = app_with(&[
        ("SOKO_RATE_LIMIT_GLOBAL".into(), "2/min".into()),
        ("SOKO_TRUSTED_PROXIES".into(), "127.0.0.1/32,::1".into()),
    ])
    .await;
    let mut anonymous = soko::proto::catalog::catalog_service_client::CatalogServiceClient::new(app.channel.clone());
    for i in 0..4 {
        let mut request = tonic::Request::new(pb::ListCategoriesRequest {});
        request.metadata_mut().insert("x-forwarded-for", format!("198.51.100.{i}").parse().unwrap());
        assert!(anonymous.list_categories(request).await.is_ok(), "client {i} has its own bucket");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_counts_without_refusing() {
    let app = app_with(&[
        ("SOKO_RATE_LIMIT_GLOBAL".into(), "1/min".into()),
        ("SOKO_RATE_LIMIT_SHADOW".into(), "global".into()),
    ])
    .await;
    let anonymous = app.catalog_as(None);
    for _ in 0..5 {
        assert!(anonymous.clone().list_categories(pb::ListCategoriesRequest {}).await.is_ok());
    }
    let metrics = http::request(app.ops_addr, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("outcome=\"shadow_rejected\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_never_limited() {
    use soko::proto::grpc::health::v1::{HealthCheckRequest, health_client::HealthClient};
    let app = app_with(&[("SOKO_RATE_LIMIT_GLOBAL".into(), "1/min".into())]).await;
    let mut health = HealthClient::new(app.channel.clone());
    for _ in 0..20 {
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    }
}

/// Holds SQLite's write lock from outside the server so writes wait: a slow dependency.
fn lock_database(app: &TestApp) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(&app.database.as_ref().unwrap().url).unwrap();
    conn.batch_execute("BEGIN EXCLUSIVE").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_their_deadline_answer_deadline_exceeded() {
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_REQUEST_TIMEOUT_MS", "300")]).await;
    let seller = app.seller("Slow Shop").await.id;
    let _lock = lock_database(&app);
    let started = Instant::now();
    let err = app
        .catalog
        .clone()
        .create_product(pb::CreateProductRequest { product: Some(common::product(&seller, "Late", "shoes", 100)) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(2), "{took:?}");

    // A client's own shorter deadline is honoured with the same code.
    let mut request =
        tonic::Request::new(pb::CreateProductRequest { product: Some(common::product(&seller, "Late", "shoes", 100)) });
    request.set_timeout(Duration::from_millis(150));
    let started = Instant::now();
    let err = app.catalog.clone().create_product(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(290));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_past_the_concurrency_limit_is_shed_with_unavailable() {
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_MAX_CONCURRENT_REQUESTS", "2")]).await;
    let seller = app.seller("Busy Shop").await.id;
    let lock = lock_database(&app);
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let mut c = app.catalog.clone();
            let product = common::product(&seller, &format!("Queued {i}"), "shoes", 100);
            tokio::spawn(async move { c.create_product(pb::CreateProductRequest { product: Some(product) }).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let shed = app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.unwrap_err();
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert!(shed.get_details_retry_info().is_some());
    assert!(started.elapsed() < Duration::from_millis(100), "shed at once, not queued");
    // Probes still answer.
    let mut health = soko::proto::grpc::health::v1::health_client::HealthClient::new(app.channel.clone());
    health.check(soko::proto::grpc::health::v1::HealthCheckRequest { service: String::new() }).await.unwrap();
    drop(lock);
    for call in slow {
        call.await.unwrap().expect("the admitted calls complete");
    }
    assert!(app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_with_bounded_memory() {
    use std::io::Write;
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_MAX_MESSAGE_BYTES", "4194304")]).await;
    // A ListProductsRequest whose page_token field claims over 1 GiB of 'A's: about 1 MiB gzipped.
    let inflated_len: u64 = (1 << 30) + 1024;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut header = vec![0x22]; // field 4 (page_token), length-delimited
    let mut n = inflated_len;
    while n >= 0x80 {
        header.push((n as u8) | 0x80);
        n >>= 7;
    }
    header.push(n as u8);
    encoder.write_all(&header).unwrap();
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..1025 {
        encoder.write_all(&chunk).unwrap();
    }
    let compressed = encoder.finish().unwrap();
    assert!(compressed.len() < 2 << 20, "the bomb is small: {} bytes", compressed.len());

    let rss_before = rss_kib();
    let mut body = vec![1u8]; // compressed frame
    body.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    body.extend_from_slice(&compressed);
    let response = http::request(
        app.grpc_addr,
        "POST",
        "/soko.catalog.v1.CatalogService/ListProducts",
        &[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"), ("grpc-encoding", "gzip")],
        &body,
    )
    .await;
    let status = response
        .header("grpc-status")
        .map(str::to_owned)
        .or_else(|| {
            http::grpc_web_frames(&response.body).1.into_iter().find(|(k, _)| k == "grpc-status").map(|(_, v)| v)
        })
        .expect("a grpc status");
    assert!(["8", "11"].contains(&status.as_str()), "RESOURCE_EXHAUSTED or OUT_OF_RANGE, got {status}");
    let grown_mib = (rss_kib().saturating_sub(rss_before)) / 1024;
    assert!(grown_mib < 128, "inflating the bomb grew the process by {grown_mib} MiB");
    assert!(app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.is_ok());
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_callers_get_the_same_refusal_and_can_read_it_from_a_browser() {
    use prost::Message;
    let origin = "https://shop.soko.example";
    let app =
        spawn_app_with(Backend::Sqlite, &[("SOKO_RATE_LIMIT_GLOBAL", "2/sec,burst=2"), ("SOKO_CORS_ORIGINS", origin)])
            .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"), ("origin", origin)];
    let body = http::grpc_frame(&pb::ListCategoriesRequest {}.encode_to_vec());
    let call =
        || http::request(app.grpc_addr, "POST", "/soko.catalog.v1.CatalogService/ListCategories", &headers, &body);
    for remaining in ["1", "0"] {
        let ok = call().await;
        assert_eq!(ok.header("ratelimit-remaining"), Some(remaining));
    }
    let refused = call().await;
    assert_eq!(refused.status, 200, "grpc-web carries the status in grpc-status");
    assert_eq!(refused.header("grpc-status"), Some("8"));
    assert!(refused.header("retry-after").is_some());
    assert!(refused.header("grpc-status-details-bin").is_some(), "RetryInfo and QuotaFailure travel too");
    let exposed = refused.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    for header in ["retry-after", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(exposed.contains(header), "a browser can read {header}: {exposed}");
    }
}
