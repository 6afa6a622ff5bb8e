//! The product cache: reads served from memory (and Redis), never stale once a write has been
//! applied, on SQLite, PostgreSQL and MariaDB.
//!
//! A hit is told from a database read by changing a row behind the outbox's back (plain SQL, as a
//! hand repair would): a cached read still shows the old value, a database read the new one.
//! That needs no metrics, which every test in this process shares.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, product, spawn_app_with, spawn_on};
use soko::proto::{
    catalog as pb,
    soko::search::v1::{SearchProductsRequest, search_service_client::SearchServiceClient},
};
use tonic::Code;

backend_tests!(
    reads_come_from_the_cache_until_a_write_which_is_read_back_at_once,
    replicas_share_entries_through_redis_and_a_write_on_one_reaches_the_others,
);

fn shared_redis_url() -> String {
    std::env::var("SOKO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn name_of(app: &TestApp, token: Option<&str>, id: &str) -> Result<String, Code> {
    app.catalog_as(token)
        .get_product(pb::GetProductRequest { id: id.into(), ..Default::default() })
        .await
        .map(|r| r.into_inner().product.unwrap().name)
        .map_err(|s| s.code())
}

/// Renames a product in the table only: no outbox event, so no cache learns of it.
async fn rename_behind_the_outbox(app: &TestApp, id: &str, name: &str) {
    let sql = format!("UPDATE products SET name = '{name}' WHERE id = '{id}'");
    app.database.as_ref().expect("a test database").execute(&sql).await;
}

async fn update(app: &TestApp, id: &str, change: pb::Product, paths: &[&str]) {
    app.catalog
        .clone()
        .update_product(pb::UpdateProductRequest {
            product: Some(pb::Product { id: id.into(), ..change }),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        })
        .await
        .expect("update");
}

/// Waits until `app`'s outbox follower has applied the write that gave a product `name`: search
/// shows it then, and the follower has told the caches in the same step (and so has bumped the
/// page generation, which a page cached before would not survive).
async fn applied(app: &TestApp, name: &str) {
    let mut search = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    loop {
        let request = SearchProductsRequest { query: name.into(), ..Default::default() };
        let results = search.search_products(request).await.map(|r| r.into_inner().results).unwrap_or_default();
        if results.iter().any(|r| r.product.as_ref().is_some_and(|p| p.name == name)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "`{name}` never reached the index");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn anonymous_page(app: &TestApp) -> Vec<String> {
    app.catalog_as(None)
        .list_products(pb::ListProductsRequest { page_size: 50, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .products
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn reads_come_from_the_cache_until_a_write_which_is_read_back_at_once(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let seller = app.seller("Lamu Looms").await;
    let p = app.create(product(&seller.id, "Kikoi", "accessories", 1500)).await;
    assert_eq!(name_of(&app, None, &p.id).await, Ok("Kikoi".into()));

    rename_behind_the_outbox(&app, &p.id, "Hand-fixed").await;
    assert_eq!(name_of(&app, None, &p.id).await, Ok("Kikoi".into()), "served from the cache");
    let batch = app
        .catalog_as(None)
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![p.id.clone(), "0190f5c5-0000-7000-8000-000000000000".into(), p.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = batch.products.iter().map(|p| p.name.as_str()).collect();
    assert_eq!((names, batch.missing_ids.len()), (vec!["Kikoi"], 1), "in order, each once, the unknown one missing");
    // Asking for the embedding goes to the database, which has the hand fix.
    let full = app
        .catalog_as(None)
        .get_product(pb::GetProductRequest { id: p.id.clone(), read_mask: common::every_field() })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((full.name.as_str(), full.embedding.len()), ("Hand-fixed", 8));

    // A write through the API: read back at once, by anyone.
    update(&app, &p.id, pb::Product { name: "Kikoi towel".into(), ..Default::default() }, &["name"]).await;
    assert_eq!(name_of(&app, None, &p.id).await, Ok("Kikoi towel".into()));

    // Turned back into a draft: gone for buyers at once, and never cached for its seller.
    let draft = pb::Product { status: pb::ProductStatus::Draft.into(), ..Default::default() };
    update(&app, &p.id, draft, &["status"]).await;
    assert_eq!(name_of(&app, None, &p.id).await, Err(Code::NotFound));
    let admin = Some(app.admin_token.as_str());
    assert_eq!(name_of(&app, admin, &p.id).await, Ok("Kikoi towel".into()));
    rename_behind_the_outbox(&app, &p.id, "Draft fixed by hand").await;
    assert_eq!(name_of(&app, admin, &p.id).await, Ok("Draft fixed by hand".into()), "drafts are not cached");

    // Anonymous pages: cached, and a write through the API shows in the next one.
    let q = app.create(product(&seller.id, "Kanga", "accessories", 900)).await;
    applied(&app, "Kanga").await;
    let page = anonymous_page(&app).await;
    assert_eq!(page, ["Kanga"]);
    rename_behind_the_outbox(&app, &q.id, "Kanga fixed by hand").await;
    assert_eq!(anonymous_page(&app).await, ["Kanga"], "served from the page cache");
    app.create(product(&seller.id, "Shuka", "accessories", 700)).await;
    assert_eq!(anonymous_page(&app).await, ["Shuka", "Kanga fixed by hand"]);

    app.catalog.clone().delete_product(pb::DeleteProductRequest { id: q.id.clone() }).await.unwrap();
    assert_eq!(name_of(&app, None, &q.id).await, Err(Code::NotFound));
    assert_eq!(anonymous_page(&app).await, ["Shuka"]);
}

async fn replicas_share_entries_through_redis_and_a_write_on_one_reaches_the_others(backend: Backend) {
    let (redis, prefix) = (shared_redis_url(), format!("soko-test-{}", uuid::Uuid::new_v4().simple()));
    let vars = [("REDIS_URL", redis.as_str()), ("SOKO_REDIS_KEY_PREFIX", prefix.as_str())];
    let a = spawn_app_with(backend, &vars).await;
    let b = spawn_on(&a.database.as_ref().unwrap().url, &vars).await;
    let seller = a.seller("Coast Weavers").await;
    let p = a.create(product(&seller.id, "Kikoi", "accessories", 1500)).await;
    assert_eq!(name_of(&a, None, &p.id).await, Ok("Kikoi".into()));

    // B has never read it; the entry A stored in Redis answers.
    rename_behind_the_outbox(&a, &p.id, "Hand-fixed").await;
    assert_eq!(name_of(&b, None, &p.id).await, Ok("Kikoi".into()), "B read A's entry from Redis");
    let mut conn = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:product:v1:{}", p.id);
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((500_000..=600_000).contains(&ttl_ms), "PTTL of {key}: {ttl_ms}");

    // A write through A: A reads it back at once; B as soon as its follower applies it, and
    // never the old name after that, from its own cache or from Redis.
    update(&a, &p.id, pb::Product { name: "Kikoi towel".into(), ..Default::default() }, &["name"]).await;
    assert_eq!(name_of(&a, None, &p.id).await, Ok("Kikoi towel".into()));
    let started = Instant::now();
    while name_of(&b, None, &p.id).await != Ok("Kikoi towel".into()) {
        assert!(started.elapsed() < Duration::from_secs(5), "B never saw the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(name_of(&b, None, &p.id).await, Ok("Kikoi towel".into()));
        assert_eq!(name_of(&a, None, &p.id).await, Ok("Kikoi towel".into()));
    }
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap_or(());
}
