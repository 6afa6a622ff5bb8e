//! Soko: a marketplace backend served over gRPC.

pub mod admission;
pub mod api;
pub mod backup;
pub mod breaker;
pub mod build_info;
pub mod configuration;
pub mod demo;
pub mod domain;
pub mod embed;
pub mod middleware;
pub mod milvus;
pub mod ops;
pub mod outbox;
pub mod periodic;
pub mod policy;
pub mod product_cache;
pub mod proto;
pub mod ratelimit;
pub mod redis_link;
pub mod search;
pub mod security;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod web;
