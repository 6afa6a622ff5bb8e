//! The operator's switches (issue 16): read-only mode across replicas that share one database and
//! across a restart, and a search-index rebuild from the database that search never pauses for,
//! with its sync status. On every SQL backend.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, product, spawn_app, spawn_on, until_writable, violated_fields};
use soko::proto::{
    catalog as pb,
    soko::{
        admin::v1::{self as admin_pb},
        auth::v1 as auth_pb,
        search::v1::{SearchProductsRequest, search_service_client::SearchServiceClient},
    },
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

backend_tests!(
    read_only_mode_reaches_every_replica_refuses_only_writes_and_survives_a_restart,
    reindex_rebuilds_from_the_database_on_every_replica_and_loses_no_write,
);

fn assert_read_only(result: Result<impl std::fmt::Debug, Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("{what}: no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, "READ_ONLY_MODE", "{what}");
    assert!(!status.message().contains("panicked") && status.message().contains("read-only"), "{what}: {status:?}");
}

async fn set_read_only(app: &TestApp, enabled: bool, reason: &str) -> admin_pb::ReadOnlyMode {
    app.admin_as(Some(&app.admin_token))
        .set_read_only_mode(admin_pb::SetReadOnlyModeRequest { enabled, reason: reason.into() })
        .await
        .expect("set read-only mode")
        .into_inner()
        .read_only_mode
        .expect("state")
}

async fn read_only_mode_reaches_every_replica_refuses_only_writes_and_survives_a_restart(backend: Backend) {
    let a = spawn_app(backend).await;
    let url = a.database.as_ref().unwrap().url.clone();
    let b = spawn_on(&url, &[]).await;
    let seller = a.seller("Before").await.id;
    let existing = a.create(product(&seller, "Kept readable", "shoes", 100)).await;
    let mut admin_a = a.admin_as(Some(&a.admin_token));

    let before = admin_a.get_read_only_mode(admin_pb::GetReadOnlyModeRequest {}).await.unwrap().into_inner();
    let before = before.read_only_mode.unwrap();
    assert!(!before.enabled && !before.effective && before.update_time.is_none(), "{before:?}");

    let too_long = admin_a
        .set_read_only_mode(admin_pb::SetReadOnlyModeRequest { enabled: true, reason: "x".repeat(501) })
        .await
        .expect_err("a reason over 500 characters");
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&too_long), ["reason"]);

    let admin_id = admin_a
        .list_users(admin_pb::ListUsersRequest { email: common::ADMIN_EMAIL.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .users[0]
        .id
        .clone();
    let key = admin_a
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: admin_id,
            display_name: "leaks later".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();

    let state = set_read_only(&a, true, "database maintenance").await;
    assert!(state.enabled && state.effective, "{state:?}");
    assert_eq!(state.reason, "database maintenance");
    assert!(state.update_principal.starts_with("user:") && state.update_time.is_some(), "{state:?}");

    // The replica that flipped the switch refuses writes at once.
    assert_read_only(
        a.catalog
            .clone()
            .create_product(pb::CreateProductRequest { product: Some(product(&seller, "No", "x", 1)) })
            .await,
        "CreateProduct on A",
    );
    // The other one within a poll.
    let took = until_writable(&b, &seller, false, Duration::from_secs(1)).await;
    eprintln!("read-only mode reached replica B in {took:?}");
    for app in [&a, &b] {
        let mut catalog = app.catalog.clone();
        assert_read_only(
            catalog
                .update_product(pb::UpdateProductRequest {
                    product: Some(pb::Product {
                        id: existing.id.clone(),
                        name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
                })
                .await,
            "UpdateProduct",
        );
        assert_read_only(catalog.delete_product(pb::DeleteProductRequest { id: existing.id.clone() }).await, "Delete");
        assert_read_only(
            app.auth()
                .register(auth_pb::RegisterRequest {
                    email: "late@example.com".into(),
                    password: "password-123".into(),
                    role: auth_pb::Role::Buyer.into(),
                })
                .await,
            "Register",
        );
        assert_read_only(
            app.admin_as(Some(&app.admin_token))
                .create_api_key(admin_pb::CreateApiKeyRequest {
                    user_id: state.update_principal.trim_start_matches("user:").into(),
                    display_name: "late".into(),
                    ..Default::default()
                })
                .await,
            "CreateApiKey",
        );
        // Reads go on.
        let got = catalog.get_product(pb::GetProductRequest { id: existing.id.clone(), ..Default::default() }).await;
        assert_eq!(got.expect("GetProduct in read-only mode").into_inner().product.unwrap().name, "Kept readable");
        catalog.list_products(pb::ListProductsRequest::default()).await.expect("ListProducts in read-only mode");
        SearchServiceClient::new(app.channel.clone())
            .search_products(SearchProductsRequest { query: "readable".into(), ..Default::default() })
            .await
            .expect("search in read-only mode");
        // Who may not write at all still hears that first: read-only mode is not a way to probe.
        let anonymous = app
            .catalog_as(None)
            .create_product(pb::CreateProductRequest { product: Some(product(&seller, "No", "x", 1)) })
            .await
            .expect_err("anonymous write");
        assert_eq!(anonymous.code(), Code::Unauthenticated);
    }
    // A leaked key can be revoked whatever the switch says.
    let revoked = admin_a.revoke_api_key(admin_pb::RevokeApiKeyRequest { id: key.id, reason: "leaked".into() }).await;
    assert!(revoked.expect("revocation in read-only mode").into_inner().api_key.unwrap().revoke_time.is_some());
    let seen_by_b = b.admin_as(Some(&b.admin_token)).get_read_only_mode(admin_pb::GetReadOnlyModeRequest {}).await;
    let seen_by_b = seen_by_b.unwrap().into_inner().read_only_mode.unwrap();
    assert!(seen_by_b.enabled && seen_by_b.effective && seen_by_b.reason == "database maintenance", "{seen_by_b:?}");

    // A replica started while the switch is on refuses writes from its first call. (Starting
    // it signs the admin in: sessions stay open in read-only mode, or nobody could end it.)
    b.stop().await.expect("B stops");
    let c = spawn_on(&url, &[]).await;
    assert_read_only(
        c.catalog
            .clone()
            .create_product(pb::CreateProductRequest { product: Some(product(&seller, "No", "x", 1)) })
            .await,
        "CreateProduct on a replica started in read-only mode",
    );

    // Off again, from the new replica: the first one becomes writable within a poll.
    let state = set_read_only(&c, false, "maintenance over").await;
    assert!(!state.enabled && !state.effective, "{state:?}");
    let took = until_writable(&a, &seller, true, Duration::from_secs(1)).await;
    eprintln!("the end of read-only mode reached replica A in {took:?}");

    // Both switches and the refusals are in the audit log.
    let events = admin_a
        .list_audit_events(admin_pb::ListAuditEventsRequest {
            action: "soko.admin.v1.AdminService.SetReadOnlyMode".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let ok: Vec<_> = events.iter().filter(|e| e.status_code == "OK").map(|e| e.reason.as_str()).collect();
    assert_eq!(ok, ["maintenance over", "database maintenance"]);
    assert_eq!(events[0].details.get("enabled").map(String::as_str), Some("false"));
    let refused = admin_a
        .list_audit_events(admin_pb::ListAuditEventsRequest {
            action: "soko.admin.v1.AdminService.CreateApiKey".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert!(refused.iter().any(|e| e.status_code == "UNAVAILABLE"), "{refused:?}");
}

async fn search_names(app: &TestApp, q: &str) -> Vec<String> {
    SearchServiceClient::new(app.channel.clone())
        .search_products(SearchProductsRequest { query: q.into(), page_size: 50, ..Default::default() })
        .await
        .expect("search")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.product.unwrap().name)
        .collect()
}

async fn sync_status(app: &TestApp) -> admin_pb::GetSyncStatusResponse {
    app.admin_as(Some(&app.admin_token))
        .get_sync_status(admin_pb::GetSyncStatusRequest {})
        .await
        .expect("sync status")
        .into_inner()
}

/// Waits until `app`'s last reindex has finished, for at most 10 s.
async fn finished_reindex(app: &TestApp) -> admin_pb::ReindexStatus {
    let started = Instant::now();
    loop {
        if let Some(reindex) = sync_status(app).await.reindex.filter(|r| !r.running) {
            return reindex;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the reindex did not finish in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reindex_rebuilds_from_the_database_on_every_replica_and_loses_no_write(backend: Backend) {
    let a = spawn_app(backend).await;
    let database = a.database.as_ref().unwrap();
    let b = spawn_on(&database.url, &[]).await;
    let seller = a.seller("Reindex Shop").await.id;
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut p = product(&seller, &format!("Kikoi wrap {i}"), "dresses", 100 + i);
        p.embedding = (0..8).map(|d| ((i * 8 + d) as f32).sin()).collect();
        ids.push(a.create(p).await.id);
    }
    for app in [&a, &b] {
        let started = Instant::now();
        while search_names(app, "kikoi").await.len() < 40 {
            assert!(started.elapsed() < Duration::from_secs(5), "the index never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let status = sync_status(&a).await;
    let local = status.local_index.clone().unwrap();
    assert!(status.outbox_head_id >= 40, "{status:?}");
    assert_eq!(local.watermark, status.outbox_head_id, "{status:?}");
    assert_eq!((local.lag_events, local.vector_count), (0, 40), "{local:?}");
    assert_eq!(local.state(), admin_pb::SyncState::Healthy, "{local:?}");
    assert_eq!(local.lag, Some(prost_types::Duration::default()));
    assert!(local.last_apply_time.is_some() && local.last_error.is_empty(), "{local:?}");
    assert_eq!(status.milvus.as_ref().unwrap().state(), admin_pb::SyncState::Disabled);
    assert!(status.reindex.is_none(), "no reindex yet: {status:?}");

    // A change made behind the outbox's back (a repair by hand, say): only a rebuild from the
    // table finds it.
    database.execute(&format!("UPDATE products SET name = 'Hand-fixed kanga' WHERE id = '{}'", ids[0])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(search_names(&a, "kanga").await.is_empty(), "no outbox event, no index change");

    let mut admin = a.admin_as(Some(&a.admin_token));
    let milvus = admin
        .reindex(admin_pb::ReindexRequest { target: admin_pb::ReindexTarget::Milvus.into(), reason: String::new() })
        .await
        .expect_err("Milvus is not configured");
    assert_eq!(milvus.code(), Code::FailedPrecondition, "{milvus:?}");

    let started = admin
        .reindex(admin_pb::ReindexRequest { target: 0, reason: "repaired a name by hand".into() })
        .await
        .expect("reindex")
        .into_inner()
        .reindex
        .unwrap();
    assert!(started.running && started.start_time.is_some(), "{started:?}");
    // Writes made while the rebuild runs are in the new index too, and search never stops.
    let during = a.create(product(&seller, "Kikoi made during the rebuild", "dresses", 1)).await;
    assert!(!search_names(&a, "kikoi").await.is_empty(), "search answers during a rebuild");

    let done = finished_reindex(&a).await;
    assert!(done.error_message.is_empty(), "{done:?}");
    assert_eq!(done.total_count, 40, "{done:?}");
    assert!(done.indexed_count >= 40 && done.end_time.is_some(), "{done:?}");
    // The other replica rebuilt as well, from the request it read in the database.
    let on_b = finished_reindex(&b).await;
    assert!(on_b.error_message.is_empty(), "{on_b:?}");
    for app in [&a, &b] {
        let started = Instant::now();
        loop {
            let fixed = search_names(app, "kanga").await;
            let kikoi = search_names(app, "kikoi").await;
            let stale = kikoi.iter().any(|n| n == "Kikoi wrap 0");
            if fixed == ["Hand-fixed kanga"] && !stale && kikoi.contains(&during.name) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "after the rebuild: {fixed:?} {kikoi:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let local = sync_status(&a).await.local_index.unwrap();
    assert_eq!(local.vector_count, 41, "{local:?}");

    let audited = admin
        .list_audit_events(admin_pb::ListAuditEventsRequest {
            action: "soko.admin.v1.AdminService.Reindex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let codes: Vec<_> = audited.iter().map(|e| e.status_code.as_str()).collect();
    assert_eq!(codes, ["OK", "FAILED_PRECONDITION"]);
    assert_eq!(audited[0].reason, "repaired a name by hand");
}
