//! Tower layers in front of the gRPC services.

pub mod request_log;
