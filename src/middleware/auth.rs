//! Identifies the caller (bearer JWT, API key or anonymous) and authorizes the call from the
//! method policy table, before any handler runs. A tower layer rather than a tonic interceptor
//! because API keys are checked against the database, and interceptors are synchronous.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use http::HeaderMap;
use tonic::{Status, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use super::request_log::RequestId;
use crate::{
    domain::{
        Error,
        accounts::Accounts,
        api_keys::ApiKeys,
        audit::Audit,
        auth::{Principal, RequestContext},
    },
    policy::{self, Access},
};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Everything the layer needs to identify callers.
#[derive(Clone)]
pub struct Authenticator {
    pub accounts: Accounts,
    pub api_keys: ApiKeys,
    pub audit: Audit,
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Authenticator,
}

impl AuthLayer {
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Authenticator,
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
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
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

impl Authenticator {
    async fn identify(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        match credentials(headers) {
            Credentials::None => Ok(Principal::Anonymous),
            Credentials::Bearer(token) => self.accounts.authenticate_access_token(token),
            Credentials::ApiKey(key) => self.api_keys.authenticate(key).await,
            Credentials::Malformed => Err(Error::Unauthenticated(
                "authorization must be `Bearer <access token>`",
            )),
        }
    }
}

fn authorize(access: Access, principal: &Principal) -> Result<(), Error> {
    match (access, principal.role()) {
        (Access::Public, _) => Ok(()),
        (_, None) => Err(Error::Unauthenticated(
            "this method needs an access token or API key",
        )),
        (Access::Authenticated, Some(_)) => Ok(()),
        (Access::Role(required), Some(role)) if role.includes(required) => Ok(()),
        (Access::Role(required), Some(_)) => Err(Error::PermissionDenied(format!(
            "this method needs the {required} role"
        ))),
    }
}

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if policy::is_exempt(&path) {
                return inner.call(request).await;
            }
            let client_ip = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .as_ref()
                .map(SocketAddr::ip)
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            let request_id = request
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            let outcome = match auth.identify(request.headers()).await {
                Ok(principal) => {
                    match policy::policy(&path).map(|p| authorize(p.access, &principal)) {
                        Some(Err(e)) => Err((e, principal)),
                        _ => Ok(principal),
                    }
                }
                Err(e) => Err((e, Principal::Anonymous)),
            };
            let principal = match outcome {
                Ok(principal) => principal,
                Err((e, principal)) => {
                    let status = Status::from(e);
                    if path.starts_with("/soko.admin.v1.AdminService/") {
                        let ctx = RequestContext {
                            principal,
                            client_ip,
                            request_id,
                        };
                        let action = path.trim_start_matches('/').replace('/', ".");
                        auth.audit
                            .record(
                                &ctx,
                                &action,
                                "",
                                &format!("{:?}", status.code()),
                                "refused",
                            )
                            .await;
                    }
                    return Ok(status.into_http());
                }
            };
            request.extensions_mut().insert(RequestContext {
                principal,
                client_ip,
                request_id,
            });
            inner.call(request).await
        })
    }
}
