//! The generated clients against a real server (issue 15). Python (clients/python): its own test
//! suite (bearer tokens with refresh, API keys, decoded error details, sync and asyncio), and the
//! internal-service example that pages through the whole catalog with an API key. TypeScript
//! (clients/typescript): a Node program calling through the client over gRPC.

use std::{path::Path, process::Command};

use soko::proto::soko::auth::v1::Role;

use crate::common::{Backend, TestApp, product, spawn_app, tool_ready};

const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");

/// Whether python3 can import the client's runtime (scripts/test installs it).
fn python_ready() -> bool {
    let imports = Command::new("python3")
        .args(["-c", "import grpc, google.protobuf, google.rpc.status_pb2"])
        .status()
        .is_ok_and(|s| s.success());
    tool_ready(imports, "python3 with grpcio, protobuf and googleapis-common-protos (scripts/test installs them)")
}

fn python(args: &[&str], app: &TestApp, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .current_dir(Path::new(PYTHON_DIR))
        .env("PYTHONPATH", "src")
        .env("SOKO_ADDR", app.grpc_addr.to_string())
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs")
}

/// A secret for an API key of the admin, who sees every product.
async fn api_key_of_admin(app: &TestApp) -> String {
    app.create_api_key(&app.admin_id().await, "catalog export").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_own_tests_pass_against_a_real_server() {
    if !python_ready() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    app.register("py-seller@example.com", Role::Seller).await;
    let key = api_key_of_admin(&app).await;
    let out = python(
        &["-m", "unittest", "discover", "-v", "-s", "tests"],
        &app,
        &[("SOKO_EMAIL", "py-seller@example.com"), ("SOKO_PASSWORD", "password-123"), ("SOKO_API_KEY", &key)],
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("skipped"), "every live test ran: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_export_example_pages_through_the_whole_catalog_with_an_api_key() {
    if !python_ready() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let seller = app.seller("Export Seller").await;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(app.create(product(&seller.id, &format!("Exported item {i}"), "shoes", 1_000 + i)).await.id);
    }
    let key = api_key_of_admin(&app).await;
    let addr = app.grpc_addr.to_string();
    let out =
        python(&["examples/export_catalog.py", "--addr", &addr, "--page-size", "5"], &app, &[("SOKO_API_KEY", &key)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut exported: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    exported.sort();
    created.sort();
    assert_eq!(exported, created, "every product once, across five pages");

    let refused = python(&["examples/export_catalog.py", "--addr", &addr], &app, &[("SOKO_API_KEY", "soko_ak_wrong")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"), "{refused:?}");
}

const TYPESCRIPT_LIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/typescript/dist/test/live.js");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_client_calls_a_real_server_from_node() {
    if !tool_ready(Path::new(TYPESCRIPT_LIVE).exists(), "clients/typescript, built (scripts/test runs npm ci and tsc)")
    {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    app.register("ts-seller@example.com", Role::Seller).await;
    let seller = app.seller("TS Seller").await;
    app.create(product(&seller.id, "Kente scarf", "shoes", 2_000)).await;
    let key = api_key_of_admin(&app).await;
    let out = Command::new("node")
        .arg(TYPESCRIPT_LIVE)
        .env("SOKO_URL", format!("http://{}", app.grpc_addr))
        .env("SOKO_EMAIL", "ts-seller@example.com")
        .env("SOKO_PASSWORD", "password-123")
        .env("SOKO_API_KEY", &key)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok: 1 products, refreshed 1 time(s)"), "{stdout}");
}
