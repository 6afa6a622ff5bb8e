//! Backup and restore throughput per backend, with peak memory.
//!
//! Makes a synthetic backup file of `BENCH_PRODUCTS` products (default 100,000) with 768-d
//! embeddings (each product row and its outbox event carry one), restores it into a throwaway
//! database of each backend, then backs that database up again. Both directions go through the
//! same code as `soko backup restore` / `soko backup create`.
//!
//!   cargo bench --bench backup
//!   BENCH_PRODUCTS=10000 BENCH_BACKENDS=sqlite,postgres,mysql cargo bench --bench backup
//!
//! PostgreSQL and MySQL come from SOKO_TEST_POSTGRES_URL / SOKO_TEST_MYSQL_URL (defaults: the
//! local servers, as `scripts/test` uses them). Peak memory is the process's VmHWM, which only
//! grows: compare runs of different sizes, each in its own process, to see whether it is flat.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection};
use soko::{
    backup::{self, BackupConfig, Backups, Trigger, archive},
    configuration::DatabaseUrl,
    store::{
        Db, PoolSettings,
        backup::{DumpItem, RestoreMode, TABLES, latest_schema_version},
    },
};

const DIM: usize = 768;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes a backup file with `n` products (and their outbox events) through the archive writer.
fn synthetic_backup(path: &Path, n: usize) {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let producer = std::thread::spawn(move || {
        let send = |item| tx.blocking_send(item).expect("writer");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut embedding = || {
            // xorshift: cheap, and not compressible, like real float embeddings.
            let bytes: Vec<u8> = (0..DIM)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state as u32 as f32) / u32::MAX as f32 - 0.5).to_le_bytes()
                })
                .collect();
            STANDARD.encode(bytes)
        };
        let user = "0190f0aa-0000-7000-8000-000000000001";
        let seller = "0190f0aa-0000-7000-8000-000000000002";
        for table in TABLES {
            send(DumpItem::Table(table));
            match *table {
                "categories" => {
                    for c in ["accessories", "dresses", "furniture", "jewelry", "shoes"] {
                        send(DumpItem::Row(format!(r#"{{"id":"{c}","display_name":"{c}","created_at":0}}"#)));
                    }
                }
                "users" => send(DumpItem::Row(format!(
                    r#"{{"id":"{user}","email":"seller@bench.test","password_hash":"x","role":"seller","created_at":1,"updated_at":1}}"#
                ))),
                "sellers" => send(DumpItem::Row(format!(
                    r#"{{"id":"{seller}","display_name":"Bench","created_at":1,"owner_user_id":"{user}"}}"#
                ))),
                "products" => {
                    for i in 0..n {
                        send(DumpItem::Row(format!(
                            r#"{{"id":"{}","seller_id":"{seller}","category_id":"shoes","name":"Bench product {i}","description":"A product made for the backup benchmark, number {i}.","price_minor":{},"currency":"KES","image_urls":"[]","embedding":"{}","status":"active","created_at":{i},"updated_at":{i},"deleted_at":null}}"#,
                            uuid::Uuid::from_u128(i as u128 + 1),
                            1000 + i,
                            embedding()
                        )));
                    }
                }
                "outbox" => {
                    for i in 0..n {
                        send(DumpItem::Row(format!(
                            r#"{{"id":{},"product_id":"{}","op":"upsert","embedding":"{}","created_at":{i}}}"#,
                            i + 1,
                            uuid::Uuid::from_u128(i as u128 + 1),
                            embedding()
                        )));
                    }
                }
                _ => {}
            }
            send(DumpItem::End);
        }
    });
    let header = archive::Header {
        format: archive::FORMAT.into(),
        format_version: archive::FORMAT_VERSION,
        id: "soko-bench".into(),
        created_at: 0,
        schema_version: latest_schema_version(),
        source_backend: "synthetic".into(),
        soko_version: env!("CARGO_PKG_VERSION").into(),
    };
    archive::write(path, header, &mut rx).expect("write synthetic backup");
    producer.join().expect("producer");
}

struct Scratch {
    url: String,
    drop_sql: Option<(String, String)>,
}

async fn scratch(backend: &str, dir: &Path) -> Scratch {
    let name = format!("soko_bench_{}", uuid::Uuid::new_v4().simple());
    let with_db = |admin: &str| format!("{}/{name}", admin.rsplit_once('/').expect("url with a database").0);
    match backend {
        "sqlite" => Scratch { url: dir.join(format!("{name}.db")).to_string_lossy().into(), drop_sql: None },
        "postgres" => {
            let admin = env_or("SOKO_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
            AsyncPgConnection::establish(&admin)
                .await
                .expect("postgres")
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create");
            Scratch { url: with_db(&admin), drop_sql: Some((admin, format!("DROP DATABASE {name} WITH (FORCE)"))) }
        }
        "mysql" => {
            let admin = env_or("SOKO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql".to_owned());
            AsyncMysqlConnection::establish(&admin)
                .await
                .expect("mysql")
                .batch_execute(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                .await
                .expect("create");
            Scratch { url: with_db(&admin), drop_sql: Some((admin, format!("DROP DATABASE {name}"))) }
        }
        other => panic!("unknown backend {other}"),
    }
}

async fn drop_scratch(s: Scratch) {
    if let Some((admin, sql)) = s.drop_sql {
        if admin.starts_with("postgres") {
            let _ = AsyncPgConnection::establish(&admin).await.expect("postgres").batch_execute(&sql).await;
        } else {
            let _ = AsyncMysqlConnection::establish(&admin).await.expect("mysql").batch_execute(&sql).await;
        }
    }
}

fn rate(rows: u64, bytes: u64, took: Duration) -> String {
    let s = took.as_secs_f64();
    format!("{:>8.1} s {:>9.0} rows/s {:>7.1} MB/s", s, rows as f64 / s, bytes as f64 / 1e6 / s)
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_PRODUCTS", 100_000);
    let backends: String = env_or("BENCH_BACKENDS", "sqlite,postgres,mysql".to_owned());
    let dir: PathBuf = std::env::temp_dir().join(format!("soko_backup_bench_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("synthetic.jsonl.gz");
    let started = Instant::now();
    // The archive writer blocks on its channel, as it does on the server's blocking threads.
    let synthetic = file.clone();
    tokio::task::spawn_blocking(move || synthetic_backup(&synthetic, n)).await.expect("synthetic backup");
    let size = std::fs::metadata(&file).expect("file").len();
    println!(
        "backup bench: {n} products with {DIM}-d embeddings (+{n} outbox events), file {:.1} MB, made in {:.1} s, peak RSS {:.0} MiB",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    println!("{:<9} {:<8} {:>10} {:>14} {:>11}  peak RSS so far", "backend", "phase", "time", "rows/s", "MB/s (file)");
    for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let target = scratch(backend, &dir).await;
        let url = DatabaseUrl::parse(&target.url).expect("url");
        let db =
            Db::connect(&url, &PoolSettings { max_size: 4, checkout_timeout: Duration::from_secs(30) }).expect("pool");

        let t = Instant::now();
        let verified = backup::restore(&db, &file, RestoreMode::IntoEmpty).await.expect("restore");
        let took = t.elapsed();
        println!("{backend:<9} restore  {}  {:.0} MiB", rate(verified.total_rows(), size, took), peak_rss_mib());

        let backups = Backups::new(
            db.clone(),
            BackupConfig {
                dir: dir.join(backend),
                interval: None,
                retention: Duration::from_secs(86_400),
                keep_min: 1,
            },
        );
        let t = Instant::now();
        let info = backups.create(Trigger::Manual, "bench").await.expect("backup");
        let took = t.elapsed();
        assert_eq!(info.total_rows(), verified.total_rows(), "the backup holds what was restored");
        println!("{backend:<9} backup   {}  {:.0} MiB", rate(info.total_rows(), info.size, took), peak_rss_mib());
        drop(backups);
        drop(db);
        drop_scratch(target).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
