//! AdminService: users, roles, API keys, the audit log, read-only mode, the search index and
//! backups. Every call is audited here, with its outcome; refusals by the authentication layer
//! are audited there.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    auth::{role_from_proto, role_to_proto, user_to_proto},
    context, from_timestamp,
    status::code_name,
    timestamp,
};
use crate::{
    backup::{self, BackupInfo, Backups},
    domain::{
        Error,
        accounts::Accounts,
        api_keys::{ApiKey, ApiKeys},
        audit::{Audit, AuditEvent, check_reason},
        auth::RequestContext,
        switches::{ReadOnly, ReadOnlyCause, Switches},
    },
    proto::soko::admin::v1::{self as pb, admin_service_server::AdminService},
    search::{ReindexProgress, SearchEngine, SyncStatus},
    store::auth::AuditFilter,
};

pub struct AdminApi {
    accounts: Accounts,
    api_keys: ApiKeys,
    audit: Audit,
    backups: Backups,
    switches: Switches,
    search: Arc<SearchEngine>,
    /// The Milvus sync, when Milvus is configured.
    milvus: Option<Arc<crate::milvus::MilvusSync>>,
}

impl AdminApi {
    pub fn new(
        accounts: Accounts,
        api_keys: ApiKeys,
        audit: Audit,
        backups: Backups,
        switches: Switches,
        search: Arc<SearchEngine>,
        milvus: Option<Arc<crate::milvus::MilvusSync>>,
    ) -> Self {
        Self { accounts, api_keys, audit, backups, switches, search, milvus }
    }

    /// Records the call in the audit log and converts its result.
    async fn audited<T>(
        &self,
        ctx: &RequestContext,
        method: &str,
        resource: &str,
        reason: &str,
        details: &[(&str, String)],
        result: Result<T, Error>,
    ) -> Result<T, Status> {
        let result = result.map_err(Status::from);
        let code = result.as_ref().map_or_else(|s| code_name(s.code()), |_| "OK");
        let action = format!("soko.admin.v1.AdminService.{method}");
        self.audit.record_with(ctx, &action, resource, code, reason, details).await;
        result
    }
}

fn api_key_to_proto(k: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        user_id: k.user_id.to_string(),
        display_name: k.display_name,
        secret_prefix: k.secret_prefix,
        create_time: timestamp(k.created_at),
        expire_time: k.expires_at.and_then(timestamp),
        last_use_time: k.last_used_at.and_then(timestamp),
        revoke_time: k.revoked_at.and_then(timestamp),
    }
}

fn audit_event_to_proto(e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.to_string(),
        event_time: timestamp(e.time),
        principal: e.principal,
        action: e.action,
        resource: e.resource,
        status_code: e.status_code,
        reason: e.reason,
        client_ip: e.client_ip,
        request_id: e.request_id,
        details: e.details.into_iter().collect(),
    }
}

fn backup_to_proto(b: BackupInfo) -> pb::Backup {
    let ts = |micros| timestamp(crate::domain::product::Timestamp(micros));
    pb::Backup {
        id: b.id,
        state: match b.state {
            backup::State::Running => pb::BackupState::Running,
            backup::State::Succeeded => pb::BackupState::Succeeded,
            backup::State::Failed => pb::BackupState::Failed,
        } as i32,
        trigger: match b.trigger {
            backup::Trigger::Scheduled => pb::BackupTrigger::Scheduled,
            backup::Trigger::Manual => pb::BackupTrigger::Manual,
        } as i32,
        create_time: ts(b.created_at),
        end_time: b.finished_at.and_then(ts),
        expire_time: ts(b.expires_at),
        size_bytes: i64::try_from(b.size).unwrap_or(i64::MAX),
        sha256: b.sha256,
        location: b.location,
        error_message: b.error,
        schema_version: b.schema_version,
        row_counts: b.tables.into_iter().map(|t| (t.name, i64::try_from(t.rows).unwrap_or(i64::MAX))).collect(),
    }
}

fn read_only_to_proto(r: ReadOnly, cause: Option<ReadOnlyCause>) -> pb::ReadOnlyMode {
    let reason = match cause {
        Some(ReadOnlyCause::DatabaseUnavailable) => {
            "automatic: the database is not answering; writes resume by themselves when it does".to_owned()
        }
        _ => r.reason,
    };
    pb::ReadOnlyMode {
        enabled: r.enabled,
        effective: cause.is_some(),
        reason,
        update_time: r.updated_at.and_then(timestamp),
        update_principal: r.updated_by,
    }
}

fn reindex_to_proto(p: ReindexProgress) -> pb::ReindexStatus {
    pb::ReindexStatus {
        running: p.running,
        // Only the local index exists until Milvus is configured.
        target: pb::ReindexTarget::Local as i32,
        start_time: timestamp(p.started_at),
        end_time: p.finished_at.and_then(timestamp),
        indexed_count: i64::try_from(p.indexed).unwrap_or(i64::MAX),
        total_count: i64::try_from(p.total).unwrap_or(i64::MAX),
        error_message: p.error.unwrap_or_default(),
    }
}

/// A follower further behind than this many events is catching up rather than keeping pace.
const CATCHING_UP_EVENTS: i64 = 1_000;

fn local_sync_to_proto(s: &SyncStatus) -> pb::IndexSyncStatus {
    let lag_events = (s.head - s.watermark).max(0);
    let state = if s.last_error.is_some() {
        pb::SyncState::Failing
    } else if !s.ready || lag_events > CATCHING_UP_EVENTS {
        pb::SyncState::CatchingUp
    } else {
        pb::SyncState::Healthy
    };
    pb::IndexSyncStatus {
        state: state as i32,
        watermark: s.watermark,
        lag_events,
        lag: Some(prost_types::Duration {
            seconds: i64::try_from(s.lag.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(s.lag.subsec_nanos()).unwrap_or(0),
        }),
        vector_count: i64::try_from(s.vector_count).unwrap_or(i64::MAX),
        last_apply_time: s.last_apply.and_then(timestamp),
        last_reconcile_time: None,
        last_error: s.last_error.clone().unwrap_or_default(),
    }
}

/// Milvus's sync as this replica sees it; `count` is the collection's size, or why it could not
/// be read (which then is the error reported).
fn milvus_sync_to_proto(
    s: &crate::milvus::MilvusSyncStatus,
    count: Result<i64, crate::milvus::MilvusError>,
) -> pb::IndexSyncStatus {
    let (vector_count, count_error) = match count {
        Ok(count) => (count, None),
        Err(e) => (0, Some(e.to_string())),
    };
    let state = if s.degraded() || count_error.is_some() {
        pb::SyncState::Failing
    } else if s.lag_events > CATCHING_UP_EVENTS {
        pb::SyncState::CatchingUp
    } else {
        pb::SyncState::Healthy
    };
    pb::IndexSyncStatus {
        state: state as i32,
        watermark: s.watermark,
        lag_events: s.lag_events,
        lag: Some(prost_types::Duration {
            seconds: i64::try_from(s.lag.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(s.lag.subsec_nanos()).unwrap_or(0),
        }),
        vector_count,
        last_apply_time: s.last_apply.and_then(timestamp),
        last_reconcile_time: s.last_reconcile.and_then(|(at, _)| timestamp(at)),
        last_error: s.last_error.clone().or(count_error).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = self.accounts.list_users(&r.email, role_from_proto(r.role), r.page_size, &r.page_token).await;
        let (users, next) = self.audited(&ctx, "ListUsers", "users", "", &[], result).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = match check_reason(&r.reason) {
            Ok(()) => self.accounts.set_role(&ctx, &r.user_id, role_from_proto(r.role)).await,
            Err(e) => Err(e),
        };
        let details = match &result {
            Ok((user, old)) => vec![
                ("old_role", role_to_proto(*old).as_str_name().to_owned()),
                ("new_role", role_to_proto(user.role).as_str_name().to_owned()),
            ],
            Err(_) => vec![],
        };
        let resource = format!("users/{}", r.user_id);
        let (user, _) = self.audited(&ctx, "SetUserRole", &resource, &r.reason, &details, result).await?;
        Ok(Response::new(pb::SetUserRoleResponse { user: Some(user_to_proto(user)) }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = match check_reason(&r.reason) {
            Ok(()) => {
                self.api_keys.create(&r.user_id, &r.display_name, r.expire_time.as_ref().map(from_timestamp)).await
            }
            Err(e) => Err(e),
        };
        let resource = match &result {
            Ok((key, _)) => format!("api_keys/{}", key.id),
            Err(_) => format!("users/{}", r.user_id),
        };
        let (key, secret) = self.audited(&ctx, "CreateApiKey", &resource, &r.reason, &[], result).await?;
        Ok(Response::new(pb::CreateApiKeyResponse { api_key: Some(api_key_to_proto(key)), secret }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = match check_reason(&r.reason) {
            Ok(()) => self.api_keys.revoke(&r.id).await,
            Err(e) => Err(e),
        };
        let key = self.audited(&ctx, "RevokeApiKey", &format!("api_keys/{}", r.id), &r.reason, &[], result).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse { api_key: Some(api_key_to_proto(key)) }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = self.api_keys.list(&r.user_id, r.show_inactive, r.page_size, &r.page_token).await;
        let (keys, next) = self.audited(&ctx, "ListApiKeys", "api_keys", "", &[], result).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let filter = AuditFilter {
            action: (!r.action.is_empty()).then_some(r.action),
            principal: (!r.principal.is_empty()).then_some(r.principal),
            start_time: r.start_time.as_ref().map(|t| from_timestamp(t).0),
            end_time: r.end_time.as_ref().map(|t| from_timestamp(t).0),
        };
        // Listed before this call is recorded, so a page never contains its own request.
        let result = self.audit.list(filter, r.page_size, &r.page_token).await;
        let (events, next) = self.audited(&ctx, "ListAuditEvents", "audit_events", "", &[], result).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: events.into_iter().map(audit_event_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn set_read_only_mode(
        &self,
        request: Request<pb::SetReadOnlyModeRequest>,
    ) -> Result<Response<pb::SetReadOnlyModeResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let before = self.switches.read_only().enabled;
        let result = self.switches.set_read_only(&ctx, r.enabled, &r.reason).await;
        let details = [("was_enabled", before.to_string()), ("enabled", r.enabled.to_string())];
        let state = self.audited(&ctx, "SetReadOnlyMode", "read_only_mode", &r.reason, &details, result).await?;
        let cause = self.switches.read_only_cause();
        Ok(Response::new(pb::SetReadOnlyModeResponse { read_only_mode: Some(read_only_to_proto(state, cause)) }))
    }

    async fn get_read_only_mode(
        &self,
        request: Request<pb::GetReadOnlyModeRequest>,
    ) -> Result<Response<pb::GetReadOnlyModeResponse>, Status> {
        let ctx = context(&request);
        let state =
            self.audited(&ctx, "GetReadOnlyMode", "read_only_mode", "", &[], Ok(self.switches.read_only())).await?;
        let cause = self.switches.read_only_cause();
        Ok(Response::new(pb::GetReadOnlyModeResponse { read_only_mode: Some(read_only_to_proto(state, cause)) }))
    }

    async fn reindex(&self, request: Request<pb::ReindexRequest>) -> Result<Response<pb::ReindexResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let target = pb::ReindexTarget::try_from(r.target).unwrap_or(pb::ReindexTarget::Unspecified);
        let busy = || Error::FailedPrecondition("a reindex is already running on this replica".into());
        let result = async {
            check_reason(&r.reason)?;
            // Milvus is reconciled by whichever replica syncs it, on request.
            let milvus_too = matches!(target, pb::ReindexTarget::Milvus | pb::ReindexTarget::All);
            match (&self.milvus, target) {
                (None, pb::ReindexTarget::Milvus) => {
                    return Err(Error::FailedPrecondition("Milvus is not configured on this deployment".into()));
                }
                (Some(sync), pb::ReindexTarget::Milvus) => {
                    sync.request_reconcile(&ctx.principal.audit_name(), &r.reason).await?;
                    return Ok(crate::search::ReindexProgress {
                        running: true,
                        started_at: crate::domain::product::Timestamp::now(),
                        finished_at: None,
                        indexed: 0,
                        total: 0,
                        error: None,
                    });
                }
                (Some(sync), _) if milvus_too => {
                    sync.request_reconcile(&ctx.principal.audit_name(), &r.reason).await?;
                }
                _ => {}
            }
            // Checked before the request is recorded, so a refused call asks no replica to rebuild.
            if self.search.reindex_progress().is_some_and(|p| p.running) {
                return Err(busy());
            }
            // Recorded first, so the other replicas rebuild too even if this one's start races.
            self.switches.request_reindex(&ctx, &r.reason).await?;
            self.search.start_reindex().ok_or_else(busy)
        }
        .await;
        let details = [("target", target.as_str_name().to_owned())];
        let progress = self.audited(&ctx, "Reindex", "search_index", &r.reason, &details, result).await?;
        Ok(Response::new(pb::ReindexResponse { reindex: Some(reindex_to_proto(progress)) }))
    }

    async fn get_sync_status(
        &self,
        request: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        let ctx = context(&request);
        let result = self.search.sync_status().await.map_err(Error::from);
        let status = self.audited(&ctx, "GetSyncStatus", "search_index", "", &[], result).await?;
        Ok(Response::new(pb::GetSyncStatusResponse {
            outbox_head_id: status.head,
            local_index: Some(local_sync_to_proto(&status)),
            milvus: Some(match &self.milvus {
                Some(sync) => milvus_sync_to_proto(&sync.status(), sync.milvus().count().await),
                None => pb::IndexSyncStatus { state: pb::SyncState::Disabled as i32, ..Default::default() },
            }),
            reindex: self.search.reindex_progress().map(reindex_to_proto),
        }))
    }

    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::CreateBackupResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let result = self.backups.request(&r.reason);
        let resource = match &result {
            Ok(b) => format!("backups/{}", b.id),
            Err(_) => "backups".to_owned(),
        };
        let backup = self.audited(&ctx, "CreateBackup", &resource, &r.reason, &[], result).await?;
        Ok(Response::new(pb::CreateBackupResponse { backup: Some(backup_to_proto(backup)) }))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let backups = self.backups.clone();
        // Listing reads a directory: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || backups.list_page(r.page_size, &r.page_token))
            .await
            .unwrap_or_else(|e| Err(Error::Unexpected(anyhow::anyhow!("listing backups panicked: {e}"))));
        let (list, next) = self.audited(&ctx, "ListBackups", "backups", "", &[], result).await?;
        Ok(Response::new(pb::ListBackupsResponse {
            backups: list.into_iter().map(backup_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
