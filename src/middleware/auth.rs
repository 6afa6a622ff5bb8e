//! Who is calling, and may they call this method? Two gates around the rate limiter:
//! [`Identify`] names the caller (bearer JWT, API key or anonymous, plus the client IP) and
//! [`Authorize`] applies the method policy table. Tower layers rather than tonic interceptors
//! because API keys are checked against the database, and interceptors are synchronous.

use std::{net::SocketAddr, sync::Arc};

use http::HeaderMap;
use tonic::{
    Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{
    client_ip::{Cidr, client_ip},
    gate::{Admit, Gate, Refusal},
    request_log::RequestId,
};
use crate::{
    api::status::code_name,
    domain::{
        Error,
        accounts::Accounts,
        api_keys::ApiKeys,
        audit::Audit,
        auth::{Principal, RequestContext},
        switches::Switches,
    },
    policy::{self, Access},
};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Names the caller and attaches a [`RequestContext`] to the request.
#[derive(Clone)]
pub struct Identify {
    pub accounts: Accounts,
    pub api_keys: ApiKeys,
    pub trusted_proxies: Arc<Vec<Cidr>>,
    pub audit: Audit,
}

enum Credentials<'a> {
    None,
    Bearer(&'a str),
    ApiKey(&'a str),
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Credentials::Malformed;
        };
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Credentials::Bearer(token.trim())
            }
            _ => Credentials::Malformed,
        };
    }
    match headers.get(API_KEY_HEADER).map(|v| v.to_str()) {
        Some(Ok(key)) if !key.is_empty() => Credentials::ApiKey(key),
        Some(_) => Credentials::Malformed,
        None => Credentials::None,
    }
}

impl Identify {
    async fn principal(&self, headers: &HeaderMap, certificate: Option<&str>) -> Result<Principal, Error> {
        match credentials(headers) {
            Credentials::None => match certificate {
                Some(identity) => self.accounts.authenticate_certificate(identity).await,
                None => Ok(Principal::Anonymous),
            },
            Credentials::Bearer(token) => self.accounts.authenticate_access_token(token).await,
            Credentials::ApiKey(key) => self.api_keys.authenticate(key).await,
            Credentials::Malformed => Err(Error::Unauthenticated("authorization must be `Bearer <access token>`")),
        }
    }
}

impl Gate for Identify {
    async fn check<B: Send>(&self, request: &mut http::Request<B>) -> Result<Admit, Refusal> {
        if policy::is_exempt(request.uri().path()) {
            return Ok(Admit::default());
        }
        let (peer, certificate) = peer(request.extensions());
        let client_ip = client_ip(peer.as_ref().map(SocketAddr::ip), request.headers(), &self.trusted_proxies)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        // Invalid credentials are refused even on public methods: a client sending a bad token
        // has a bug it should hear about, not silently become anonymous.
        let principal = match self.principal(request.headers(), certificate.as_deref()).await {
            Ok(principal) => principal,
            Err(e) => {
                let status = Status::from(e);
                let ctx = RequestContext { principal: Principal::Anonymous, client_ip, request_id };
                audit_admin_refusal(&self.audit, request.uri().path(), &ctx, &status, "invalid credentials").await;
                return Err(status.into());
            }
        };
        // Named in the call's log line: an id, never a credential.
        if let Some(slot) = request.extensions().get::<crate::middleware::request_log::CallerSlot>() {
            slot.set(principal.audit_name());
        }
        request.extensions_mut().insert(RequestContext { principal, client_ip, request_id });
        Ok(Admit::default())
    }
}

/// The peer's address, and over TLS the identity its verified client certificate names. Tokens
/// and API keys sent on an mTLS connection take precedence over the certificate.
fn peer(extensions: &http::Extensions) -> (Option<SocketAddr>, Option<String>) {
    if let Some(tcp) = extensions.get::<TcpConnectInfo>() {
        return (tcp.remote_addr(), None);
    }
    match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(tls) => (
            tls.get_ref().remote_addr(),
            tls.peer_certs().and_then(|chain| chain.first().and_then(crate::tls::client_identity)),
        ),
        None => (None, None),
    }
}

/// Applies the method policy to the identified caller, and refuses writes in read-only mode
/// (after the caller is known to be allowed, so a stranger learns nothing from the answer).
/// Refusals of admin methods are audited.
#[derive(Clone)]
pub struct Authorize {
    pub audit: Audit,
    pub switches: Switches,
}

fn authorize(access: Access, principal: &Principal) -> Result<(), Error> {
    match (access, principal.role()) {
        (Access::Public, _) => Ok(()),
        (_, None) => Err(Error::Unauthenticated("this method needs an access token or API key")),
        (Access::Authenticated, Some(_)) => Ok(()),
        (Access::Role(required), Some(role)) if role.includes(required) => Ok(()),
        (Access::Role(required), Some(_)) => {
            Err(Error::PermissionDenied(format!("this method needs the {required} role")))
        }
    }
}

impl Gate for Authorize {
    async fn check<B: Send>(&self, request: &mut http::Request<B>) -> Result<Admit, Refusal> {
        let path = request.uri().path();
        let (Some(policy), Some(ctx)) = (policy::policy(path), request.extensions().get::<RequestContext>()) else {
            return Ok(Admit::default());
        };
        if let Err(e) = authorize(policy.access, &ctx.principal) {
            let status = Status::from(e);
            audit_admin_refusal(&self.audit, path, ctx, &status, "refused by policy").await;
            return Err(status.into());
        }
        if policy.writes
            && let Err(e) = self.switches.check_writable()
        {
            let status = Status::from(e);
            audit_admin_refusal(&self.audit, path, ctx, &status, "read-only mode").await;
            return Err(status.into());
        }
        Ok(Admit::default())
    }
}

/// Every AdminService call is audited, including those refused before reaching the service.
async fn audit_admin_refusal(audit: &Audit, path: &str, ctx: &RequestContext, status: &Status, why: &str) {
    if path.starts_with("/soko.admin.v1.AdminService/") {
        let action = path.trim_start_matches('/').replace('/', ".");
        audit.record(ctx, &action, "", code_name(status.code()), why).await;
    }
}
