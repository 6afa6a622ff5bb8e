//! AuthService: converts between the proto contract and the accounts domain.

use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use super::{context, timestamp};
use crate::{
    domain::{
        accounts::{Accounts, RoleInput, TokenPair, User},
        auth::Role,
        product::Timestamp,
    },
    proto::soko::auth::v1::{self as pb, auth_service_server::AuthService},
};

pub struct AuthApi {
    accounts: Accounts,
}

impl AuthApi {
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }
}

pub fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Buyer => pb::Role::Buyer,
        Role::Seller => pb::Role::Seller,
        Role::Admin => pb::Role::Admin,
    }
}

pub fn role_from_proto(raw: i32) -> RoleInput {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Unspecified) => RoleInput::Unspecified,
        Ok(pb::Role::Buyer) => RoleInput::Known(Role::Buyer),
        Ok(pb::Role::Seller) => RoleInput::Known(Role::Seller),
        Ok(pb::Role::Admin) => RoleInput::Known(Role::Admin),
        Err(_) => RoleInput::Unknown(raw),
    }
}

/// The full user, email included: only for the user themself and for admins.
pub fn user_to_proto(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email,
        role: role_to_proto(user.role).into(),
        create_time: timestamp(user.created_at),
    }
}

fn tokens_to_proto(pair: TokenPair) -> pb::TokenPair {
    let expires_micros = pair.access.expires_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64;
    pb::TokenPair {
        access_token: pair.access.token,
        access_token_expires_in: Some(prost_types::Duration { seconds: pair.access.ttl.as_secs() as i64, nanos: 0 }),
        access_token_expire_time: timestamp(Timestamp(expires_micros)),
        refresh_token: pair.refresh_token,
        refresh_token_expire_time: timestamp(pair.refresh_expires_at),
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let (user, tokens) = self.accounts.register(&ctx, &r.email, &r.password, role_from_proto(r.role)).await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_to_proto(user)),
            tokens: Some(tokens_to_proto(tokens)),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let (user, tokens) = self.accounts.login(&ctx, &r.email, &r.password).await?;
        Ok(Response::new(pb::LoginResponse { user: Some(user_to_proto(user)), tokens: Some(tokens_to_proto(tokens)) }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        let ctx = context(&request);
        let tokens = self.accounts.refresh(&ctx, &request.into_inner().refresh_token).await?;
        Ok(Response::new(pb::RefreshResponse { tokens: Some(tokens_to_proto(tokens)) }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let ctx = context(&request);
        self.accounts.logout(&ctx, &request.into_inner().refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn me(&self, request: Request<pb::MeRequest>) -> Result<Response<pb::MeResponse>, Status> {
        let user = self.accounts.me(&context(&request)).await?;
        Ok(Response::new(pb::MeResponse { user: Some(user_to_proto(user)) }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        self.accounts.change_password(&ctx, &r.current_password, &r.new_password).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}
