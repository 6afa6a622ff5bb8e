//! Accounts and sessions: register, log in, rotate refresh tokens, log out, change passwords,
//! and the admin operations on users.

use std::{sync::Arc, time::Duration};

use super::{
    Error,
    audit::{Audit, action},
    auth::{self, Principal, RequestContext, Role, SessionId, UserId},
    error::Violations,
    listing::{self, scope_digest},
    product::Timestamp,
    sessions::Sessions,
};
use crate::{
    security::{
        jwt::{AccessToken, TokenError, TokenKeys},
        password::{PasswordError, PasswordHasher},
        secrets,
        throttle::{BackoffPolicy, LoginThrottle},
    },
    store::{
        Db, StoreError,
        auth::{NewRefreshToken, RotateOutcome, UserRow},
    },
};

/// Per account: five free failures, then 1 s, 2 s, 4 s … up to 15 minutes between attempts.
const ACCOUNT_BACKOFF: BackoffPolicy =
    BackoffPolicy { free_failures: 5, base: Duration::from_secs(1), max: Duration::from_secs(15 * 60) };
/// Per client IP: more slack (offices and carrier NAT share addresses), same growth.
const IP_BACKOFF: BackoffPolicy =
    BackoffPolicy { free_failures: 20, base: Duration::from_secs(1), max: Duration::from_secs(15 * 60) };
const BAD_CREDENTIALS: &str = "email or password is incorrect";
const BAD_REFRESH: &str = "refresh token is not valid; log in again";
const REFRESH_TOKEN_PREFIX: &str = "soko_rt_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub role: Role,
    pub created_at: Timestamp,
}

impl TryFrom<UserRow> for User {
    type Error = Error;
    fn try_from(row: UserRow) -> Result<Self, Error> {
        let unreadable = |what: &str| Error::Unexpected(anyhow::anyhow!("unreadable users.{what} for {}", row.id));
        Ok(Self {
            id: row.id.parse().map_err(|_| unreadable("id"))?,
            role: Role::parse(&row.role).ok_or_else(|| unreadable("role"))?,
            email: row.email,
            created_at: Timestamp(row.created_at),
        })
    }
}

/// The credentials of one session.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access: AccessToken,
    pub refresh_token: String,
    pub refresh_expires_at: Timestamp,
}

/// A role as a client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleInput {
    Unspecified,
    Known(Role),
    Unknown(i32),
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    hasher: PasswordHasher,
    tokens: TokenKeys,
    refresh_ttl: Duration,
    throttle: Arc<LoginThrottle>,
    audit: Audit,
    sessions: Sessions,
}

fn password_error(e: PasswordError) -> Error {
    match e {
        PasswordError::Busy { retry_after } => Error::Overloaded { work: "sign-ins", retry_after },
        other => Error::Unexpected(anyhow::Error::new(other)),
    }
}

fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::Expired => Error::Unauthenticated("access token has expired; refresh it"),
        _ => Error::Unauthenticated("access token is not valid"),
    }
}

impl Accounts {
    pub fn new(db: Db, hasher: PasswordHasher, tokens: TokenKeys, refresh_ttl: Duration, audit: Audit) -> Self {
        let sessions = Sessions::new(db.clone());
        Self { db, hasher, tokens, refresh_ttl, throttle: Arc::new(LoginThrottle::default()), audit, sessions }
    }

    /// The live-session memory, whose follower the server runs.
    pub fn sessions(&self) -> Sessions {
        self.sessions.clone()
    }

    /// Identifies the bearer of an access token: the signature and expiry from the token, the
    /// session's liveness and the user's current role from [`Sessions`], so that logout, a
    /// password change or a demotion takes effect within a poll interval, not at expiry.
    pub async fn authenticate_access_token(&self, token: &str) -> Result<Principal, Error> {
        let claims = self.tokens.verify(token).map_err(token_error)?;
        let invalid = || Error::Unauthenticated("access token is not valid");
        let user_id = claims.sub.parse().map_err(|_| invalid())?;
        let session_id = claims.sid.parse().map_err(|_| invalid())?;
        Role::parse(&claims.role).ok_or_else(invalid)?;
        self.sessions.principal(user_id, session_id).await
    }

    pub async fn register(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: &str,
        role: RoleInput,
    ) -> Result<(User, TokenPair), Error> {
        let mut v = Violations::default();
        let email = v.check("email", auth::parse_email(email));
        v.check("password", auth::check_password(password));
        let role = match role {
            RoleInput::Unspecified | RoleInput::Known(Role::Buyer) => Some(Role::Buyer),
            RoleInput::Known(Role::Seller) => Some(Role::Seller),
            RoleInput::Known(Role::Admin) => v.check("role", Err("must be ROLE_BUYER or ROLE_SELLER".into())),
            RoleInput::Unknown(n) => v.check("role", Err(format!("unknown role {n}"))),
        };
        v.finish()?;
        let (Some(email), Some(role)) = (email, role) else { unreachable!("checked above") };
        let user = self.insert_user(&email, password, role).await?;
        let (pair, _) = self.start_session(&user).await?;
        self.audit.record(ctx, action::REGISTERED, &format!("users/{}", user.id), "OK", role.as_str()).await;
        Ok((user, pair))
    }

    /// Creates an account with any role, for the operator's CLI (the first admin comes from here).
    pub async fn create_user(&self, email: &str, password: &str, role: Role) -> Result<User, Error> {
        let mut v = Violations::default();
        let email = v.check("email", auth::parse_email(email));
        v.check("password", auth::check_password(password));
        v.finish()?;
        let user = self.insert_user(&email.expect("checked above"), password, role).await?;
        self.audit
            .record(
                &RequestContext::system(),
                action::USER_CREATED_BY_CLI,
                &format!("users/{}", user.id),
                "OK",
                role.as_str(),
            )
            .await;
        Ok(user)
    }

    async fn insert_user(&self, email: &str, password: &str, role: Role) -> Result<User, Error> {
        let password_hash = self.hasher.hash(password).await.map_err(password_error)?;
        let now = Timestamp::now();
        let user = User { id: UserId::generate(), email: email.to_owned(), role, created_at: now };
        let row = UserRow {
            id: user.id.to_string(),
            email: user.email.clone(),
            password_hash,
            role: role.as_str().to_owned(),
            created_at: now.0,
            updated_at: now.0,
        };
        match self.db.insert_user(&row).await {
            Ok(()) => Ok(user),
            Err(StoreError::UniqueViolation(_)) => Err(Error::AlreadyExists { resource: "user", id: email.to_owned() }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn login(&self, ctx: &RequestContext, email: &str, password: &str) -> Result<(User, TokenPair), Error> {
        let mut v = Violations::default();
        let email = v.check("email", auth::parse_email(email));
        if password.is_empty() {
            v.check::<()>("password", Err("is required".into()));
        }
        v.finish()?;
        let email = email.expect("checked above");
        let account_key = format!("account:{email}");
        let ip_key = format!("ip:{}", ctx.client_ip);
        self.check_throttle(&[&account_key, &ip_key])?;
        let row = self.db.user_by_email(&email).await?;
        let verified = match &row {
            Some(row) => self.hasher.verify(password, &row.password_hash).await.map_err(password_error)?,
            None => {
                self.hasher.verify_dummy(password).await.map_err(password_error)?;
                false
            }
        };
        let Some(row) = row.filter(|_| verified) else {
            self.throttle.record_failure(&account_key, ACCOUNT_BACKOFF);
            self.throttle.record_failure(&ip_key, IP_BACKOFF);
            self.audit
                .record_with(ctx, action::LOGIN_FAILED, "", "UNAUTHENTICATED", "", &[("email", email.clone())])
                .await;
            return Err(Error::Unauthenticated(BAD_CREDENTIALS));
        };
        self.throttle.record_success(&account_key);
        let user = User::try_from(row)?;
        let (pair, session_id) = self.start_session(&user).await?;
        let principal = Principal::User { user_id: user.id, role: user.role, session_id };
        let ctx = RequestContext { principal, ..ctx.clone() };
        self.audit.record(&ctx, action::LOGIN_SUCCEEDED, &format!("users/{}", user.id), "OK", "").await;
        Ok((user, pair))
    }

    /// RESOURCE_EXHAUSTED, with the wait, while any of `keys` is backing off after failures.
    fn check_throttle(&self, keys: &[&str]) -> Result<(), Error> {
        for key in keys {
            if let Err(wait) = self.throttle.check(key) {
                return Err(Error::ResourceExhausted {
                    message: "too many failed password attempts; wait before retrying".into(),
                    retry_after: wait,
                });
            }
        }
        Ok(())
    }

    fn new_refresh_token(&self) -> (String, NewRefreshToken, Timestamp) {
        let token = secrets::generate(REFRESH_TOKEN_PREFIX);
        let expires_at = Timestamp(Timestamp::now().0 + self.refresh_ttl.as_micros() as i64);
        let stored = NewRefreshToken { hash: secrets::digest(&token), expires_at: expires_at.0 };
        (token, stored, expires_at)
    }

    async fn start_session(&self, user: &User) -> Result<(TokenPair, SessionId), Error> {
        let session_id = SessionId::generate();
        let (refresh_token, stored, refresh_expires_at) = self.new_refresh_token();
        self.db.create_session(&session_id.to_string(), &user.id.to_string(), &stored, Timestamp::now().0).await?;
        let access = self
            .tokens
            .issue(&user.id.to_string(), user.role.as_str(), &session_id.to_string())
            .map_err(|e| Error::Unexpected(anyhow::Error::new(e)))?;
        Ok((TokenPair { access, refresh_token, refresh_expires_at }, session_id))
    }

    pub async fn refresh(&self, ctx: &RequestContext, refresh_token: &str) -> Result<TokenPair, Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        if refresh_token.len() > 256 {
            return Err(Error::Unauthenticated(BAD_REFRESH));
        }
        let (next_token, stored, refresh_expires_at) = self.new_refresh_token();
        let outcome =
            self.db.rotate_refresh_token(&secrets::digest(refresh_token), &stored, Timestamp::now().0).await?;
        match outcome {
            RotateOutcome::Rotated { user, session_id } => {
                let access = self
                    .tokens
                    .issue(&user.id, &user.role, &session_id)
                    .map_err(|e| Error::Unexpected(anyhow::Error::new(e)))?;
                Ok(TokenPair { access, refresh_token: next_token, refresh_expires_at })
            }
            RotateOutcome::Reused { user_id, session_id } => {
                if let Ok(session) = session_id.parse() {
                    self.sessions.forget_session(session);
                }
                tracing::warn!(user_id, session_id, "refresh token reuse: session revoked");
                self.audit
                    .record_with(
                        ctx,
                        action::REFRESH_REUSE_DETECTED,
                        &format!("sessions/{session_id}"),
                        "UNAUTHENTICATED",
                        "refresh token presented twice; session revoked",
                        &[("user_id", user_id.clone())],
                    )
                    .await;
                Err(Error::Unauthenticated(BAD_REFRESH))
            }
            RotateOutcome::Unknown | RotateOutcome::Expired | RotateOutcome::Revoked => {
                Err(Error::Unauthenticated(BAD_REFRESH))
            }
        }
    }

    pub async fn logout(&self, ctx: &RequestContext, refresh_token: &str) -> Result<(), Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        if refresh_token.len() > 256 {
            return Err(Error::Unauthenticated(BAD_REFRESH));
        }
        let session = self.db.revoke_session_of_token(&secrets::digest(refresh_token), Timestamp::now().0).await?;
        let session = session.ok_or(Error::Unauthenticated(BAD_REFRESH))?;
        if let Ok(id) = session.parse() {
            self.sessions.forget_session(id);
        }
        self.audit.record(ctx, action::LOGGED_OUT, &format!("sessions/{session}"), "OK", "").await;
        Ok(())
    }

    /// Identifies an internal service by the account its verified client certificate names (the
    /// certificate's email or DNS name, or its common name), with the account's current role: a
    /// demoted account loses its rights at once, whatever the certificate says.
    pub async fn authenticate_certificate(&self, identity: &str) -> Result<Principal, Error> {
        let row = self
            .db
            .user_by_email(&auth::fold(identity))
            .await?
            .ok_or(Error::Unauthenticated("the client certificate names no Soko account"))?;
        let user = User::try_from(row)?;
        Ok(Principal::Certificate { user_id: user.id, role: user.role })
    }

    pub async fn me(&self, ctx: &RequestContext) -> Result<User, Error> {
        let user_id = ctx.principal.user_id().ok_or(Error::Unauthenticated("sign in first"))?;
        let row = self.db.user_by_id(&user_id.to_string()).await?;
        User::try_from(row.ok_or(Error::Unauthenticated("the account no longer exists"))?)
    }

    pub async fn change_password(&self, ctx: &RequestContext, current: &str, new: &str) -> Result<(), Error> {
        let (user_id, session_id) = match &ctx.principal {
            Principal::User { user_id, session_id, .. } => (*user_id, *session_id),
            Principal::ApiKey { .. } | Principal::Certificate { .. } => {
                return Err(Error::PermissionDenied("services cannot change passwords".into()));
            }
            Principal::Anonymous | Principal::System => {
                return Err(Error::Unauthenticated("sign in first"));
            }
        };
        let mut v = Violations::default();
        if current.is_empty() {
            v.check::<()>("current_password", Err("is required".into()));
        }
        v.check("new_password", auth::check_password(new));
        if !current.is_empty() && current == new {
            v.check::<()>("new_password", Err("must differ from the current password".into()));
        }
        v.finish()?;
        let row = self
            .db
            .user_by_id(&user_id.to_string())
            .await?
            .ok_or(Error::Unauthenticated("the account no longer exists"))?;
        // The current password is a credential like Login's, guessed with a stolen access token
        // instead of an email: the same per-account and per-IP backoff applies, shared with Login.
        let account_key = format!("account:{}", row.email);
        let ip_key = format!("ip:{}", ctx.client_ip);
        self.check_throttle(&[&account_key, &ip_key])?;
        if !self.hasher.verify(current, &row.password_hash).await.map_err(password_error)? {
            self.throttle.record_failure(&account_key, ACCOUNT_BACKOFF);
            self.throttle.record_failure(&ip_key, IP_BACKOFF);
            self.audit
                .record(ctx, action::PASSWORD_CHANGE_FAILED, &format!("users/{user_id}"), "INVALID_ARGUMENT", "")
                .await;
            return Err(Error::invalid("current_password", "is incorrect"));
        }
        self.throttle.record_success(&account_key);
        let hash = self.hasher.hash(new).await.map_err(password_error)?;
        self.db.change_password(&row.id, &hash, Some(&session_id.to_string()), Timestamp::now().0).await?;
        self.sessions.forget_user(user_id);
        self.audit
            .record(ctx, action::PASSWORD_CHANGED, &format!("users/{user_id}"), "OK", "other sessions revoked")
            .await;
        Ok(())
    }

    /// Changes a user's role (admin). Returns the user after the change and the old role.
    pub async fn set_role(&self, ctx: &RequestContext, user_id: &str, role: RoleInput) -> Result<(User, Role), Error> {
        let mut v = Violations::default();
        let target = v.check("user_id", user_id.parse::<UserId>());
        let role = match role {
            RoleInput::Known(r) => Some(r),
            RoleInput::Unspecified => v.check("role", Err("is required".into())),
            RoleInput::Unknown(n) => v.check("role", Err(format!("unknown role {n}"))),
        };
        v.finish()?;
        let (Some(target), Some(role)) = (target, role) else { unreachable!("checked above") };
        if ctx.principal.user_id() == Some(target) {
            return Err(Error::FailedPrecondition("admins cannot change their own role".into()));
        }
        let old = self
            .db
            .set_role(&target.to_string(), role.as_str(), Timestamp::now().0)
            .await?
            .map_err(|_| Error::FailedPrecondition("the last admin cannot be demoted".into()))?
            .ok_or_else(|| Error::NotFound { resource: "user", id: target.to_string() })?;
        self.sessions.forget_user(target);
        let old = Role::parse(&old).ok_or_else(|| Error::Unexpected(anyhow::anyhow!("unreadable role `{old}`")))?;
        let row = self.db.user_by_id(&target.to_string()).await?;
        let user = User::try_from(row.ok_or_else(|| Error::NotFound { resource: "user", id: target.to_string() })?)?;
        Ok((user, old))
    }

    /// One page of users, newest first.
    pub async fn list_users(
        &self,
        email: &str,
        role: RoleInput,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<User>, Option<String>), Error> {
        let mut v = Violations::default();
        let limit = v.check("page_size", listing::page_size(page_size));
        let role = match role {
            RoleInput::Unspecified => None,
            RoleInput::Known(r) => Some(r),
            RoleInput::Unknown(n) => v.check("role", Err(format!("unknown role {n}"))),
        };
        v.finish()?;
        let limit = limit.expect("checked above");
        let email = auth::fold(email.trim());
        let scope = scope_digest(&format!("users|{email}|{role:?}"));
        let after = match page_token {
            "" => None,
            token => Some(listing::decode_cursor(token, &scope).map_err(|why| Error::invalid("page_token", why))?),
        };
        let filter = (!email.is_empty()).then_some(email.as_str());
        let mut rows = self.db.list_users(filter, role.map(Role::as_str), after, limit as i64 + 1).await?;
        let next = listing::next_page(&mut rows, limit, &scope, |last| (last.created_at, last.id.clone()));
        Ok((rows.into_iter().map(User::try_from).collect::<Result<_, _>>()?, next))
    }
}
