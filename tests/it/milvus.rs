//! Milvus kept in step with the catalog through the outbox (issue 14), against the real Milvus
//! that scripts/test runs for the whole suite (`SOKO_TEST_MILVUS_ADDRESS`). Each test has a
//! collection of its own.

use std::time::{Duration, Instant};

use soko::{
    milvus::{IndexKind, Milvus, MilvusConfig, Row},
    proto::catalog as pb,
    vector::distance::Metric,
};

use soko::proto::{
    catalog::catalog_service_client::CatalogServiceClient,
    soko::auth::v1 as auth_pb,
    soko::auth::v1::auth_service_client::AuthServiceClient,
    soko::search::v1::{SearchByVectorRequest, search_service_client::SearchServiceClient},
};

use crate::common::{
    Backend, Bearer, TestDatabase, process::SokoProcess, product, spawn_app_with, spawn_on, tool_ready,
};

/// The suite's Milvus, or `None` (a skip outside CI, a failure in it) when there is none.
pub(crate) fn milvus_address() -> Option<String> {
    let address = std::env::var("SOKO_TEST_MILVUS_ADDRESS").ok();
    tool_ready(address.is_some(), "Milvus (scripts/test starts one and sets SOKO_TEST_MILVUS_ADDRESS)")
        .then(|| address.unwrap())
}

pub(crate) fn collection_name() -> String {
    format!("soko_t_{}", uuid::Uuid::new_v4().simple())
}

/// A client of our own for the test's collection, to look at Milvus behind Soko's back.
pub(crate) fn milvus_client(address: &str, collection: &str, dim: usize) -> Milvus {
    Milvus::new(MilvusConfig {
        address: format!("http://{address}"),
        username: None,
        password: None,
        timeout: Duration::from_secs(10),
        collection: collection.into(),
        index: IndexKind::Hnsw { m: 16, ef_construction: 64 },
        dim,
        metric: Metric::Cosine,
        route_search: false,
        ef_search: 64,
        nprobe: 16,
        reconcile_every: None,
    })
    .expect("a Milvus client")
}

/// Every entity in the collection, by id.
async fn entities(milvus: &Milvus) -> std::collections::BTreeMap<String, Row> {
    milvus
        .query("id != \"\"", soko::milvus::schema::ALL_FIELDS)
        .await
        .expect("query")
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

/// Waits up to `within` for `done` to hold of the collection's entities.
async fn until(
    milvus: &Milvus,
    within: Duration,
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, Row>) -> bool,
) -> std::collections::BTreeMap<String, Row> {
    let started = Instant::now();
    loop {
        let now = entities(milvus).await;
        if done(&now) {
            return now;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}; Milvus holds {} entities", now.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A distinct unit-ish vector per product, so upserts are not all the same point.
fn embedding(i: usize) -> Vec<f32> {
    (0..8).map(|d| ((i * 7 + d * 13) % 17) as f32 + 1.0).collect()
}

async fn products_written_through_the_api_reach_milvus(backend: Backend) {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let milvus_env = [("MILVUS_ADDRESS", address.as_str()), ("SOKO_MILVUS_COLLECTION", collection.as_str())];
    let app = spawn_app_with(backend, &milvus_env).await;
    let milvus = milvus_client(&address, &collection, 8);
    let seller = app.seller("Milvus Seller").await;

    // 1,000 products through the API, eight writers at a time; every tenth a draft.
    const COUNT: usize = 1_000;
    let mut created: Vec<pb::Product> = Vec::with_capacity(COUNT);
    let mut writes = futures_util::stream::iter((0..COUNT).map(|i| {
        let mut p =
            product(&seller.id, &format!("Item {i}"), if i % 2 == 0 { "shoes" } else { "dresses" }, 100 + i as i64);
        p.embedding = embedding(i);
        if i % 10 == 0 {
            p.status = pb::ProductStatus::Draft.into();
        }
        let app = &app;
        async move { app.create(p).await }
    }))
    .buffer_unordered(8);
    use futures_util::StreamExt as _;
    while let Some(p) = writes.next().await {
        created.push(p);
    }
    drop(writes);

    let synced = until(&milvus, Duration::from_secs(120), "1,000 products in Milvus", |e| e.len() == COUNT).await;
    for p in &created {
        let row = &synced[&p.id];
        let price = p.price.as_ref().unwrap();
        assert_eq!(
            (row.category.as_str(), row.seller.as_str(), row.price_minor, row.currency.as_str()),
            (p.category_id.as_str(), seller.id.as_str(), price.amount_minor, price.currency_code.as_str()),
            "scalar fields of {}",
            p.id
        );
        let status = if p.status == i32::from(pb::ProductStatus::Draft) { "draft" } else { "active" };
        assert_eq!(row.status, status);
        assert_eq!(row.embedding, p.embedding, "the vector of {}", p.id);
    }

    // An update, a delete, and an embedding taken away all propagate.
    let mut client = app.catalog.clone();
    let (updated, deleted, unembedded) = (&created[1], &created[2], &created[3]);
    client
        .update_product(pb::UpdateProductRequest {
            product: Some(pb::Product {
                id: updated.id.clone(),
                price: Some(pb::Money { amount_minor: 99_999, currency_code: "UGX".into() }),
                category_id: "furniture".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["price".into(), "category_id".into()] }),
        })
        .await
        .expect("update");
    client.delete_product(pb::DeleteProductRequest { id: deleted.id.clone() }).await.expect("delete");
    client
        .update_product(pb::UpdateProductRequest {
            product: Some(pb::Product { id: unembedded.id.clone(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["embedding".into()] }),
        })
        .await
        .expect("remove the embedding");
    let after = until(&milvus, Duration::from_secs(60), "the update and deletes in Milvus", |e| {
        e.len() == COUNT - 2 && e.get(&updated.id).is_some_and(|r| r.price_minor == 99_999)
    })
    .await;
    let row = &after[&updated.id];
    assert_eq!((row.category.as_str(), row.currency.as_str()), ("furniture", "UGX"));
    assert!(!after.contains_key(&deleted.id) && !after.contains_key(&unembedded.id));

    // Replaying the whole outbox changes nothing: a new server continues from a zeroed watermark.
    let url = app.database.as_ref().unwrap().url.clone();
    let database = {
        let mut app = app;
        let database = app.database.take();
        app.stop().await.expect("clean stop");
        database.unwrap()
    };
    let head = outbox_head(&database).await;
    database.execute("UPDATE outbox_consumers SET watermark = 0").await;
    let replayed = spawn_on(&url, &milvus_env).await;
    let started = Instant::now();
    while replayed.db.consumer_watermark(soko::milvus::CONSUMER).await.unwrap() < head {
        assert!(started.elapsed() < Duration::from_secs(60), "the replay did not reach the outbox head");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(entities(&milvus).await, after, "a replay from zero left Milvus as it was");
    replayed.stop().await.expect("clean stop");
    milvus.drop_collection().await.expect("drop the test collection");
}

async fn outbox_head(database: &TestDatabase) -> i64 {
    let db = soko::store::Db::connect(
        &soko::configuration::DatabaseUrl::parse(&database.url).unwrap(),
        &soko::store::PoolSettings { max_size: 1, checkout_timeout: Duration::from_secs(5) },
    )
    .unwrap();
    db.outbox_lag(0).await.unwrap().0
}

/// Milvus was off while the catalog changed, and compaction deleted those events: the sync
/// cannot replay them, so it reconciles, and Milvus ends up holding exactly the live products.
async fn a_sync_behind_the_compaction_point_reconciles(backend: Backend) {
    let Some(address) = milvus_address() else { return };
    let database = TestDatabase::create(backend).await;
    let first = spawn_on(&database.url, &[]).await;
    let seller = first.seller("Compacted Seller").await;
    let mut live = std::collections::BTreeSet::new();
    for i in 0..10 {
        let mut p = product(&seller.id, &format!("Compacted {i}"), "shoes", 100 + i as i64);
        p.embedding = embedding(i);
        live.insert(first.create(p).await.id);
    }
    let gone: Vec<String> = live.iter().take(2).cloned().collect();
    for id in &gone {
        first.catalog.clone().delete_product(pb::DeleteProductRequest { id: id.clone() }).await.unwrap();
        live.remove(id);
    }
    let (deleted, _) = soko::outbox::compact(&first.db, Duration::ZERO, "test").await.unwrap();
    assert_eq!(deleted, 11, "all but the newest of 12 events");
    first.stop().await.expect("clean stop");

    let collection = collection_name();
    let env = [("MILVUS_ADDRESS", address.as_str()), ("SOKO_MILVUS_COLLECTION", collection.as_str())];
    let second = spawn_on(&database.url, &env).await;
    let milvus = milvus_client(&address, &collection, 8);
    until(&milvus, Duration::from_secs(60), "the live products, by reconciliation", |e| {
        e.keys().cloned().collect::<std::collections::BTreeSet<_>>() == live
    })
    .await;
    second.stop().await.expect("clean stop");
    milvus.drop_collection().await.expect("drop the test collection");
}

backend_tests!(
    products_written_through_the_api_reach_milvus,
    writes_survive_milvus_going_away,
    a_sync_behind_the_compaction_point_reconciles,
);

/// A collection made for one dimension stops a server configured for another, and says both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_of_another_dimension_stops_start_up() {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let milvus = milvus_client(&address, &collection, 8);
    milvus.ensure_collection().await.expect("an 8-dimensional collection");
    let database = TestDatabase::create(Backend::Sqlite).await;
    let config = crate::common::test_config(
        &database.url,
        &[
            ("MILVUS_ADDRESS", address.as_str()),
            ("SOKO_MILVUS_COLLECTION", collection.as_str()),
            ("SOKO_EMBEDDING_DIM", "16"),
        ],
    );
    let error = match soko::startup::Application::build(config).await {
        Ok(_) => panic!("a server started on a collection of the wrong dimension"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("dimension 8") && error.contains("SOKO_EMBEDDING_DIM is 16"), "{error}");
    milvus.drop_collection().await.expect("drop the test collection");
}

/// Two servers on one database: one syncs. Killed (no goodbye, its lease left to expire), the
/// other takes over within the lease time and syncs what was written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_takes_the_sync_over_when_the_first_dies() {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let milvus = milvus_client(&address, &collection, 8);
    let database = TestDatabase::create(Backend::Sqlite).await;
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("MILVUS_ADDRESS", address.as_str()),
        ("SOKO_MILVUS_COLLECTION", collection.as_str()),
        ("SOKO_SNAPSHOT_INTERVAL_SECS", "0"),
    ];
    let first = SokoProcess::start(&env).await;
    let second = SokoProcess::start(&env).await;
    let holder =
        |process: &SokoProcess| process.lines().iter().any(|l| l["message"] == "this replica now syncs Milvus");
    let started = Instant::now();
    while !holder(&first) && !holder(&second) {
        assert!(started.elapsed() < Duration::from_secs(20), "neither server took the sync lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!(holder(&first) && holder(&second)), "both servers sync at once");
    let (dying, survivor) = if holder(&first) { (first, second) } else { (second, first) };
    // Dropped is killed: SIGKILL, so the lease is left to expire.
    drop(dying);

    // A product written through the survivor while nobody holds a live lease.
    let channel = survivor.channel().await;
    let (email, password) = ("takeover@soko.test", "a long passphrase for the takeover");
    AuthServiceClient::new(channel.clone())
        .register(auth_pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            role: auth_pb::Role::Seller.into(),
        })
        .await
        .expect("register");
    let token = crate::common::login(&channel, email, password).await.access_token;
    let mut catalog = CatalogServiceClient::with_interceptor(channel, Bearer::new(Some(&token)));
    let seller = catalog
        .create_seller(pb::CreateSellerRequest { display_name: "Takeover Seller".into() })
        .await
        .expect("create seller")
        .into_inner()
        .seller
        .expect("a seller");
    let written = catalog
        .create_product(pb::CreateProductRequest {
            product: Some(product(&seller.id, "Written during the takeover", "shoes", 700)),
        })
        .await
        .expect("create product")
        .into_inner()
        .product
        .expect("a product");
    let killed_at = Instant::now();
    until(&milvus, soko::milvus::LEASE_TTL + Duration::from_secs(20), "the survivor's sync", |e| {
        e.contains_key(&written.id)
    })
    .await;
    assert!(holder(&survivor), "the survivor took the lease");
    assert!(
        killed_at.elapsed() < soko::milvus::LEASE_TTL + Duration::from_secs(10),
        "taken over in {:?}",
        killed_at.elapsed()
    );
    milvus.drop_collection().await.expect("drop the test collection");
}

async fn readiness(app: &crate::common::TestApp) -> (u16, serde_json::Value) {
    let response = crate::common::http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    (response.status, serde_json::from_slice(&response.body).expect("JSON readiness"))
}

/// Milvus unreachable mid-sync (a proxy in front of the suite's Milvus cut, as a stopped server
/// would be): writes keep succeeding, routed searches answer from the local index, the replica
/// stays ready with Milvus reported degraded,
/// GetSyncStatus says FAILING with the backlog; back up, the backlog drains and Milvus matches
/// the database id for id.
async fn writes_survive_milvus_going_away(backend: Backend) {
    let Some(address) = milvus_address() else { return };
    let proxy = crate::common::proxy::Proxy::start(address.parse().expect("host:port")).await;
    let collection = collection_name();
    let proxied = proxy.addr.to_string();
    let app = spawn_app_with(
        backend,
        &[
            ("MILVUS_ADDRESS", proxied.as_str()),
            ("SOKO_MILVUS_COLLECTION", collection.as_str()),
            ("MILVUS_TIMEOUT", "2"),
            ("SOKO_VECTOR_BACKEND", "milvus"),
        ],
    )
    .await;
    let milvus = milvus_client(&address, &collection, 8);
    let seller = app.seller("Outage Seller").await;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..20 {
        let mut p = product(&seller.id, &format!("Before {i}"), "shoes", 100 + i);
        p.embedding = embedding(i as usize);
        ids.insert(app.create(p).await.id);
    }
    until(&milvus, Duration::from_secs(60), "the first products", |e| e.len() == ids.len()).await;

    proxy.down().await;
    let mut client = app.catalog.clone();
    let gone = ids.pop_first().unwrap();
    client.delete_product(pb::DeleteProductRequest { id: gone.clone() }).await.expect("a delete while Milvus is away");
    for i in 0..30 {
        let mut p = product(&seller.id, &format!("During {i}"), "dresses", 500 + i);
        p.embedding = embedding(100 + i as usize);
        ids.insert(app.create(p).await.id);
    }
    let started = Instant::now();
    loop {
        let (status, body) = readiness(&app).await;
        assert_eq!(status, 200, "a Milvus outage never makes the replica unready: {body}");
        if body["checks"]["milvus"]["degraded"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "Milvus never reported degraded: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut admin = app.admin_as(Some(&app.admin_token));
    let sync = admin
        .get_sync_status(soko::proto::soko::admin::v1::GetSyncStatusRequest {})
        .await
        .expect("sync status")
        .into_inner()
        .milvus
        .expect("milvus status");
    assert_eq!(sync.state, soko::proto::soko::admin::v1::SyncState::Failing as i32, "{sync:?}");
    assert!(!sync.last_error.is_empty(), "{sync:?}");
    // Searches routed to Milvus fall back to the local index, which has the new products too.
    let during = nearest_ids(&app, &embedding(100), None).await;
    assert_eq!(during.len(), 10, "search keeps answering while Milvus is away");

    proxy.up();
    let healed = until(&milvus, Duration::from_secs(90), "the backlog drained", |e| {
        e.len() == ids.len() && !e.contains_key(&gone)
    })
    .await;
    assert_eq!(healed.keys().cloned().collect::<std::collections::BTreeSet<_>>(), ids, "Milvus matches the database");
    let started = Instant::now();
    while readiness(&app).await.1["checks"]["milvus"]["degraded"] != false {
        assert!(started.elapsed() < Duration::from_secs(30), "Milvus still degraded after recovering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await.expect("clean stop");
    milvus.drop_collection().await.expect("drop the test collection");
}

fn search_client(app: &crate::common::TestApp) -> SearchServiceClient<tonic::transport::Channel> {
    SearchServiceClient::new(app.channel.clone())
}

async fn nearest_ids(app: &crate::common::TestApp, vector: &[f32], filter: Option<pb::ProductFilter>) -> Vec<String> {
    search_client(app)
        .search_by_vector(SearchByVectorRequest { vector: vector.to_vec(), top_k: 10, filter, read_mask: None })
        .await
        .expect("search by vector")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.product_id)
        .collect()
}

/// A pseudo-random vector of the test dimension (a small LCG: no dependency, same every run).
fn random_vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..8)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

/// Vector search routed to Milvus (`SOKO_VECTOR_BACKEND=milvus`) answers what the local index
/// answers on the same data (top-10 overlap measured over 30 queries), applies filters, never
/// returns a product deleted just before, and refuses bad input the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_search_agrees_with_the_local_index_and_never_leaks_a_delete() {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let routed = spawn_app_with(
        Backend::Sqlite,
        &[
            ("MILVUS_ADDRESS", address.as_str()),
            ("SOKO_MILVUS_COLLECTION", collection.as_str()),
            ("SOKO_VECTOR_BACKEND", "milvus"),
        ],
    )
    .await;
    // The same database, searched in-process: the reference.
    let local = spawn_on(&routed.database.as_ref().unwrap().url, &[]).await;
    let milvus = milvus_client(&address, &collection, 8);
    let seller = routed.seller("Routed Seller").await;
    let mut products = Vec::new();
    for i in 0..300u64 {
        let mut p = product(&seller.id, &format!("Routed {i}"), if i % 3 == 0 { "jewelry" } else { "shoes" }, 100);
        p.embedding = random_vector(i);
        products.push(routed.create(p).await);
    }
    until(&milvus, Duration::from_secs(60), "300 products in Milvus", |e| e.len() == products.len()).await;
    let started = Instant::now();
    while local.db.count_products().await.unwrap() != 300
        || nearest_ids(&local, &random_vector(0), None).await.is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the local index did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut overlap = 0usize;
    for q in 0..30u64 {
        let query = random_vector(10_000 + q);
        let (a, b) = (nearest_ids(&routed, &query, None).await, nearest_ids(&local, &query, None).await);
        assert_eq!(a.len(), 10);
        overlap += a.iter().filter(|id| b.contains(id)).count();
    }
    let agreement = overlap as f64 / 300.0;
    eprintln!("routed vs local top-10 overlap over 30 queries: {agreement:.3}");
    assert!(agreement >= 0.95, "Milvus and the local index agree on {agreement:.3} of the top 10");

    // A filter is applied in Milvus, and its results are what it says.
    let jewelry = pb::ProductFilter { category_id: "jewelry".into(), ..Default::default() };
    let hits = nearest_ids(&routed, &random_vector(7), Some(jewelry)).await;
    assert_eq!(hits.len(), 10);
    let jewels: std::collections::BTreeSet<&str> =
        products.iter().filter(|p| p.category_id == "jewelry").map(|p| p.id.as_str()).collect();
    assert!(hits.iter().all(|id| jewels.contains(id.as_str())), "{hits:?}");

    // Deleted, then searched for at once by its own vector: never returned, whether or not
    // Milvus has heard of the delete yet.
    let mut catalog = routed.catalog.clone();
    for p in products.iter().take(15) {
        catalog.delete_product(pb::DeleteProductRequest { id: p.id.clone() }).await.expect("delete");
        let hits = nearest_ids(&routed, &p.embedding, None).await;
        assert!(!hits.contains(&p.id), "a deleted product came back from Milvus");
    }

    // Bad input: the field violation, not a Milvus error string.
    let status = search_client(&routed)
        .search_by_vector(SearchByVectorRequest { vector: vec![1.0; 3], top_k: 10, filter: None, read_mask: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(crate::common::violated_fields(&status), ["vector"]);
    local.stop().await.expect("clean stop");
    routed.stop().await.expect("clean stop");
    milvus.drop_collection().await.expect("drop the test collection");
}

/// Drift planted in Milvus behind Soko's back: an entity of no product, products' entities
/// deleted, one changed. Returns the ids whose entities were deleted or changed.
async fn plant_drift(milvus: &Milvus, synced: &std::collections::BTreeMap<String, Row>) -> String {
    let stranger = uuid::Uuid::new_v4().to_string();
    let mut planted =
        Row { id: stranger.clone(), embedding: embedding(999), ..synced.values().next().unwrap().clone() };
    planted.status = "active".into();
    let mut changed = synced.values().nth(1).unwrap().clone();
    changed.price_minor = 1;
    milvus.upsert(&[planted, changed]).await.expect("plant");
    let deleted: Vec<String> = synced.keys().skip(2).take(3).cloned().collect();
    milvus.delete(&deleted).await.expect("delete behind Soko's back");
    stranger
}

/// AdminService Reindex(MILVUS) has the syncing replica repair drift both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_milvus_repairs_drift_planted_behind_sokos_back() {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("MILVUS_ADDRESS", address.as_str()), ("SOKO_MILVUS_COLLECTION", collection.as_str())],
    )
    .await;
    let milvus = milvus_client(&address, &collection, 8);
    let seller = app.seller("Drift Seller").await;
    for i in 0..12 {
        let mut p = product(&seller.id, &format!("Drift {i}"), "shoes", 100 + i);
        p.embedding = embedding(i as usize);
        app.create(p).await;
    }
    let synced = until(&milvus, Duration::from_secs(60), "12 products", |e| e.len() == 12).await;
    let stranger = plant_drift(&milvus, &synced).await;
    assert_ne!(entities(&milvus).await, synced, "the drift is there");

    let mut admin = app.admin_as(Some(&app.admin_token));
    admin
        .reindex(soko::proto::soko::admin::v1::ReindexRequest {
            target: soko::proto::soko::admin::v1::ReindexTarget::Milvus.into(),
            reason: "drift test".into(),
        })
        .await
        .expect("reindex milvus");
    let repaired = until(&milvus, Duration::from_secs(30), "the drift repaired", |e| e == &synced).await;
    assert!(!repaired.contains_key(&stranger));
    let status = admin
        .get_sync_status(soko::proto::soko::admin::v1::GetSyncStatusRequest {})
        .await
        .expect("sync status")
        .into_inner()
        .milvus
        .expect("milvus");
    assert!(status.last_reconcile_time.is_some(), "{status:?}");
    assert_eq!(status.vector_count, 12);
    app.stop().await.expect("clean stop");
    milvus.drop_collection().await.expect("drop the test collection");
}

/// `soko milvus reconcile` with no server running does the repair itself and prints what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_command_repairs_drift_when_no_server_runs() {
    let Some(address) = milvus_address() else { return };
    let collection = collection_name();
    let database = TestDatabase::create(Backend::Sqlite).await;
    let env = [("MILVUS_ADDRESS", address.as_str()), ("SOKO_MILVUS_COLLECTION", collection.as_str())];
    let app = spawn_on(&database.url, &env).await;
    let milvus = milvus_client(&address, &collection, 8);
    let seller = app.seller("Command Seller").await;
    for i in 0..6 {
        let mut p = product(&seller.id, &format!("Command {i}"), "shoes", 100 + i);
        p.embedding = embedding(i as usize);
        app.create(p).await;
    }
    let synced = until(&milvus, Duration::from_secs(60), "6 products", |e| e.len() == 6).await;
    app.stop().await.expect("clean stop");
    plant_drift(&milvus, &synced).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["milvus", "reconcile"])
        .env_clear()
        .env("DATABASE_URL", &database.url)
        .env("SOKO_EMBEDDING_DIM", "8")
        .env("RUST_LOG", "off")
        .envs(env)
        .output()
        .expect("soko runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.trim(),
        "checked=6 upserted=4 deleted=1",
        "three missing and one changed written, one stranger gone"
    );
    assert_eq!(entities(&milvus).await, synced);
    milvus.drop_collection().await.expect("drop the test collection");
}
