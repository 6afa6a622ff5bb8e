//! Test harness: start the real server on port 0 against a throwaway database of any backend and
//! talk to it with the generated client, as a user would.
#![allow(dead_code)]

pub mod http;
pub mod process;
pub mod proxy;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection};
use soko::{
    configuration::Config,
    domain::auth::Role,
    proto::{
        catalog::{self as pb, catalog_service_client::CatalogServiceClient},
        soko::{
            admin::v1::{self as admin_pb, admin_service_client::AdminServiceClient},
            auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
        },
    },
    startup::{Application, RunError},
    store::{Db, PoolSettings},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// A signing secret strong enough for production checks, for test servers only.
pub const TEST_JWT_SECRET: &str = "test-only-7f3a9c1e5b8d2f4a6c0e9b7d5f3a1c8e";
pub const ADMIN_EMAIL: &str = "admin@soko.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// Adds `authorization: Bearer …` to every call, when it has a token.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}").parse().expect("ascii token")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Catalog = CatalogServiceClient<InterceptedService<Channel, Bearer>>;
pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    /// Whether this run covers the backend. Only an explicit `SOKO_TEST_BACKENDS` outside CI
    /// narrows the set, and a skip is always printed; in CI every backend runs.
    pub fn enabled(self) -> bool {
        match std::env::var("SOKO_TEST_BACKENDS") {
            Ok(list) if !in_ci() => {
                let on = list.split(',').any(|b| b.trim() == self.name());
                if !on {
                    eprintln!("SKIPPED: backend {} is not in SOKO_TEST_BACKENDS={list}", self.name());
                }
                on
            }
            _ => true,
        }
    }
}

/// Whether this is a CI run (`CI=true` or `CI=1`), where nothing a test needs may be missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether an outside tool a test drives is there (`ready`). Outside CI a missing one skips the
/// test, saying so; in CI it fails the test. `what` names it and who provides it.
pub fn tool_ready(ready: bool, what: &str) -> bool {
    if !ready {
        assert!(!in_ci(), "CI=true: {what} is required");
        eprintln!("SKIPPED: {what} is missing");
    }
    ready
}

/// Runs a test body against each SQL backend, as three tests named after the backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::Backend::Sqlite.enabled() { super::$name($crate::common::Backend::Sqlite).await }
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::Backend::Postgres.enabled() { super::$name($crate::common::Backend::Postgres).await }
            })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::Backend::Mysql.enabled() { super::$name($crate::common::Backend::Mysql).await }
            })*
        }
    };
}

/// A throwaway database, dropped when this value is.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    name: String,
    admin_url: String,
    dir: Option<PathBuf>,
}

fn admin_url(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres => std::env::var("SOKO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Backend::Mysql => {
            std::env::var("SOKO_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
        }
    }
}

/// `scheme://user@host:port/db` with the database replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let name = format!("soko_t_{}", uuid::Uuid::new_v4().simple());
        let admin_url = admin_url(backend);
        let unreachable = |e: &dyn std::fmt::Display| -> ! {
            panic!(
                "{} is not reachable at {admin_url}: {e}. Run the tests through scripts/test, which starts it.",
                backend.name()
            )
        };
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = dir.join("soko.db").to_string_lossy().into_owned();
                Self { backend, url, name, admin_url, dir: Some(dir) }
            }
            Backend::Postgres => {
                let mut conn = AsyncPgConnection::establish(&admin_url).await.unwrap_or_else(|e| unreachable(&e));
                conn.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
                let url = with_database(&admin_url, &name);
                Self { backend, url, name, admin_url, dir: None }
            }
            Backend::Mysql => {
                let mut conn = AsyncMysqlConnection::establish(&admin_url).await.unwrap_or_else(|e| unreachable(&e));
                conn.batch_execute(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                    .await
                    .expect("create database");
                let url = with_database(&admin_url, &name);
                Self { backend, url, name, admin_url, dir: None }
            }
        }
    }

    /// A URL that reaches the same database through `addr` (a proxy), for outage tests.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("url");
        let (user, rest) = rest.split_once('@').expect("user in url");
        let (_, path) = rest.split_once('/').expect("path in url");
        // mysql_async switches loopback connections to the Unix socket unless told not to, which
        // would bypass the proxy.
        let options = if self.backend == Backend::Mysql { "?prefer_socket=false" } else { "" };
        format!("{scheme}://{user}@{addr}/{path}{options}")
    }

    /// Runs raw SQL against the database behind the server's back, as an operator (or a bug) might.
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                    diesel::SqliteConnection,
                >::establish(&self.url)
                .await
                .expect("open sqlite");
                // A server that just stopped may still be checkpointing its WAL: wait for the
                // lock as the server's own connections do, instead of failing at once.
                conn.batch_execute("PRAGMA busy_timeout = 5000;").await.expect("set busy_timeout");
                conn.batch_execute(sql).await.expect("execute");
            }
            Backend::Postgres => AsyncPgConnection::establish(&self.url)
                .await
                .expect("connect")
                .batch_execute(sql)
                .await
                .expect("execute"),
            Backend::Mysql => AsyncMysqlConnection::establish(&self.url)
                .await
                .expect("connect")
                .batch_execute(sql)
                .await
                .expect("execute"),
        }
    }

    /// The real database address of a networked backend.
    pub fn server_addr(&self) -> SocketAddr {
        use std::net::ToSocketAddrs;
        let rest = self.url.split_once('@').expect("user in url").1;
        let host = rest.split_once('/').expect("path").0;
        host.to_socket_addrs().expect("resolve").next().expect("an address")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which can't be blocked on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                match backend {
                    Backend::Postgres => {
                        if let Ok(mut c) = AsyncPgConnection::establish(&admin_url).await {
                            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                        }
                    }
                    Backend::Mysql => {
                        if let Ok(mut c) = AsyncMysqlConnection::establish(&admin_url).await {
                            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await;
                        }
                    }
                    Backend::Sqlite => {}
                }
            });
        })
        .join();
    }
}

/// Configuration for a test server: ephemeral ports, the given database, overrides on top.
pub fn test_config(database_url: &str, overrides: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("SOKO_GRPC_ADDR".into(), "127.0.0.1:0".into()),
        ("SOKO_OPS_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), database_url.into()),
        ("SOKO_EMBEDDING_DIM".into(), "8".into()),
        ("JWT_SECRET".into(), TEST_JWT_SECRET.into()),
        // Tests of other features make many calls quickly; the rate-limit tests set real quotas.
        ("SOKO_RATE_LIMIT_GLOBAL".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_AUTH".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_SEARCH".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_UPLOAD".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_TRANSACTION".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_ADMIN".into(), "1000000/min".into()),
        ("SOKO_RATE_LIMIT_API_KEY".into(), "1000000/min".into()),
        ("RUST_LOG".into(), std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into())),
        // Servers in one test run share the working directory; the snapshot tests give theirs a
        // directory of its own.
        ("SOKO_SNAPSHOT_INTERVAL_SECS".into(), "0".into()),
        // Backups only when a test asks, each server into a directory of its own.
        ("SOKO_BACKUP_INTERVAL_SECS".into(), "0".into()),
        (
            "SOKO_BACKUP_DIR".into(),
            std::env::temp_dir()
                .join(format!("soko_backups_{}", uuid::Uuid::new_v4().simple()))
                .to_string_lossy()
                .into(),
        ),
        // Test servers speak plaintext on loopback, production-mode ones included; the TLS tests
        // configure certificates.
        ("SOKO_ALLOW_PLAINTEXT".into(), "true".into()),
    ];
    for (k, v) in overrides {
        vars.retain(|(key, _)| key != k);
        vars.push(((*k).into(), (*v).into()));
    }
    let config = Config::from_lookup(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .expect("valid test configuration");
    soko::telemetry::init(&config);
    config
}

/// A running server and clients for it.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub channel: Channel,
    /// A catalog client signed in as the admin created at start.
    pub catalog: Catalog,
    pub admin_token: String,
    pub db: Db,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), RunError>>>,
    pub database: Option<TestDatabase>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut app = spawn_on(&database.url, overrides).await;
    app.database = Some(database);
    app
}

/// Starts a server on an existing database URL.
pub async fn spawn_on(database_url: &str, overrides: &[(&str, &str)]) -> TestApp {
    let config = test_config(database_url, overrides);
    let app = Application::build(config.clone()).await.expect("server starts");
    let accounts = soko::startup::accounts(&config, app.db());
    // Fails harmlessly when a second server shares the database and the admin exists.
    let _ = accounts.create_user(ADMIN_EMAIL, ADMIN_PASSWORD, Role::Admin).await;
    let grpc_addr = app.grpc_addr();
    let ops_addr = app.ops_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{grpc_addr}")).expect("uri").connect().await.expect("connect");
    let admin_token = login(&channel, ADMIN_EMAIL, ADMIN_PASSWORD).await.access_token;
    let db = Db::connect(&config.database, &PoolSettings { max_size: 2, checkout_timeout: Duration::from_secs(5) })
        .expect("test pool");
    TestApp {
        grpc_addr,
        ops_addr,
        catalog: CatalogServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(&admin_token))),
        admin_token,
        channel,
        db,
        shutdown: Some(tx),
        handle: Some(handle),
        database: None,
    }
}

/// Logs in and returns the session's tokens.
pub async fn login(channel: &Channel, email: &str, password: &str) -> auth_pb::TokenPair {
    AuthServiceClient::new(channel.clone())
        .login(auth_pb::LoginRequest { email: email.into(), password: password.into() })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

impl TestApp {
    /// A catalog client acting with `token` (anonymous with `None`).
    pub fn catalog_as(&self, token: Option<&str>) -> Catalog {
        CatalogServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token))
    }

    pub fn admin_as(&self, token: Option<&str>) -> Admin {
        AdminServiceClient::with_interceptor(self.channel.clone(), Bearer::new(token))
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// The id of the admin created at start.
    pub async fn admin_id(&self) -> String {
        let mut request = tonic::Request::new(auth_pb::MeRequest {});
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.admin_token).parse().unwrap());
        self.auth().me(request).await.expect("admin me").into_inner().user.expect("user").id
    }

    /// Creates an API key for `user_id` as the admin; returns the key and its secret.
    pub async fn create_api_key(&self, user_id: &str, name: &str) -> (admin_pb::ApiKey, String) {
        let response = self
            .admin_as(Some(&self.admin_token))
            .create_api_key(admin_pb::CreateApiKeyRequest {
                user_id: user_id.into(),
                display_name: name.into(),
                reason: "integration test".into(),
                ..Default::default()
            })
            .await
            .expect("create api key")
            .into_inner();
        (response.api_key.expect("api key"), response.secret)
    }

    /// Registers an account and returns its id and access token.
    pub async fn register(&self, email: &str, role: auth_pb::Role) -> (String, auth_pb::TokenPair) {
        let response = self
            .auth()
            .register(auth_pb::RegisterRequest {
                email: email.into(),
                password: "password-123".into(),
                role: role.into(),
            })
            .await
            .expect("register")
            .into_inner();
        (response.user.expect("user").id, response.tokens.expect("tokens"))
    }

    /// Begins shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("running").await.expect("server task")
    }

    pub async fn seller(&self, name: &str) -> pb::Seller {
        let mut client = self.catalog.clone();
        client
            .create_seller(pb::CreateSellerRequest { display_name: name.into() })
            .await
            .expect("create seller")
            .into_inner()
            .seller
            .expect("seller")
    }

    pub async fn create(&self, product: pb::Product) -> pb::Product {
        let mut client = self.catalog.clone();
        client
            .create_product(pb::CreateProductRequest { product: Some(product) })
            .await
            .expect("create product")
            .into_inner()
            .product
            .expect("product")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A read mask naming every Product field, the embedding included: reads that must compare whole
/// products ask for it, since reads leave the embedding out by default.
pub fn every_field() -> Option<prost_types::FieldMask> {
    let paths = ["name", "description", "price", "category_id", "seller_id", "image_urls", "embedding", "status"];
    Some(prost_types::FieldMask {
        paths: paths.into_iter().chain(["create_time", "update_time"]).map(String::from).collect(),
    })
}

/// A valid product of `seller` to start tests from.
pub fn product(seller_id: &str, name: &str, category: &str, price: i64) -> pb::Product {
    pb::Product {
        name: name.into(),
        description: format!("{name}, a fine thing"),
        price: Some(pb::Money { amount_minor: price, currency_code: "KES".into() }),
        category_id: category.into(),
        seller_id: seller_id.into(),
        image_urls: vec!["https://img.example/a.webp".into()],
        embedding: vec![0.5; 8],
        status: pb::ProductStatus::Active.into(),
        ..Default::default()
    }
}

/// Tries a product write on `app` until it succeeds (`writable`) or is refused with UNAVAILABLE
/// (not `writable`), for at most `within`; returns how long that took. Any error other than
/// UNAVAILABLE is a failure.
pub async fn until_writable(app: &TestApp, seller: &str, writable: bool, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let result = app
            .catalog
            .clone()
            .create_product(pb::CreateProductRequest { product: Some(product(seller, "Probe", "shoes", 1)) })
            .await;
        match (&result, writable) {
            (Ok(_), true) => return started.elapsed(),
            (Err(s), false) if s.code() == tonic::Code::Unavailable => return started.elapsed(),
            (Err(s), _) if s.code() != tonic::Code::Unavailable => panic!("unexpected {s:?}"),
            _ => {}
        }
        assert!(started.elapsed() < within, "still writable={} after {within:?}: {result:?}", !writable);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The session id inside an access token the server issued.
pub fn session_of(access_token: &str) -> String {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    claims["sid"].as_str().expect("sid").to_owned()
}

/// The field paths of a status's `BadRequest` violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
