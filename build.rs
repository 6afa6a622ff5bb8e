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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-vendor");

    let fds = protox::Compiler::new(["proto", "proto-vendor"])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("soko_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
