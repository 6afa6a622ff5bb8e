//! AdminService: users, roles, API keys and the audit log. Every call is audited here, with its
//! outcome; refusals by the authentication layer are audited there.

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
    },
    proto::soko::admin::v1::{self as pb, admin_service_server::AdminService},
    store::auth::AuditFilter,
};

pub struct AdminApi {
    accounts: Accounts,
    api_keys: ApiKeys,
    audit: Audit,
    backups: Backups,
}

impl AdminApi {
    pub fn new(accounts: Accounts, api_keys: ApiKeys, audit: Audit, backups: Backups) -> Self {
        Self { accounts, api_keys, audit, backups }
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

fn not_ours(method: &str) -> Status {
    Status::unimplemented(format!("AdminService.{method} is not available yet"))
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
        _: Request<pb::SetReadOnlyModeRequest>,
    ) -> Result<Response<pb::SetReadOnlyModeResponse>, Status> {
        Err(not_ours("SetReadOnlyMode"))
    }

    async fn get_read_only_mode(
        &self,
        _: Request<pb::GetReadOnlyModeRequest>,
    ) -> Result<Response<pb::GetReadOnlyModeResponse>, Status> {
        Err(not_ours("GetReadOnlyMode"))
    }

    async fn reindex(&self, _: Request<pb::ReindexRequest>) -> Result<Response<pb::ReindexResponse>, Status> {
        Err(not_ours("Reindex"))
    }

    async fn get_sync_status(
        &self,
        _: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        Err(not_ours("GetSyncStatus"))
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
