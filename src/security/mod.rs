//! Credentials: password hashing, access tokens, opaque secrets and login throttling. Nothing
//! here knows about gRPC.

pub mod jwt;
pub mod password;
pub mod secrets;
pub mod throttle;
