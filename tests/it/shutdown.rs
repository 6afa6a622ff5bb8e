//! Graceful shutdown of the real binary: SIGTERM turns health NOT_SERVING first, lets in-flight
//! calls finish, and exits 0; the drain deadline and a second signal force a non-zero exit.
//!
//! In-flight calls are made slow the way a production incident would: another process holds the
//! SQLite write lock, so writes wait on the database.

use crate::common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
use futures_util::StreamExt;
use soko::proto::{
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    grpc::health::v1::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient},
};
use tonic::transport::Channel;

struct Server {
    child: Child,
    grpc: SocketAddr,
    db_path: PathBuf,
    dir: PathBuf,
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("soko_t_{}", uuid::Uuid::new_v4().simple()));
        Self::create_admin(&dir);
        Self::serve_in(dir, extra_env)
    }

    /// Kills the process without warning and starts a new one on the same data directory.
    fn crash_and_restart(mut self) -> Self {
        self.signal("KILL");
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.dir);
        drop(self);
        Self::serve_in(dir, &[])
    }

    fn create_admin(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        // The first admin comes from the CLI, as in production.
        let created = Command::new(env!("CARGO_BIN_EXE_soko"))
            .args(["admin", "create-user", "--email", common::ADMIN_EMAIL, "--role", "admin"])
            .env_clear()
            .env("SOKO_DATA_DIR", dir)
            .env("SOKO_NEW_USER_PASSWORD", common::ADMIN_PASSWORD)
            .env("RUST_LOG", "off")
            .output()
            .expect("run soko admin create-user");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        assert!(String::from_utf8_lossy(&created.stdout).contains("created admin admin@soko.test"));
    }

    fn serve_in(dir: PathBuf, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_soko"));
        command
            .arg("serve")
            .env_clear()
            .env("SOKO_GRPC_ADDR", "127.0.0.1:0")
            .env("SOKO_OPS_ADDR", "127.0.0.1:0")
            .env("SOKO_DATA_DIR", &dir)
            .env("SOKO_EMBEDDING_DIM", "8")
            .env("SOKO_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start soko");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains("soko is serving") {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
                    let _ = tx.send(v["grpc"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                    sent = true;
                }
            }
        });
        let grpc = rx.recv_timeout(Duration::from_secs(30)).expect("server reports its address");
        Self { child, grpc, db_path: dir.join("soko.db"), dir }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap()
    }

    async fn admin_catalog(&self) -> common::Catalog {
        let channel = self.channel().await;
        let token = common::login(&channel, common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await.access_token;
        CatalogServiceClient::with_interceptor(channel, common::Bearer::new(Some(&token)))
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and how long that took.
    fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("soko did not exit within {limit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Takes SQLite's write lock from outside the server, as a long backup or migration would.
fn hold_write_lock(db: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    conn.batch_execute("BEGIN EXCLUSIVE").unwrap();
    conn
}

async fn seed_seller(client: &common::Catalog) -> String {
    let mut client = client.clone();
    let seller = client.create_seller(pb::CreateSellerRequest { display_name: "Drain Shop".into() }).await.unwrap();
    seller.into_inner().seller.unwrap().id
}

fn slow_writes(
    client: &common::Catalog,
    seller: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<pb::Product, tonic::Status>>> {
    (0..n)
        .map(|i| {
            let mut client = client.clone();
            let product = common::product(seller, &format!("In flight {i}"), "shoes", 100);
            tokio::spawn(async move {
                client
                    .create_product(pb::CreateProductRequest { product: Some(product) })
                    .await
                    .map(|r| r.into_inner().product.unwrap())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_not_serving_then_drains_in_flight_calls_and_exits_0() {
    let mut server = Server::start(&[]);
    let channel = server.channel().await;
    let catalog = server.admin_catalog().await;
    let seller = seed_seller(&catalog).await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let lock = hold_write_lock(&server.db_path);
    let calls = slow_writes(&catalog, &seller, 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.iter().all(|c| !c.is_finished()), "calls are in flight");

    server.signal("TERM");
    let update = tokio::time::timeout(Duration::from_secs(2), watch.next()).await.expect("health changes at once");
    assert_eq!(update.unwrap().unwrap().status(), ServingStatus::NotServing);
    assert!(calls.iter().all(|c| !c.is_finished()), "health went NOT_SERVING before the calls finished");

    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(lock);
    for call in calls {
        let product = call.await.unwrap().expect("in-flight call completes");
        assert!(product.name.starts_with("In flight"));
    }
    let (code, took) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10));
    // Nothing accepted after shutdown; everything accepted before was committed.
    assert!(Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.is_err());
    let mut conn = SqliteConnection::establish(server.db_path.to_str().unwrap()).unwrap();
    let count: i64 = diesel::RunQueryDsl::get_result(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT COUNT(*) FROM products)")),
        &mut conn,
    )
    .unwrap();
    assert_eq!(count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_forces_a_non_zero_exit() {
    let mut server = Server::start(&[("SOKO_SHUTDOWN_TIMEOUT_SECS", "1")]);
    let catalog = server.admin_catalog().await;
    let seller = seed_seller(&catalog).await;
    let _lock = hold_write_lock(&server.db_path);
    let _calls = slow_writes(&catalog, &seller, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    let (code, took) = server.wait(Duration::from_secs(5));
    assert_eq!(code, Some(1));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&[]);
    let catalog = server.admin_catalog().await;
    let seller = seed_seller(&catalog).await;
    let _lock = hold_write_lock(&server.db_path);
    let _calls = slow_writes(&catalog, &seller, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("INT");
    let (code, took) = server.wait(Duration::from_secs(2));
    assert_ne!(code, Some(0));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_during_writes_the_search_index_holds_exactly_the_live_products() {
    use soko::proto::soko::search::v1::{
        SearchByVectorRequest, SearchProductsRequest, search_service_client::SearchServiceClient,
    };
    let server = Server::start(&[]);
    let catalog = server.admin_catalog().await;
    let seller = seed_seller(&catalog).await;
    // Writers create, and now and then delete, until the process dies under them.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = catalog.clone();
            let seller = seller.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let mut product = common::product(&seller, &format!("Crash item {w}-{i}"), "shoes", 100);
                    product.embedding = embedding_of(w * 1_000_000 + i);
                    let Ok(created) = client.create_product(pb::CreateProductRequest { product: Some(product) }).await
                    else {
                        return;
                    };
                    if i % 3 == 0 {
                        let id = created.into_inner().product.unwrap().id;
                        if client.delete_product(pb::DeleteProductRequest { id }).await.is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let server = server.crash_and_restart();
    for writer in writers {
        let _ = writer.await;
    }

    // What the database holds…
    let catalog = server.admin_catalog().await;
    let mut live = Vec::new();
    let mut embeddings = Vec::new();
    let mut token = String::new();
    loop {
        let page = catalog
            .clone()
            .list_products(pb::ListProductsRequest {
                page_size: 100,
                page_token: token,
                read_mask: Some(prost_types::FieldMask { paths: vec!["embedding".into()] }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        live.extend(page.products.iter().map(|p| p.id.clone()));
        embeddings.extend(page.products.into_iter().map(|p| (p.id, p.embedding)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(live.len() > 5, "the writers got some products in before the crash: {}", live.len());
    // …is exactly what the rebuilt index finds.
    let mut search = SearchServiceClient::new(server.channel().await);
    let started = Instant::now();
    let mut found = loop {
        let mut found = Vec::new();
        let mut token = String::new();
        let ready = loop {
            let page = match search
                .search_products(SearchProductsRequest {
                    query: "crash item".into(),
                    page_size: 100,
                    page_token: token,
                    ..Default::default()
                })
                .await
            {
                Ok(page) => page.into_inner(),
                Err(e) if e.code() == tonic::Code::Unavailable => break false,
                Err(e) => panic!("{e:?}"),
            };
            found.extend(page.results.into_iter().map(|r| r.product_id));
            if page.next_page_token.is_empty() {
                break true;
            }
            token = page.next_page_token;
        };
        if ready {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the index never finished loading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    live.sort();
    found.sort();
    assert_eq!(found, live);
    // The vector index holds every live product too: each one's own embedding finds it.
    for (id, embedding) in embeddings {
        assert_eq!(embedding.len(), 8, "the database kept {id}'s embedding");
        let results = search
            .search_by_vector(SearchByVectorRequest { vector: embedding, top_k: 5, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().any(|r| r.product_id == id), "{id} is missing from the vector index: {results:?}");
    }
}

/// A distinct, deterministic 8-d embedding per writer and item, so each product is findable by
/// its own vector (the shared `common::product` embedding is the same for all).
fn embedding_of(seed: u64) -> Vec<f32> {
    // Spread the seeds apart: nearby seeds start xorshift off on nearby states.
    let mut rng = soko::vector::synthetic::Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..8).map(|_| rng.gaussian()).collect()
}
