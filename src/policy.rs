//! The one table that says, for every gRPC method, who may call it and which rate-limit class it
//! belongs to. The authentication layer and the rate limiter both read it; a test checks that
//! every method in the contract has an entry, so a new method can't ship without a policy.

use crate::domain::auth::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not. Invalid credentials are still refused.
    Public,
    /// Any signed-in user or API key.
    Authenticated,
    /// Callers whose role includes this one (admins include sellers).
    Role(Role),
}

/// Rate-limit class of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    Default,
    Auth,
    Search,
    Upload,
    Transaction,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodPolicy {
    pub access: Access,
    pub class: RateClass,
    /// Whether the method changes the catalog, accounts or keys, and so is refused in read-only
    /// mode. Signing in, refreshing and signing out write only session state and stay open: an
    /// operator must be able to sign in to end read-only mode, and anyone to sign out. Revoking
    /// an API key stays open too: a leak is no time to wait for maintenance to end.
    pub writes: bool,
}

/// A method the read-only switch leaves open: it reads, or writes only what operating the
/// service needs (sessions, a reindex, a backup file).
const fn p(access: Access, class: RateClass) -> MethodPolicy {
    MethodPolicy { access, class, writes: false }
}

/// A method that writes.
const fn w(access: Access, class: RateClass) -> MethodPolicy {
    MethodPolicy { access, class, writes: true }
}

use Access::{Authenticated, Public};
use RateClass::{Admin as AdminClass, Auth, Default as DefaultClass, Search, Transaction, Upload};

const SELLER: Access = Access::Role(Role::Seller);
const ADMIN: Access = Access::Role(Role::Admin);

static POLICIES: &[(&str, MethodPolicy)] = &[
    ("/soko.catalog.v1.CatalogService/ListCategories", p(Public, DefaultClass)),
    ("/soko.catalog.v1.CatalogService/CreateCategory", w(ADMIN, AdminClass)),
    ("/soko.catalog.v1.CatalogService/CreateSeller", w(SELLER, Transaction)),
    ("/soko.catalog.v1.CatalogService/GetSeller", p(Public, DefaultClass)),
    ("/soko.catalog.v1.CatalogService/GetProduct", p(Public, DefaultClass)),
    ("/soko.catalog.v1.CatalogService/BatchGetProducts", p(Public, DefaultClass)),
    ("/soko.catalog.v1.CatalogService/ListProducts", p(Public, DefaultClass)),
    ("/soko.catalog.v1.CatalogService/CreateProduct", w(SELLER, Transaction)),
    ("/soko.catalog.v1.CatalogService/UpdateProduct", w(SELLER, Transaction)),
    ("/soko.catalog.v1.CatalogService/DeleteProduct", w(SELLER, Transaction)),
    ("/soko.search.v1.SearchService/SearchProducts", p(Public, Search)),
    ("/soko.search.v1.SearchService/SearchByVector", p(Public, Search)),
    ("/soko.search.v1.SearchService/SearchByImage", p(Public, Upload)),
    ("/soko.search.v1.SearchService/SimilarProducts", p(Public, Search)),
    ("/soko.search.v1.SearchService/HybridSearch", p(Public, Search)),
    ("/soko.auth.v1.AuthService/Register", w(Public, Auth)),
    ("/soko.auth.v1.AuthService/Login", p(Public, Auth)),
    ("/soko.auth.v1.AuthService/Refresh", p(Public, Auth)),
    ("/soko.auth.v1.AuthService/Logout", p(Public, Auth)),
    ("/soko.auth.v1.AuthService/Me", p(Authenticated, DefaultClass)),
    ("/soko.auth.v1.AuthService/ChangePassword", w(Authenticated, Auth)),
    ("/soko.admin.v1.AdminService/ListUsers", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/SetUserRole", w(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/CreateApiKey", w(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/RevokeApiKey", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/ListApiKeys", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/ListAuditEvents", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/SetReadOnlyMode", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/GetReadOnlyMode", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/Reindex", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/GetSyncStatus", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/CreateBackup", p(ADMIN, AdminClass)),
    ("/soko.admin.v1.AdminService/ListBackups", p(ADMIN, AdminClass)),
];

/// Infrastructure every client and probe needs without credentials or limits.
const EXEMPT_PREFIXES: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// Health and reflection: no authentication, no rate limits.
pub fn is_exempt(path: &str) -> bool {
    EXEMPT_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// The name metrics give a call's method: the path itself when the contract or the exempt
/// infrastructure has it, one shared name otherwise, so a client inventing paths cannot grow the
/// number of series.
pub fn metric_method(path: &str) -> &'static str {
    if let Some((known, _)) = POLICIES.iter().find(|(p, _)| *p == path) {
        return known;
    }
    EXEMPT_PREFIXES.iter().find(|prefix| path.starts_with(*prefix)).copied().unwrap_or("other")
}

/// The policy of a Soko method; `None` for paths that are not Soko methods (the router answers
/// those with UNIMPLEMENTED).
pub fn policy(path: &str) -> Option<MethodPolicy> {
    POLICIES.iter().find(|(p, _)| *p == path).map(|(_, policy)| *policy)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_method_in_the_contract_has_a_policy() {
        let fds = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = 0;
        for file in fds.file.iter().filter(|f| f.package().starts_with("soko.")) {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(policy(&path).is_some(), "{path} has no policy");
                    methods += 1;
                }
            }
        }
        assert_eq!(methods, POLICIES.len(), "the table lists a method the contract doesn't have");
    }

    /// What a method's `Access:` line in the proto says, as the table spells it.
    fn documented_access(comment: &str) -> Option<Access> {
        let rest = comment.split("Access:").nth(1)?;
        let word: String = rest.trim_start().chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        match word.as_str() {
            "public" => Some(Public),
            "authenticated" => Some(Authenticated),
            "seller" => Some(SELLER),
            "admin" => Some(ADMIN),
            _ => None,
        }
    }

    /// The contract is where client developers read who may call what, so its `Access:` lines
    /// and this table must not drift apart (issue 25).
    #[test]
    fn every_methods_access_line_matches_the_table() {
        let fds = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut wrong = Vec::new();
        for file in fds.file.iter().filter(|f| f.package().starts_with("soko.")) {
            let locations = file.source_code_info.as_ref().map(|i| i.location.as_slice()).unwrap_or_default();
            for (s, service) in file.service.iter().enumerate() {
                for (m, method) in service.method.iter().enumerate() {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    // Descriptor path of a method: service (6) number s, method (2) number m.
                    let want = [6, s as i32, 2, m as i32];
                    let comment = locations
                        .iter()
                        .find(|l| l.path == want)
                        .and_then(|l| l.leading_comments.as_deref())
                        .unwrap_or_default();
                    let documented = documented_access(comment);
                    let actual = policy(&path).map(|p| p.access);
                    if documented != actual {
                        wrong.push(format!("{path}: proto says {documented:?}, table says {actual:?}"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "Access: lines disagree with the policy table:\n{}", wrong.join("\n"));
    }

    #[test]
    fn metric_method_names_are_bounded() {
        assert_eq!(
            metric_method("/soko.catalog.v1.CatalogService/GetProduct"),
            "/soko.catalog.v1.CatalogService/GetProduct"
        );
        assert_eq!(metric_method("/grpc.health.v1.Health/Check"), "/grpc.health.v1.Health/");
        assert_eq!(metric_method("/soko.catalog.v1.CatalogService/Invented123"), "other");
    }

    #[test]
    fn infrastructure_is_exempt() {
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(is_exempt("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(!is_exempt("/soko.catalog.v1.CatalogService/GetProduct"));
    }
}
