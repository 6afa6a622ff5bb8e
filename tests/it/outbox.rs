//! Outbox retention (issue 14): compaction deletes what every consumer heard from recently has
//! passed, records how far it went before it deletes, and a replica or a Milvus sync behind that
//! point rebuilds from the tables instead of replaying events that are gone.

use std::{collections::BTreeSet, time::Duration};

use soko::proto::soko::search::v1::{SearchByVectorRequest, search_service_client::SearchServiceClient};
use soko::{outbox, proto::catalog as pb};

use crate::common::{Backend, TestApp, TestDatabase, product, spawn_on};

/// Every id the outbox still holds.
async fn outbox_ids(app: &TestApp) -> Vec<i64> {
    app.db.outbox_after(0, 100_000).await.unwrap().into_iter().map(|e| e.id).collect()
}

/// The products a replica's vector search finds (every test product has the same vector).
async fn found(app: &TestApp) -> Result<BTreeSet<String>, tonic::Status> {
    let request = SearchByVectorRequest { vector: vec![0.5; 8], top_k: 100, ..Default::default() };
    let results = SearchServiceClient::new(app.channel.clone()).search_by_vector(request).await?;
    Ok(results.into_inner().results.into_iter().map(|r| r.product_id).collect())
}

/// `count` products, then `deleted` of them deleted; returns the live ids.
async fn catalog_with_history(app: &TestApp, count: usize, deleted: usize) -> BTreeSet<String> {
    let seller = app.seller("Outbox Seller").await;
    let mut live = BTreeSet::new();
    for i in 0..count {
        live.insert(app.create(product(&seller.id, &format!("Lamp {i}"), "shoes", 100 + i as i64)).await.id);
    }
    let gone: Vec<String> = live.iter().take(deleted).cloned().collect();
    for id in gone {
        app.catalog.clone().delete_product(pb::DeleteProductRequest { id: id.clone() }).await.unwrap();
        live.remove(&id);
    }
    live
}

async fn compaction_keeps_what_consumers_need(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app = spawn_on(&database.url, &[]).await;
    catalog_with_history(&app, 12, 2).await;
    let ids = outbox_ids(&app).await;
    let head = *ids.last().unwrap();

    // Young events stay, whatever the consumers have passed.
    assert_eq!(outbox::compact(&app.db, Duration::from_secs(3600), "test").await.unwrap().0, 0);
    assert_eq!(outbox::compacted_through(&app.db).await.unwrap(), 0);

    // With a retention of a second, the events are old enough a second from now; a consumer
    // heard from within that second holds back everything past its watermark.
    let keep = Duration::from_secs(1);
    tokio::time::sleep(keep + Duration::from_millis(100)).await;
    let behind = ids[4];
    app.db.set_consumer_watermark("search:test", behind).await.unwrap();
    let (deleted, through) = outbox::compact(&app.db, keep, "test").await.unwrap();
    assert_eq!((deleted, through), (5, behind));
    assert_eq!(outbox::compacted_through(&app.db).await.unwrap(), behind, "the point is recorded");
    assert_eq!(outbox_ids(&app).await, ids[5..], "only what the consumer passed went");

    // Once it is past the head, all but the newest event go: the head tells new replicas where
    // the outbox stands.
    app.db.set_consumer_watermark("search:test", head).await.unwrap();
    let (deleted, through) = outbox::compact(&app.db, keep, "test").await.unwrap();
    assert_eq!((deleted, through), (ids.len() - 6, head - 1));
    assert_eq!(outbox_ids(&app).await, [head]);
    // Nothing left to do is not an error, and the point never goes back.
    assert_eq!(outbox::compact(&app.db, keep, "test").await.unwrap(), (0, head - 1));

    // A consumer not heard from within the retention holds nothing back.
    app.db.set_consumer_watermark("search:gone", 0).await.unwrap();
    tokio::time::sleep(keep + Duration::from_millis(100)).await;
    let seller = app.seller("Later Seller").await;
    app.create(product(&seller.id, "Later lamp", "shoes", 1)).await;
    tokio::time::sleep(keep + Duration::from_millis(100)).await;
    app.db.set_consumer_watermark("search:test", head + 1).await.unwrap();
    assert_eq!(outbox::compact(&app.db, keep, "test").await.unwrap(), (1, head));
    app.stop().await.expect("clean stop");
}

async fn a_replica_behind_the_compaction_point_rebuilds_from_the_products_table(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let first = spawn_on(&database.url, &[]).await;
    let live = catalog_with_history(&first, 15, 3).await;
    let (deleted, _) = outbox::compact(&first.db, Duration::ZERO, "test").await.unwrap();
    assert!(deleted >= 17, "{deleted} events compacted");
    first.stop().await.expect("clean stop");

    // A new replica: no snapshot, and an outbox that holds one event of the 18 written.
    let second = spawn_on(&database.url, &[]).await;
    let started = std::time::Instant::now();
    loop {
        // Search answers once the rebuild is in; every live product, none of the deleted ones.
        // UNAVAILABLE ("still loading") until the rebuild is in.
        let now = match found(&second).await {
            Ok(now) if now == live => break,
            Ok(now) => Some(now),
            Err(status) if status.code() == tonic::Code::Unavailable => None,
            Err(status) => panic!("{status:?}"),
        };
        assert!(started.elapsed() < Duration::from_secs(10), "the new replica's index holds {now:?}, not {live:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It follows the outbox on from there.
    let seller = second.seller("Late Seller").await;
    let late = second.create(product(&seller.id, "Late lamp", "shoes", 5)).await;
    let started = std::time::Instant::now();
    while !found(&second).await.unwrap().contains(&late.id) {
        assert!(started.elapsed() < Duration::from_secs(10), "a write after the rebuild was not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await.expect("clean stop");
}

/// The scheduled job: with a retention of one second, a running server compacts by itself.
async fn the_server_compacts_on_schedule(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let app =
        spawn_on(&database.url, &[("SOKO_OUTBOX_RETENTION_SECS", "1"), ("SOKO_OUTBOX_COMPACT_INTERVAL_SECS", "1")])
            .await;
    let live = catalog_with_history(&app, 6, 1).await;
    let started = std::time::Instant::now();
    while outbox_ids(&app).await.len() > 1 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the outbox was not compacted: {:?}",
            outbox_ids(&app).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(outbox::compacted_through(&app.db).await.unwrap() > 0);
    // The replica that compacted is past the point already: its index is whole.
    assert_eq!(found(&app).await.unwrap(), live);
    app.stop().await.expect("clean stop");
}

/// A replica that keeps snapshots tells compaction where its snapshot stands, so a restart can
/// replay from it.
async fn a_replica_with_snapshots_reports_its_position(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let dir = std::env::temp_dir().join(format!("soko_snap_{}", uuid::Uuid::new_v4().simple()));
    let app =
        spawn_on(&database.url, &[("SOKO_SNAPSHOT_INTERVAL_SECS", "1"), ("SOKO_SNAPSHOT_DIR", dir.to_str().unwrap())])
            .await;
    catalog_with_history(&app, 3, 0).await;
    let head = *outbox_ids(&app).await.last().unwrap();
    let started = std::time::Instant::now();
    loop {
        let reported = app.db.lowest_consumer_watermark(0).await.unwrap();
        if reported == Some(head) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the snapshot's position was not reported: {reported:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.expect("clean stop");
    let _ = std::fs::remove_dir_all(dir);
}

backend_tests!(
    a_replica_with_snapshots_reports_its_position,
    compaction_keeps_what_consumers_need,
    a_replica_behind_the_compaction_point_rebuilds_from_the_products_table,
    the_server_compacts_on_schedule,
);
