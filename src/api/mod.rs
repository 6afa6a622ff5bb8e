//! The gRPC layer: translates between the proto contract and the domain.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod health;
pub mod read_mask;
pub mod search;
pub mod status;

/// Fully-qualified names of the services Soko defines, as health and reflection know them.
pub const CATALOG_SERVICE: &str = "soko.catalog.v1.CatalogService";
pub const SEARCH_SERVICE: &str = "soko.search.v1.SearchService";
pub const AUTH_SERVICE: &str = "soko.auth.v1.AuthService";
pub const ADMIN_SERVICE: &str = "soko.admin.v1.AdminService";

/// The caller's context that the authentication layer attached to the request.
pub fn context<T>(request: &tonic::Request<T>) -> crate::domain::auth::RequestContext {
    request.extensions().get::<crate::domain::auth::RequestContext>().cloned().unwrap_or_else(|| {
        crate::domain::auth::RequestContext {
            principal: crate::domain::auth::Principal::Anonymous,
            client_ip: String::new(),
            request_id: String::new(),
        }
    })
}

/// Microseconds since the epoch as a protobuf timestamp.
pub fn timestamp(t: crate::domain::product::Timestamp) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.0.div_euclid(1_000_000),
        nanos: (t.0.rem_euclid(1_000_000) * 1000) as i32,
    })
}

/// A protobuf timestamp as microseconds since the epoch (saturating).
pub fn from_timestamp(t: &prost_types::Timestamp) -> crate::domain::product::Timestamp {
    crate::domain::product::Timestamp(t.seconds.saturating_mul(1_000_000).saturating_add(i64::from(t.nanos) / 1000))
}
