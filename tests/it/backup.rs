//! Backups (issue 17): the restore drill from every backend into every other, damaged files
//! refused with nothing written, consistency under write load, the schedule's lease, and the
//! admin rpcs and CLI.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use soko::{
    backup::{self, BackupConfig, BackupError, Backups, State, Trigger},
    proto::{
        catalog as pb,
        soko::{
            admin::v1 as admin_pb,
            auth::v1 as auth_pb,
            search::v1::{SearchProductsRequest, search_service_client::SearchServiceClient},
        },
    },
    store::{
        Db, PoolSettings,
        backup::{DumpItem, NOT_BACKED_UP, RestoreMode, TABLES},
    },
};
use tonic::Code;

use crate::common::{Backend, TestApp, TestDatabase, product, spawn_app, spawn_on, violated_fields};

const BACKENDS: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::Mysql];

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("soko_bk_{tag}_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn config(dir: &Path) -> BackupConfig {
    BackupConfig { dir: dir.to_owned(), interval: None, retention: Duration::from_secs(30 * 86_400), keep_min: 7 }
}

async fn connect(url: &str) -> Db {
    let url = soko::configuration::DatabaseUrl::parse(url).expect("url");
    Db::connect(&url, &PoolSettings { max_size: 4, checkout_timeout: Duration::from_secs(10) }).expect("pool")
}

/// Every backed-up row of `db`, per table, as the portable encoding, sorted.
async fn contents(db: &Db) -> BTreeMap<String, Vec<String>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = String::new();
        while let Some(item) = rx.recv().await {
            match item {
                DumpItem::Table(name) => {
                    current = name.to_owned();
                    tables.entry(current.clone()).or_default();
                }
                DumpItem::Row(row) => tables.get_mut(&current).expect("table").push(row),
                DumpItem::End => {}
            }
        }
        tables
    });
    db.dump(tx).await.expect("dump");
    let mut tables = collect.await.expect("collector");
    for rows in tables.values_mut() {
        rows.sort();
    }
    tables
}

/// A catalog with something in every table, made through the API as users would.
async fn fill(app: &TestApp) -> Vec<String> {
    let seller = app.seller("Backup Traders").await.id;
    let mut names = Vec::new();
    for (i, (name, category)) in
        [("Kikoi beach wrap", "dresses"), ("Maasai beaded necklace", "jewelry"), ("Teak stool", "furniture")]
            .into_iter()
            .enumerate()
    {
        let mut p = product(&seller, name, category, 1000 + i as i64);
        p.embedding = (0..8).map(|d| if d == i { 1.0 } else { 0.1 }).collect();
        app.create(p).await;
        names.push(name.to_owned());
    }
    // A deleted product and an edited one: their outbox history must survive too.
    let gone = app.create(product(&seller, "Withdrawn lamp", "furniture", 5)).await;
    let mut catalog = app.catalog.clone();
    catalog.delete_product(pb::DeleteProductRequest { id: gone.id }).await.expect("delete");
    // Users with sessions and refresh tokens, an API key, and audit events.
    let (buyer_id, _) =
        app.register(&format!("buyer-{}@soko.test", uuid::Uuid::new_v4().simple()), auth_pb::Role::Buyer).await;
    app.admin_as(Some(&app.admin_token))
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: buyer_id,
            display_name: "backup drill".into(),
            reason: "drill".into(),
            ..Default::default()
        })
        .await
        .expect("api key");
    names
}

async fn wait_for_search(app: &TestApp, query: &str, want: usize) -> Vec<String> {
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    loop {
        let request = SearchProductsRequest { query: query.into(), page_size: 50, ..Default::default() };
        if let Ok(response) = client.search_products(request).await {
            let mut ids: Vec<String> = response.into_inner().results.into_iter().map(|r| r.product_id).collect();
            if ids.len() >= want {
                ids.sort();
                return ids;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "search never found {want} results for `{query}`");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The drill CI runs: back up a catalog on one backend, restore it into every backend, compare
/// every row, then serve the restored database and search it.
async fn restores_into_every_backend(source: Backend) {
    let app = spawn_app(source).await;
    fill(&app).await;
    let expected_search = wait_for_search(&app, "beaded necklace", 1).await;
    let dir = temp_dir("drill");
    let info = Backups::new(app.db.clone(), config(&dir)).create(Trigger::Manual, "drill").await.expect("backup");
    assert_eq!(info.state, State::Succeeded);
    assert_eq!(info.tables.len(), TABLES.len());
    let original = contents(&app.db).await;
    for table in ["users", "sellers", "products", "outbox", "sessions", "refresh_tokens", "api_keys", "audit_events"] {
        assert!(!original[table].is_empty(), "the drill should put rows in {table}");
    }
    let file = PathBuf::from(&info.location);

    for target in BACKENDS.into_iter().filter(|b| b.enabled()) {
        let database = TestDatabase::create(target).await;
        let db = connect(&database.url).await;
        let verified = backup::restore(&db, &file, RestoreMode::IntoEmpty).await.expect("restore");
        assert_eq!(verified.total_rows(), info.total_rows());
        assert_eq!(contents(&db).await, original, "{} → {} changed rows", source.name(), target.name());

        // Restoring again without --replace is refused and changes nothing.
        let again = backup::restore(&db, &file, RestoreMode::IntoEmpty).await;
        assert!(matches!(again, Err(BackupError::NotEmpty(_))), "{again:?}");
        // With --replace it succeeds and the result is the same.
        backup::restore(&db, &file, RestoreMode::Replace).await.expect("replace");
        assert_eq!(contents(&db).await, original);

        // A server on the restored database rebuilds its index from the outbox and finds the
        // same products; new writes get fresh outbox ids after the restored ones.
        let restored = spawn_on(&database.url, &[]).await;
        assert_eq!(wait_for_search(&restored, "beaded necklace", 1).await, expected_search);
        let seller = restored.seller("After the restore").await.id;
        restored.create(product(&seller, "Fresh sisal basket", "accessories", 900)).await;
        wait_for_search(&restored, "sisal basket", 1).await;
        drop(restored);
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_string(&mut text)
        .expect("gunzip");
    text
}

fn gzip_to(path: &Path, text: &str) {
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(path).expect("create"), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).expect("write");
    gz.finish().expect("finish");
}

/// Which refusal a damaged file should get.
type Expected = fn(&BackupError) -> bool;

/// Damaged files of every kind are refused with a clear error, and nothing reaches the database.
async fn damaged_backups_are_refused(target: Backend) {
    let app = spawn_app(Backend::Sqlite).await;
    fill(&app).await;
    let dir = temp_dir("damaged");
    let info = Backups::new(app.db.clone(), config(&dir)).create(Trigger::Manual, "").await.expect("backup");
    let good = PathBuf::from(&info.location);
    let text = gunzip(&good);
    let bytes = std::fs::read(&good).expect("read");

    let mut cases: Vec<(&str, PathBuf, Expected)> = Vec::new();
    let flipped = dir.join("flipped.jsonl.gz");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&flipped, damaged).expect("write");
    cases.push(("a flipped byte", flipped, |e| {
        matches!(e, BackupError::Corrupt(_) | BackupError::ChecksumMismatch(_) | BackupError::Truncated)
    }));

    let truncated = dir.join("truncated.jsonl.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    cases.push(("a truncated file", truncated, |e| matches!(e, BackupError::Truncated | BackupError::Corrupt(_))));

    let edited = dir.join("edited.jsonl.gz");
    gzip_to(&edited, &text.replacen("Teak stool", "Teak stoop", 1));
    cases.push(("an edited row", edited, |e| matches!(e, BackupError::ChecksumMismatch(t) if t == "products")));

    let no_manifest = dir.join("no-manifest.jsonl.gz");
    let without_last: Vec<&str> = text.lines().collect();
    gzip_to(&no_manifest, &(without_last[..without_last.len() - 1].join("\n") + "\n"));
    cases.push(("a file cut at a line", no_manifest, |e| matches!(e, BackupError::Truncated)));

    let newer = dir.join("newer.jsonl.gz");
    let ours = format!("\"schema_version\":\"{}\"", soko::store::backup::latest_schema_version());
    assert!(text.contains(&ours), "header names the schema");
    gzip_to(&newer, &text.replacen(&ours, "\"schema_version\":\"99991231000000\"", 1));
    cases.push(("a newer schema", newer, |e| matches!(e, BackupError::NewerSchema { .. })));

    let foreign = dir.join("foreign.jsonl.gz");
    gzip_to(&foreign, "{\"hello\":\"world\"}\n");
    cases.push(("someone else's file", foreign, |e| matches!(e, BackupError::NotABackup)));

    let not_gzip = dir.join("notes.txt");
    std::fs::write(&not_gzip, "just some notes\n").expect("write");
    cases.push(("a file that is not gzip", not_gzip, |e| matches!(e, BackupError::Corrupt(_))));

    for (what, path, expected) in cases {
        let database = TestDatabase::create(target).await;
        let db = connect(&database.url).await;
        let verify = backup::verify(&path).await;
        assert!(verify.as_ref().is_err_and(expected), "verify of {what}: {verify:?}");
        let restore = backup::restore(&db, &path, RestoreMode::IntoEmpty).await;
        let err = restore.expect_err(what);
        assert!(expected(&err), "restore of {what}: {err:?}");
        assert!(!err.to_string().is_empty());
        db.migrate().await.expect("migrate");
        let rows = contents(&db).await;
        for (table, rows) in rows {
            // The first migration seeds categories; nothing else may be there.
            if table != "categories" {
                assert!(rows.is_empty(), "{what}: {table} got {} rows", rows.len());
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A new table must be added to backups (or to the list of tables deliberately left out).
async fn every_table_is_backed_up(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let db = connect(&database.url).await;
    db.migrate().await.expect("migrate");
    let mut known: Vec<String> = TABLES.iter().chain(NOT_BACKED_UP).map(|t| (*t).to_owned()).collect();
    known.sort();
    assert_eq!(db.table_names().await.expect("tables"), known);
}

/// A backup taken while writes go on holds every write acknowledged before it began, and its
/// outbox matches its products (the snapshot is one transaction).
async fn backup_under_write_load_holds_acknowledged_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.seller("Busy Stall").await.id;
    let acked: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (mut catalog, acked, stop, seller) = (app.catalog.clone(), acked.clone(), stop.clone(), seller.clone());
        async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let request =
                    pb::CreateProductRequest { product: Some(product(&seller, &format!("Load item {n}"), "shoes", n)) };
                let created = catalog.create_product(request).await.expect("write under backup").into_inner();
                acked.lock().unwrap().push((Instant::now(), created.product.expect("product").id));
            }
        }
    });
    while acked.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dir = temp_dir("load");
    let began = Instant::now();
    let info = Backups::new(app.db.clone(), config(&dir)).create(Trigger::Manual, "").await.expect("backup");
    // Writes keep being acknowledged while and after the backup runs.
    let during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(acked.lock().unwrap().len() > during, "writes stalled during the backup");

    let database = TestDatabase::create(Backend::Sqlite).await;
    let db = connect(&database.url).await;
    backup::restore(&db, Path::new(&info.location), RestoreMode::IntoEmpty).await.expect("restore");
    let restored = contents(&db).await;
    let ids_of = |table: &str, field: &str| -> std::collections::BTreeSet<String> {
        restored[table]
            .iter()
            .map(|row| {
                serde_json::from_str::<serde_json::Value>(row).expect("json")[field].as_str().expect("id").to_owned()
            })
            .collect()
    };
    let products = ids_of("products", "id");
    let before: Vec<String> =
        acked.lock().unwrap().iter().filter(|(t, _)| *t < began).map(|(_, id)| id.clone()).collect();
    assert!(before.len() >= 20);
    for id in &before {
        assert!(products.contains(id), "product {id}, acknowledged before the backup began, is missing");
    }
    assert_eq!(ids_of("outbox", "product_id"), products, "outbox and products come from different moments");
    let _ = std::fs::remove_dir_all(dir);
}

/// Only one replica takes the scheduled backup: the lease has one holder until it expires.
async fn the_schedule_lease_has_one_holder(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let db = connect(&database.url).await;
    db.migrate().await.expect("migrate");
    let ttl = Duration::from_millis(400);
    assert!(db.take_lease("backup", "replica-a", ttl).await.expect("lease"));
    assert!(!db.take_lease("backup", "replica-b", ttl).await.expect("lease"));
    // Held for the whole period, even against its own holder: one backup per period.
    assert!(!db.take_lease("backup", "replica-a", ttl).await.expect("lease"));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(db.take_lease("backup", "replica-b", ttl).await.expect("lease"));
    // Only the holder can give it back.
    db.release_lease("backup", "replica-a").await.expect("release");
    assert!(!db.take_lease("backup", "replica-a", ttl).await.expect("lease"));
    db.release_lease("backup", "replica-b").await.expect("release");
    assert!(db.take_lease("backup", "replica-a", ttl).await.expect("lease"));

    // Many replicas racing for a fresh lease: exactly one wins.
    let wins = futures_util::future::join_all((0..8).map(|i| {
        let db = db.clone();
        async move { db.take_lease("race", &format!("r{i}"), Duration::from_secs(60)).await.expect("lease") }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
}

backend_tests!(
    restores_into_every_backend,
    damaged_backups_are_refused,
    every_table_is_backed_up,
    backup_under_write_load_holds_acknowledged_writes,
    the_schedule_lease_has_one_holder,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rpcs_take_and_list_backups() {
    let dir = temp_dir("rpc");
    let dir_text = dir.to_string_lossy().into_owned();
    let app = crate::common::spawn_app_with(Backend::Sqlite, &[("SOKO_BACKUP_DIR", &dir_text)]).await;
    fill(&app).await;
    let mut admin = app.admin_as(Some(&app.admin_token));

    let started = admin
        .create_backup(admin_pb::CreateBackupRequest { reason: "before the sale".into() })
        .await
        .expect("create")
        .into_inner()
        .backup
        .expect("backup");
    assert_eq!(started.state(), admin_pb::BackupState::Running);
    assert_eq!(started.trigger(), admin_pb::BackupTrigger::Manual);
    let finished = loop {
        let list = admin.list_backups(admin_pb::ListBackupsRequest::default()).await.expect("list").into_inner();
        let found = list.backups.into_iter().find(|b| b.id == started.id).expect("listed");
        if found.state() != admin_pb::BackupState::Running {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished.state(), admin_pb::BackupState::Succeeded, "{}", finished.error_message);
    assert_eq!(finished.sha256.len(), 64);
    assert!(finished.size_bytes > 0);
    assert_eq!(finished.row_counts["products"], 4);
    assert!(finished.expire_time.is_some() && finished.end_time.is_some());
    backup::verify(Path::new(&finished.location)).await.expect("the listed file verifies");

    // Paging: three backups, one per page, newest first, each once.
    for _ in 0..2 {
        Backups::new(app.db.clone(), config(&dir)).create(Trigger::Manual, "").await.expect("backup");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_backups(admin_pb::ListBackupsRequest { page_size: 1, page_token: token.clone() })
            .await
            .expect("page")
            .into_inner();
        assert!(page.backups.len() <= 1);
        seen.extend(page.backups.into_iter().map(|b| b.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);

    // Bad input.
    let long =
        admin.create_backup(admin_pb::CreateBackupRequest { reason: "x".repeat(501) }).await.expect_err("long reason");
    assert_eq!(long.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&long), ["reason"]);
    let negative = admin
        .list_backups(admin_pb::ListBackupsRequest { page_size: -1, ..Default::default() })
        .await
        .expect_err("negative");
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&negative), ["page_size"]);
    let forged = admin
        .list_backups(admin_pb::ListBackupsRequest { page_token: "bm90LWEtdG9rZW4".into(), ..Default::default() })
        .await
        .expect_err("forged token");
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&forged), ["page_token"]);

    // Who may call.
    let (_, buyer) = app.register("shopper@soko.test", auth_pb::Role::Buyer).await;
    let denied = app.admin_as(Some(&buyer.access_token)).create_backup(admin_pb::CreateBackupRequest::default()).await;
    assert_eq!(denied.expect_err("buyer").code(), Code::PermissionDenied);
    let anonymous = app.admin_as(None).list_backups(admin_pb::ListBackupsRequest::default()).await;
    assert_eq!(anonymous.expect_err("anonymous").code(), Code::Unauthenticated);

    // Audited.
    let events = admin
        .list_audit_events(admin_pb::ListAuditEventsRequest {
            action: "soko.admin.v1.AdminService.CreateBackup".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    assert!(events.iter().any(|e| e.reason == "before the sale"
        && e.status_code == "OK"
        && e.resource == format!("backups/{}", started.id)));
    assert!(events.iter().any(|e| e.status_code == "INVALID_ARGUMENT"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backup_at_a_time_and_retention_keeps_the_minimum() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = temp_dir("retention");
    let backups = Backups::new(app.db.clone(), BackupConfig { keep_min: 2, ..config(&dir) });
    let running = backups.start(Trigger::Manual, "").expect("start");
    let second = backups.start(Trigger::Manual, "");
    assert!(matches!(second, Err(BackupError::AlreadyRunning(ref id)) if *id == running.id), "{second:?}");
    while backups.list().expect("list")[0].state == State::Running {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        backups.create(Trigger::Scheduled, "").await.expect("backup");
    }
    let all: Vec<String> = backups.list().expect("list").into_iter().map(|b| b.id).collect();
    assert_eq!(all.len(), 3);
    // Nothing has expired yet.
    assert!(backups.prune(soko::domain::product::Timestamp::now().0).expect("prune").is_empty());
    // A year on, all have expired, but the newest two are kept.
    let later = soko::domain::product::Timestamp::now().0 + 365 * 86_400 * 1_000_000;
    assert_eq!(backups.prune(later).expect("prune"), vec![all[2].clone()]);
    let left: Vec<String> = backups.list().expect("list").into_iter().map(|b| b.id).collect();
    assert_eq!(left, all[..2]);
    assert!(!dir.join(format!("{}.jsonl.gz", all[2])).exists());
    let _ = std::fs::remove_dir_all(dir);
}

fn soko(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_soko"));
    command.args(args).env("RUST_LOG", "off").env_remove("SOKO_ENV");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("run soko")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_verifies_and_restores() {
    let source = TestDatabase::create(Backend::Sqlite).await;
    let app = spawn_on(&source.url, &[]).await;
    fill(&app).await;
    app.stop().await.expect("stop");
    let dir = temp_dir("cli");
    let dir_text = dir.to_string_lossy().into_owned();
    let env = [("DATABASE_URL", source.url.as_str()), ("SOKO_BACKUP_DIR", dir_text.as_str())];

    let created = soko(&["backup", "create", "--reason", "cli drill"], &env);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let stdout = String::from_utf8_lossy(&created.stdout);
    let file = stdout.lines().next().expect("path").trim().to_owned();
    assert!(file.ends_with(".jsonl.gz") && Path::new(&file).is_file(), "{stdout}");

    let listed = soko(&["backup", "list"], &env);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success());
    assert!(listing.contains("succeeded") && listing.trim_end().ends_with("ok"), "{listing}");

    let verified = soko(&["backup", "verify", &file], &env);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("products"));

    let target = TestDatabase::create(Backend::Sqlite).await;
    let into = [("DATABASE_URL", target.url.as_str()), ("SOKO_BACKUP_DIR", dir_text.as_str())];
    let restored = soko(&["backup", "restore", &file], &into);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let refused = soko(&["backup", "restore", &file], &into);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--replace"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let replaced = soko(&["backup", "restore", &file, "--replace"], &into);
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert_eq!(contents(&connect(&source.url).await).await, contents(&connect(&target.url).await).await);

    // A damaged file: the list flags it and verify refuses it.
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
    let listing = String::from_utf8_lossy(&soko(&["backup", "list"], &env).stdout).into_owned();
    assert!(listing.contains("MISMATCH"), "{listing}");
    let damaged = soko(&["backup", "verify", &file], &env);
    assert!(!damaged.status.success());
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );

    let usage = soko(&["backup", "restore"], &env);
    assert_eq!(usage.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
