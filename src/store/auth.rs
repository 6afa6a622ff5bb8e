//! Accounts, sessions, refresh tokens, API keys and the audit log.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{
    Db, StoreError,
    schema::{api_keys, audit_events, refresh_tokens, session_events, sessions, users},
    with_conn, with_transaction,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub display_name: String,
    pub secret_prefix: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    pub id: i64,
    pub event_time: i64,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub status_code: String,
    pub reason: String,
    pub client_ip: String,
    pub request_id: String,
    /// JSON object of action-specific facts.
    pub details: String,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_events)]
pub struct NewAuditRow {
    pub event_time: i64,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub status_code: String,
    pub reason: String,
    pub client_ip: String,
    pub request_id: String,
    pub details: String,
}

#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow<'a> {
    id: &'a str,
    user_id: &'a str,
    created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = refresh_tokens)]
struct RefreshTokenRow<'a> {
    token_hash: &'a str,
    session_id: &'a str,
    created_at: i64,
    expires_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = session_events)]
struct NewSessionEvent<'a> {
    event_time: i64,
    session_id: Option<&'a str>,
    user_id: Option<&'a str>,
}

/// Something every replica must forget about sessions: `session_id` ended, or everything about
/// `user_id` changed.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = session_events)]
pub struct SessionEventRow {
    pub id: i64,
    pub event_time: i64,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

/// Records a session event in the caller's transaction, so it commits with the change it names.
macro_rules! session_event {
    ($conn:expr, $now:expr, session = $session:expr) => {
        diesel::insert_into(session_events::table)
            .values(NewSessionEvent { event_time: $now, session_id: Some($session), user_id: None })
            .execute($conn)
            .await?
    };
    ($conn:expr, $now:expr, user = $user:expr) => {
        diesel::insert_into(session_events::table)
            .values(NewSessionEvent { event_time: $now, session_id: None, user_id: Some($user) })
            .execute($conn)
            .await?
    };
}

/// A new refresh token to store: its digest and expiry.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: String,
    pub expires_at: i64,
}

/// What presenting a refresh token led to. Reuse is an outcome, not an error, because the
/// family's revocation must commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated {
        user: Box<UserRowView>,
        session_id: String,
    },
    Unknown,
    Expired,
    Revoked,
    /// The token had been used before: its family is now revoked.
    Reused {
        user_id: String,
        session_id: String,
    },
}

/// The parts of a user row callers of rotation need (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRowView {
    pub id: String,
    pub role: String,
}

/// Keyset position for newest-first listings: (time, id).
pub type Position = Option<(i64, String)>;

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub principal: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
}

impl Db {
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_user(&self, row: &UserRow) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::insert_into(users::table).values(row).execute(conn).await?;
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            users::table.filter(users::email.eq(email)).select(UserRow::as_select()).first(conn).await.optional()?
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            users::table.find(id).select(UserRow::as_select()).first(conn).await.optional()?
        }))
    }

    /// Users newest first, optionally only those whose email contains `email` or of one role.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn list_users(
        &self,
        email: Option<&str>,
        role: Option<&str>,
        after: Position,
        limit: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        let pattern = email.map(|e| format!("%{}%", e.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        Ok(with_conn!(self, |conn| {
            let mut q = users::table.select(UserRow::as_select()).into_boxed();
            if let Some(p) = &pattern {
                q = q.filter(users::email.like(p).escape('\\'));
            }
            if let Some(r) = role {
                q = q.filter(users::role.eq(r));
            }
            if let Some((t, id)) = &after {
                q = q.filter(users::created_at.lt(*t).or(users::created_at.eq(*t).and(users::id.lt(id))));
            }
            q.order((users::created_at.desc(), users::id.desc())).limit(limit).load(conn).await?
        }))
    }

    /// Starts a session (refresh-token family) with its first refresh token.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        token: &NewRefreshToken,
        now: i64,
    ) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            diesel::insert_into(sessions::table)
                .values(SessionRow { id: session_id, user_id, created_at: now })
                .execute(conn)
                .await?;
            diesel::insert_into(refresh_tokens::table)
                .values(RefreshTokenRow {
                    token_hash: &token.hash,
                    session_id,
                    created_at: now,
                    expires_at: token.expires_at,
                })
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Uses up the refresh token with digest `hash` and stores `next` in its family, atomically.
    /// Of two concurrent rotations of one token exactly one wins; the other sees reuse.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn rotate_refresh_token(
        &self,
        hash: &str,
        next: &NewRefreshToken,
        now: i64,
    ) -> Result<RotateOutcome, StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            let token: Option<(String, i64, Option<i64>)> = refresh_tokens::table
                .find(hash)
                .select((refresh_tokens::session_id, refresh_tokens::expires_at, refresh_tokens::used_at))
                .first(conn)
                .await
                .optional()?;
            let Some((session_id, expires_at, used_at)) = token else {
                return Ok(RotateOutcome::Unknown);
            };
            let (user_id, revoked_at): (String, Option<i64>) =
                sessions::table.find(&session_id).select((sessions::user_id, sessions::revoked_at)).first(conn).await?;
            if revoked_at.is_some() {
                return Ok(RotateOutcome::Revoked);
            }
            let claimed = if used_at.is_none() {
                diesel::update(refresh_tokens::table.find(hash).filter(refresh_tokens::used_at.is_null()))
                    .set(refresh_tokens::used_at.eq(Some(now)))
                    .execute(conn)
                    .await?
            } else {
                0
            };
            if claimed == 0 {
                // Used before, or by a concurrent call that won: treat as theft (RFC 9700 §4.14.2).
                diesel::update(sessions::table.find(&session_id).filter(sessions::revoked_at.is_null()))
                    .set(sessions::revoked_at.eq(Some(now)))
                    .execute(conn)
                    .await?;
                session_event!(conn, now, session = &session_id);
                return Ok(RotateOutcome::Reused { user_id, session_id });
            }
            if expires_at <= now {
                return Ok(RotateOutcome::Expired);
            }
            diesel::insert_into(refresh_tokens::table)
                .values(RefreshTokenRow {
                    token_hash: &next.hash,
                    session_id: &session_id,
                    created_at: now,
                    expires_at: next.expires_at,
                })
                .execute(conn)
                .await?;
            let role: String = users::table.find(&user_id).select(users::role).first(conn).await?;
            Ok(RotateOutcome::Rotated { user: Box::new(UserRowView { id: user_id, role }), session_id })
        })
    }

    /// Revokes the family of the refresh token with digest `hash`. `None` when no such token was
    /// ever issued.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn revoke_session_of_token(&self, hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            let session: Option<String> =
                refresh_tokens::table.find(hash).select(refresh_tokens::session_id).first(conn).await.optional()?;
            if let Some(session_id) = &session {
                diesel::update(sessions::table.find(session_id).filter(sessions::revoked_at.is_null()))
                    .set(sessions::revoked_at.eq(Some(now)))
                    .execute(conn)
                    .await?;
                session_event!(conn, now, session = session_id);
            }
            Ok(session)
        })
    }

    /// The user behind a session, with the user's current role and whether the session is
    /// revoked. `None` when no such session exists or its user is gone.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn session_owner(&self, session_id: &str) -> Result<Option<(String, String, bool)>, StoreError> {
        let row: Option<(String, String, Option<i64>)> = with_conn!(self, |conn| {
            sessions::table
                .inner_join(users::table)
                .filter(sessions::id.eq(session_id))
                .select((sessions::user_id, users::role, sessions::revoked_at))
                .first(conn)
                .await
                .optional()?
        });
        Ok(row.map(|(user, role, revoked_at)| (user, role, revoked_at.is_some())))
    }

    /// Session events written at or after `since` (µs), oldest first, at most `limit`.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn session_events_since(&self, since: i64, limit: i64) -> Result<Vec<SessionEventRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            session_events::table
                .filter(session_events::event_time.ge(since))
                .order(session_events::id.asc())
                .limit(limit)
                .select(SessionEventRow::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Deletes session events written before `before` (µs).
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn prune_session_events(&self, before: i64) -> Result<usize, StoreError> {
        let _guard = self.write_guard().await;
        Ok(with_conn!(self, |conn| {
            diesel::delete(session_events::table.filter(session_events::event_time.lt(before))).execute(conn).await?
        }))
    }

    /// Sets a new password hash and revokes every session of the user except `keep_session`.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            diesel::update(users::table.find(user_id))
                .set((users::password_hash.eq(password_hash), users::updated_at.eq(now)))
                .execute(conn)
                .await?;
            let mut others = diesel::update(sessions::table)
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::revoked_at.is_null())
                .into_boxed();
            if let Some(keep) = keep_session {
                others = others.filter(sessions::id.ne(keep));
            }
            others.set(sessions::revoked_at.eq(Some(now))).execute(conn).await?;
            session_event!(conn, now, user = user_id);
            Ok(())
        })
    }

    /// Changes a user's role unless that would leave no admin. Returns the old role, or `None`
    /// when the user doesn't exist.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn set_role(
        &self,
        user_id: &str,
        role: &str,
        now: i64,
    ) -> Result<Result<Option<String>, LastAdmin>, StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            let old: Option<String> = users::table.find(user_id).select(users::role).first(conn).await.optional()?;
            let Some(old) = old else { return Ok(Ok(None)) };
            if old == "admin" && role != "admin" {
                let admins: i64 = users::table.filter(users::role.eq("admin")).count().get_result(conn).await?;
                if admins <= 1 {
                    return Ok(Err(LastAdmin));
                }
            }
            diesel::update(users::table.find(user_id))
                .set((users::role.eq(role), users::updated_at.eq(now)))
                .execute(conn)
                .await?;
            session_event!(conn, now, user = user_id);
            Ok(Ok(Some(old)))
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_api_key(&self, row: &ApiKeyRow) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::insert_into(api_keys::table).values(row).execute(conn).await?;
        });
        Ok(())
    }

    /// The key with this secret digest and its owner's current role.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<(ApiKeyRow, String)>, StoreError> {
        Ok(with_conn!(self, |conn| {
            api_keys::table
                .inner_join(users::table)
                .filter(api_keys::secret_hash.eq(hash))
                .select((ApiKeyRow::as_select(), users::role))
                .first(conn)
                .await
                .optional()?
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        with_conn!(self, |conn| {
            diesel::update(api_keys::table.find(id)).set(api_keys::last_used_at.eq(Some(now))).execute(conn).await?;
        });
        Ok(())
    }

    /// Revokes a key (idempotently) and returns it; `None` when unknown.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<Option<ApiKeyRow>, StoreError> {
        let _guard = self.write_guard().await;
        with_transaction!(self, StoreError, |conn| {
            diesel::update(api_keys::table.find(id).filter(api_keys::revoked_at.is_null()))
                .set(api_keys::revoked_at.eq(Some(now)))
                .execute(conn)
                .await?;
            Ok(api_keys::table.find(id).select(ApiKeyRow::as_select()).first(conn).await.optional()?)
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn list_api_keys(
        &self,
        user_id: Option<&str>,
        active_at: Option<i64>,
        after: Position,
        limit: i64,
    ) -> Result<Vec<ApiKeyRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            let mut q = api_keys::table.select(ApiKeyRow::as_select()).into_boxed();
            if let Some(u) = user_id {
                q = q.filter(api_keys::user_id.eq(u));
            }
            if let Some(now) = active_at {
                q = q
                    .filter(api_keys::revoked_at.is_null())
                    .filter(api_keys::expires_at.is_null().or(api_keys::expires_at.gt(now)));
            }
            if let Some((t, id)) = &after {
                q = q.filter(api_keys::created_at.lt(*t).or(api_keys::created_at.eq(*t).and(api_keys::id.lt(id))));
            }
            q.order((api_keys::created_at.desc(), api_keys::id.desc())).limit(limit).load(conn).await?
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_audit_event(&self, row: &NewAuditRow) -> Result<(), StoreError> {
        let _guard = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::insert_into(audit_events::table).values(row).execute(conn).await?;
        });
        Ok(())
    }

    /// Audit events newest first.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(with_conn!(self, |conn| {
            let mut q = audit_events::table.select(AuditRow::as_select()).into_boxed();
            if let Some(a) = &filter.action {
                q = q.filter(audit_events::action.eq(a));
            }
            if let Some(p) = &filter.principal {
                q = q.filter(audit_events::principal.eq(p));
            }
            if let Some(t) = filter.start_time {
                q = q.filter(audit_events::event_time.ge(t));
            }
            if let Some(t) = filter.end_time {
                q = q.filter(audit_events::event_time.lt(t));
            }
            if let Some((t, id)) = after {
                q = q.filter(
                    audit_events::event_time.lt(t).or(audit_events::event_time.eq(t).and(audit_events::id.lt(id))),
                );
            }
            q.order((audit_events::event_time.desc(), audit_events::id.desc())).limit(limit).load(conn).await?
        }))
    }
}

/// Refused: the change would leave the marketplace without an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastAdmin;
