//! API keys for internal services: created and revoked by admins, stored as digests, shown once.

use super::{
    Error,
    auth::{ApiKeyId, Principal, Role, UserId},
    error::Violations,
    listing::{self, scope_digest},
    product::Timestamp,
};
use crate::{
    security::secrets,
    store::{Db, auth::ApiKeyRow},
};

const SECRET_PREFIX: &str = "soko_ak_";
/// Characters of the secret kept in clear, so operators can tell keys apart in listings.
const SHOWN_PREFIX_CHARS: usize = 12;
const MAX_LIFETIME_MICROS: i64 = 365 * 24 * 3600 * 1_000_000;
/// `last_use_time` is refreshed at most this often per key, to keep reads read-only.
const TOUCH_INTERVAL_MICROS: i64 = 60 * 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub display_name: String,
    pub secret_prefix: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = Error;
    fn try_from(r: ApiKeyRow) -> Result<Self, Error> {
        let unreadable = || Error::Unexpected(anyhow::anyhow!("unreadable api_keys row {}", r.id));
        Ok(Self {
            id: r.id.parse().map_err(|_| unreadable())?,
            user_id: r.user_id.parse().map_err(|_| unreadable())?,
            display_name: r.display_name,
            secret_prefix: r.secret_prefix,
            created_at: Timestamp(r.created_at),
            expires_at: r.expires_at.map(Timestamp),
            last_used_at: r.last_used_at.map(Timestamp),
            revoked_at: r.revoked_at.map(Timestamp),
        })
    }
}

#[derive(Clone)]
pub struct ApiKeys {
    db: Db,
}

impl ApiKeys {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Identifies the service presenting `secret`.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, Error> {
        const INVALID: &str = "API key is not valid";
        if secret.len() > 256 || !secret.starts_with(SECRET_PREFIX) {
            return Err(Error::Unauthenticated(INVALID));
        }
        let (row, role) =
            self.db.api_key_by_hash(&secrets::digest(secret)).await?.ok_or(Error::Unauthenticated(INVALID))?;
        let now = Timestamp::now().0;
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Unauthenticated(INVALID));
        }
        if row.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL_MICROS) {
            let (db, id) = (self.db.clone(), row.id.clone());
            tokio::spawn(async move {
                if let Err(e) = db.touch_api_key(&id, now).await {
                    tracing::debug!(error = %e, "could not record API key use");
                }
            });
        }
        let key = ApiKey::try_from(row)?;
        let role = Role::parse(&role).ok_or_else(|| Error::Unexpected(anyhow::anyhow!("unreadable role `{role}`")))?;
        Ok(Principal::ApiKey { key_id: key.id, user_id: key.user_id, role })
    }

    /// Creates a key acting as `user_id`; returns it and its secret, which is never shown again.
    pub async fn create(
        &self,
        user_id: &str,
        display_name: &str,
        expire_time: Option<Timestamp>,
    ) -> Result<(ApiKey, String), Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", user_id.parse::<UserId>());
        let name = display_name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            v.check::<()>("display_name", Err("must have 1–100 characters without control characters".into()));
        }
        let now = Timestamp::now();
        if let Some(t) = expire_time {
            if t <= now {
                v.check::<()>("expire_time", Err("must be in the future".into()));
            } else if t.0 - now.0 > MAX_LIFETIME_MICROS {
                v.check::<()>("expire_time", Err("must be at most 365 days ahead".into()));
            }
        }
        v.finish()?;
        let user = user.expect("checked above");
        if self.db.user_by_id(&user.to_string()).await?.is_none() {
            return Err(Error::NotFound { resource: "user", id: user.to_string() });
        }
        let secret = secrets::generate(SECRET_PREFIX);
        let key = ApiKey {
            id: ApiKeyId::generate(),
            user_id: user,
            display_name: name.to_owned(),
            secret_prefix: secret.chars().take(SHOWN_PREFIX_CHARS).collect(),
            created_at: now,
            expires_at: expire_time,
            last_used_at: None,
            revoked_at: None,
        };
        self.db
            .insert_api_key(&ApiKeyRow {
                id: key.id.to_string(),
                user_id: user.to_string(),
                display_name: key.display_name.clone(),
                secret_prefix: key.secret_prefix.clone(),
                secret_hash: secrets::digest(&secret),
                created_at: now.0,
                expires_at: expire_time.map(|t| t.0),
                last_used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok((key, secret))
    }

    pub async fn revoke(&self, id: &str) -> Result<ApiKey, Error> {
        let id: ApiKeyId = id.parse().map_err(|why| Error::invalid("id", why))?;
        let row = self.db.revoke_api_key(&id.to_string(), Timestamp::now().0).await?;
        ApiKey::try_from(row.ok_or_else(|| Error::NotFound { resource: "api key", id: id.to_string() })?)
    }

    pub async fn list(
        &self,
        user_id: &str,
        show_inactive: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ApiKey>, Option<String>), Error> {
        let mut v = Violations::default();
        let user = (!user_id.is_empty()).then(|| v.check("user_id", user_id.parse::<UserId>())).flatten();
        let limit = v.check("page_size", listing::page_size(page_size));
        v.finish()?;
        let limit = limit.expect("checked above");
        let scope = scope_digest(&format!("api_keys|{user_id}|{show_inactive}"));
        let after = match page_token {
            "" => None,
            token => Some(listing::decode_cursor(token, &scope).map_err(|why| Error::invalid("page_token", why))?),
        };
        let active_at = (!show_inactive).then(|| Timestamp::now().0);
        let user = user.map(|u| u.to_string());
        let mut rows = self.db.list_api_keys(user.as_deref(), active_at, after, limit as i64 + 1).await?;
        let next = listing::next_page(&mut rows, limit, &scope, |last| (last.created_at, last.id.clone()));
        Ok((rows.into_iter().map(ApiKey::try_from).collect::<Result<_, _>>()?, next))
    }
}
