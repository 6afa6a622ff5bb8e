//! All integration tests, linked into one binary: one link instead of one per file (each was ~390 MB
//! of debug binary), see issue 25. Each module is a former test file.

#[macro_use]
mod common;
mod admin_ops;
mod auth;
mod backup;
mod catalog;
mod clients;
mod dashboard;
mod debugging;
mod image_search;
mod milvus;
mod outage;
mod outbox;
mod product_cache;
mod rate_limit;
mod search;
mod search_cache;
mod security_review;
mod sentry;
mod server;
mod shutdown;
mod snapshot;
mod tls;
mod traces;
mod vector_recall;
mod web;
