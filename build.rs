//! Compiles the protobuf contracts with protox (pure Rust: no protoc needed on a fresh machine)
//! and keeps the descriptor set, comments included, for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "soko/catalog/v1/catalog.proto",
    "soko/search/v1/search.proto",
    "soko/auth/v1/auth.proto",
    "soko/admin/v1/admin.proto",
    "grpc/health/v1/health.proto",
];

/// Services Soko calls rather than serves: compiled to Rust (client, and server for test fakes)
/// but kept out of the reflection descriptor, which lists only what this server answers.
const CALLED: &[&str] = &["soko/embedder/v1/embedder.proto"];

/// Served through reflection only, so tools can decode error details; the Rust types come from
/// tonic-types.
const REFLECTION_ONLY: &[&str] = &["google/rpc/status.proto", "google/rpc/error_details.proto"];

/// The MilvusService methods `src/milvus/` calls.
const MILVUS_METHODS: &[&str] = &[
    "CheckHealth",
    "HasCollection",
    "CreateCollection",
    "DescribeCollection",
    "DropCollection",
    "CreateIndex",
    "DescribeIndex",
    "LoadCollection",
    "GetLoadState",
    "Upsert",
    "Delete",
    "Query",
    "Search",
    "Flush",
];

/// The commit this binary is built from, for `soko --version`, the start-up log, `/health/ready`
/// and `soko_build_info`. `SOKO_GIT_COMMIT` wins (a container build has no `.git`); otherwise
/// git is asked, and "unknown" is the honest answer when neither knows.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=SOKO_GIT_COMMIT");
    if let Ok(commit) = env::var("SOKO_GIT_COMMIT") {
        return commit;
    }
    // Re-run when HEAD moves: the HEAD file for a branch switch, the branch's ref (loose or
    // packed) for a commit on it.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    if let Ok(head) = fs::read_to_string(".git/HEAD")
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{reference}");
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-vendor");
    println!("cargo:rustc-env=SOKO_GIT_COMMIT={}", git_commit());

    let compile = |files: &[&str]| {
        protox::Compiler::new(["proto", "proto-vendor"])?
            .include_source_info(true)
            .include_imports(true)
            .open_files(files)
            .map(|c| c.file_descriptor_set())
    };
    let reflected: Vec<&str> = PROTOS.iter().chain(REFLECTION_ONLY).copied().collect();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("soko_descriptor.bin"), compile(&reflected)?.encode_to_vec())?;

    // Soko's own services decode requests with a codec that calls undecodable bytes the
    // sender's fault (INVALID_ARGUMENT). Services Soko calls keep prost's codec: bytes a model
    // server gets wrong are that server's failure, not our caller's.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::proto::codec::SokoCodec")
        .compile_fds(compile(PROTOS)?)?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compile(CALLED)?)?;

    // Milvus's contract imports its files by bare name ("common.proto"), so its folder is an
    // include root of its own. Only the client is generated: Soko never serves Milvus.
    let mut milvus = protox::Compiler::new(["proto-vendor/milvus"])?
        .include_imports(true)
        .open_files(["milvus.proto"])?
        .file_descriptor_set();
    // The client keeps the methods Soko calls. The rest would only add compile time, and one of
    // them (`Connect`) would collide with the generated client's own `connect` constructor.
    for file in &mut milvus.file {
        file.service.retain(|s| s.name() == "MilvusService");
        for service in &mut file.service {
            service.method.retain(|m| MILVUS_METHODS.contains(&m.name()));
        }
    }
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(milvus)?;
    Ok(())
}
