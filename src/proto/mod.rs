//! Code generated from `proto/` by `build.rs`. The proto files are the contract and its documentation.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod codec;

pub mod soko {
    pub mod catalog {
        pub mod v1 {
            tonic::include_proto!("soko.catalog.v1");
        }
    }
    pub mod search {
        pub mod v1 {
            tonic::include_proto!("soko.search.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("soko.auth.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("soko.admin.v1");
        }
    }
    /// The image-embedding model server Soko calls (not a service Soko serves).
    pub mod embedder {
        pub mod v1 {
            tonic::include_proto!("soko.embedder.v1");
        }
    }
}

/// Milvus's API (vendored under `proto-vendor/milvus`), for the client in `crate::milvus`.
pub mod milvus {
    pub mod proto {
        pub mod common {
            tonic::include_proto!("milvus.proto.common");
        }
        pub mod schema {
            tonic::include_proto!("milvus.proto.schema");
        }
        pub mod msg {
            tonic::include_proto!("milvus.proto.msg");
        }
        pub mod feder {
            tonic::include_proto!("milvus.proto.feder");
        }
        pub mod milvus {
            tonic::include_proto!("milvus.proto.milvus");
        }
    }
}

pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

/// Every file descriptor Soko serves, comments included, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("soko_descriptor");

pub use soko::catalog::v1 as catalog;
