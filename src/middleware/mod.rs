//! Tower layers in front of the gRPC services.

pub mod auth;
pub mod request_log;
