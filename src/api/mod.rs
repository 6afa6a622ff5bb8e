//! The gRPC layer: translates between the proto contract and the domain.

pub mod catalog;
pub mod health;
mod status;

/// Fully-qualified names of the services Soko defines, as health and reflection know them.
pub const CATALOG_SERVICE: &str = "soko.catalog.v1.CatalogService";
pub const SEARCH_SERVICE: &str = "soko.search.v1.SearchService";
pub const AUTH_SERVICE: &str = "soko.auth.v1.AuthService";
pub const ADMIN_SERVICE: &str = "soko.admin.v1.AdminService";
