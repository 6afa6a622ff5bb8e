//! Vector index snapshots across restarts: shutdown writes one, start-up loads it and replays
//! only the outbox past its watermark, and a damaged snapshot means a rebuild — on SQLite,
//! PostgreSQL and MariaDB.

use crate::common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{Backend, TestApp, TestDatabase, product, spawn_on};
use soko::proto::{
    catalog as pb,
    soko::search::v1::{SearchByVectorRequest, search_service_client::SearchServiceClient},
};

backend_tests!(a_restart_loads_the_snapshot_and_replays_only_what_came_after, a_damaged_snapshot_means_a_rebuild);

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.05; 8];
    v[i] = 1.0;
    v
}

fn snapshot_dir() -> PathBuf {
    std::env::temp_dir().join(format!("soko-snapshot-test-{}", uuid::Uuid::new_v4()))
}

fn with_snapshots(dir: &Path) -> [(&'static str, String); 2] {
    [("SOKO_SNAPSHOT_INTERVAL_SECS", "3600".into()), ("SOKO_SNAPSHOT_DIR", dir.display().to_string())]
}

async fn start(database: &TestDatabase, overrides: &[(&'static str, String)]) -> TestApp {
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_on(&database.url, &overrides).await
}

/// Product ids nearest to `axis(i)`, retried until `accept` holds (the index may still be
/// loading), for at most 10 s.
async fn nearest_until(app: &TestApp, i: usize, accept: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    loop {
        let request = SearchByVectorRequest { vector: axis(i), top_k: 10, ..Default::default() };
        let ids: Vec<String> = match client.search_by_vector(request).await {
            Ok(r) => r.into_inner().results.into_iter().map(|r| r.product_id).collect(),
            Err(_) => vec![],
        };
        if accept(&ids) {
            return ids;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the index never showed the expected products: {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_on_axes(app: &TestApp, seller: &str, axes: &[usize]) -> Vec<String> {
    let mut ids = Vec::new();
    for &i in axes {
        let mut p = product(seller, &format!("Axis {i}"), "shoes", 100);
        p.embedding = axis(i);
        ids.push(app.create(p).await.id);
    }
    ids
}

async fn a_restart_loads_the_snapshot_and_replays_only_what_came_after(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let dir = snapshot_dir();
    let first = start(&database, &with_snapshots(&dir)).await;
    let seller = first.seller("Snapshotted").await.id;
    let old = create_on_axes(&first, &seller, &[0, 1, 2]).await;
    nearest_until(&first, 0, |ids| ids.len() == 3).await;
    first.stop().await.expect("clean shutdown");
    assert!(dir.join("CURRENT").exists(), "shutdown wrote a snapshot");

    // While it is down, another replica (without snapshots) adds one product and deletes one.
    let other = start(&database, &[]).await;
    let new = create_on_axes(&other, &seller, &[3]).await;
    other.catalog.clone().delete_product(pb::DeleteProductRequest { id: old[0].clone() }).await.unwrap();
    other.stop().await.expect("clean shutdown");
    // Forget the old products' outbox events: only the snapshot still knows their vectors, so
    // finding them proves the restart loaded it instead of replaying the outbox from the start.
    database.execute(&format!("DELETE FROM outbox WHERE product_id IN ('{}', '{}')", old[1], old[2])).await;

    let restarted = start(&database, &with_snapshots(&dir)).await;
    let ids = nearest_until(&restarted, 3, |ids| ids.len() == 3).await;
    assert_eq!(ids[0], new[0], "the write made after the snapshot was replayed");
    assert!(ids.contains(&old[1]) && ids.contains(&old[2]), "the snapshot's products are back: {ids:?}");
    assert!(!ids.contains(&old[0]), "the delete made after the snapshot was replayed");
    // Text search works too: its index was loaded from the products table.
    let mut client = SearchServiceClient::new(restarted.channel.clone());
    let request = soko::proto::soko::search::v1::SearchProductsRequest { query: "axis".into(), ..Default::default() };
    let found = client.search_products(request).await.unwrap().into_inner().results;
    assert_eq!(found.len(), 3);
    restarted.stop().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

async fn a_damaged_snapshot_means_a_rebuild(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let dir = snapshot_dir();
    let first = start(&database, &with_snapshots(&dir)).await;
    let seller = first.seller("Damaged").await.id;
    let ids = create_on_axes(&first, &seller, &[0, 1]).await;
    nearest_until(&first, 0, |found| found.len() == 2).await;
    first.stop().await.expect("clean shutdown");

    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let vectors = dir.join(current.trim()).join("vectors.f16");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&vectors, bytes).unwrap();

    let restarted = start(&database, &with_snapshots(&dir)).await;
    let found = nearest_until(&restarted, 1, |found| found.len() == 2).await;
    assert_eq!(found[0], ids[1], "rebuilt from the outbox, with the right answers");
    restarted.stop().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(dir);
}
