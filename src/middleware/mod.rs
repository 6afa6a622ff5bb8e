//! Tower layers in front of the gRPC services, outermost first: CORS, grpc-web, request id and
//! log line, panics caught, client-fault relabelling, deadline, load shedding, identify, rate limit, authorize.

pub mod auth;
pub mod catch_panic;
pub mod client_fault;
pub mod client_ip;
pub mod connect;
pub mod deadline;
pub mod gate;
pub mod load_shed;
pub mod rate_limit;
pub mod request_log;
