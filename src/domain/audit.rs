//! The audit log: who did what, to what, from where, with which outcome. Written for security
//! events (logins, token reuse, role and key changes) and every admin call.

use std::collections::BTreeMap;

use super::{
    Error,
    auth::RequestContext,
    listing::{self, scope_digest},
    product::Timestamp,
};
use crate::store::{
    Db,
    auth::{AuditFilter, AuditRow, NewAuditRow},
};

/// Named actions for events that are not themselves an rpc.
pub mod action {
    pub const LOGIN_SUCCEEDED: &str = "auth.login.succeeded";
    pub const LOGIN_FAILED: &str = "auth.login.failed";
    pub const REGISTERED: &str = "auth.registered";
    pub const REFRESH_REUSE_DETECTED: &str = "auth.refresh.reuse_detected";
    pub const LOGGED_OUT: &str = "auth.logout";
    pub const PASSWORD_CHANGED: &str = "auth.password.changed";
    pub const PASSWORD_CHANGE_FAILED: &str = "auth.password.change_failed";
    pub const USER_CREATED_BY_CLI: &str = "cli.user.created";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub time: Timestamp,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub status_code: String,
    pub reason: String,
    pub client_ip: String,
    pub request_id: String,
    pub details: BTreeMap<String, String>,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            time: Timestamp(r.event_time),
            principal: r.principal,
            action: r.action,
            resource: r.resource,
            status_code: r.status_code,
            reason: r.reason,
            client_ip: r.client_ip,
            request_id: r.request_id,
            details: serde_json::from_str(&r.details).unwrap_or_default(),
        }
    }
}

#[derive(Clone)]
pub struct Audit {
    db: Db,
}

/// Free-text `reason` fields are capped so the log can't be used to store arbitrary data.
pub const MAX_REASON_CHARS: usize = 500;

/// Refuses a `reason` over the documented limit. Refusing rather than cutting it keeps the audit
/// log from silently recording something other than what the operator wrote.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(Error::invalid("reason", format!("must have at most {MAX_REASON_CHARS} characters (has {n})")));
    }
    Ok(())
}

impl Audit {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records an event. A failure to audit is logged, not returned: the action it describes has
    /// already happened (or been refused) and the caller's answer must not change because of it.
    pub async fn record(&self, ctx: &RequestContext, action: &str, resource: &str, status_code: &str, reason: &str) {
        self.record_with(ctx, action, resource, status_code, reason, &[]).await;
    }

    /// Records an event with action-specific facts (never secrets).
    pub async fn record_with(
        &self,
        ctx: &RequestContext,
        action: &str,
        resource: &str,
        status_code: &str,
        reason: &str,
        details: &[(&str, String)],
    ) {
        let details: BTreeMap<&str, &String> = details.iter().map(|(k, v)| (*k, v)).collect();
        let row = NewAuditRow {
            event_time: Timestamp::now().0,
            principal: ctx.principal.audit_name(),
            action: action.to_owned(),
            resource: resource.chars().take(300).collect(),
            status_code: status_code.to_owned(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            client_ip: ctx.client_ip.clone(),
            request_id: ctx.request_id.chars().take(128).collect(),
            details: serde_json::to_string(&details).unwrap_or_else(|_| "{}".into()),
        };
        if let Err(e) = self.db.insert_audit_event(&row).await {
            tracing::error!(error = %e, action, resource, "writing an audit event failed");
        }
    }

    /// One page of events, newest first.
    pub async fn list(
        &self,
        filter: AuditFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<AuditEvent>, Option<String>), Error> {
        let limit = listing::page_size(page_size).map_err(|why| Error::invalid("page_size", why))?;
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time)
            && start > end
        {
            return Err(Error::invalid("start_time", "must not be after end_time"));
        }
        let scope = scope_digest(&format!("audit|{:?}", filter));
        let after = match page_token {
            "" => None,
            token => {
                let (t, id) = listing::decode_cursor(token, &scope).map_err(|why| Error::invalid("page_token", why))?;
                Some((
                    t,
                    id.parse::<i64>()
                        .map_err(|_| Error::invalid("page_token", "is not a page token issued for this listing"))?,
                ))
            }
        };
        let mut rows = self.db.list_audit_events(&filter, after, limit as i64 + 1).await?;
        let next = listing::next_page(&mut rows, limit, &scope, |last| (last.event_time, last.id.to_string()));
        Ok((rows.into_iter().map(AuditEvent::from).collect(), next))
    }
}
