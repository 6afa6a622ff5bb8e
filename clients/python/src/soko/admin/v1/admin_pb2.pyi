import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from soko.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReindexTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REINDEX_TARGET_UNSPECIFIED: _ClassVar[ReindexTarget]
    REINDEX_TARGET_ALL: _ClassVar[ReindexTarget]
    REINDEX_TARGET_LOCAL: _ClassVar[ReindexTarget]
    REINDEX_TARGET_MILVUS: _ClassVar[ReindexTarget]

class SyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATE_UNSPECIFIED: _ClassVar[SyncState]
    SYNC_STATE_DISABLED: _ClassVar[SyncState]
    SYNC_STATE_HEALTHY: _ClassVar[SyncState]
    SYNC_STATE_CATCHING_UP: _ClassVar[SyncState]
    SYNC_STATE_FAILING: _ClassVar[SyncState]

class BackupState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKUP_STATE_UNSPECIFIED: _ClassVar[BackupState]
    BACKUP_STATE_RUNNING: _ClassVar[BackupState]
    BACKUP_STATE_SUCCEEDED: _ClassVar[BackupState]
    BACKUP_STATE_FAILED: _ClassVar[BackupState]

class BackupTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKUP_TRIGGER_UNSPECIFIED: _ClassVar[BackupTrigger]
    BACKUP_TRIGGER_MANUAL: _ClassVar[BackupTrigger]
    BACKUP_TRIGGER_SCHEDULED: _ClassVar[BackupTrigger]
REINDEX_TARGET_UNSPECIFIED: ReindexTarget
REINDEX_TARGET_ALL: ReindexTarget
REINDEX_TARGET_LOCAL: ReindexTarget
REINDEX_TARGET_MILVUS: ReindexTarget
SYNC_STATE_UNSPECIFIED: SyncState
SYNC_STATE_DISABLED: SyncState
SYNC_STATE_HEALTHY: SyncState
SYNC_STATE_CATCHING_UP: SyncState
SYNC_STATE_FAILING: SyncState
BACKUP_STATE_UNSPECIFIED: BackupState
BACKUP_STATE_RUNNING: BackupState
BACKUP_STATE_SUCCEEDED: BackupState
BACKUP_STATE_FAILED: BackupState
BACKUP_TRIGGER_UNSPECIFIED: BackupTrigger
BACKUP_TRIGGER_MANUAL: BackupTrigger
BACKUP_TRIGGER_SCHEDULED: BackupTrigger

class ListUsersRequest(_message.Message):
    __slots__ = ("role", "email", "page_size", "page_token")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    role: _auth_pb2.Role
    email: str
    page_size: int
    page_token: str
    def __init__(self, role: _Optional[_Union[_auth_pb2.Role, str]] = ..., email: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_auth_pb2.User]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[_auth_pb2.User, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetUserRoleRequest(_message.Message):
    __slots__ = ("user_id", "role", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: _auth_pb2.Role
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[_auth_pb2.Role, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetUserRoleResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _auth_pb2.User
    def __init__(self, user: _Optional[_Union[_auth_pb2.User, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "user_id", "display_name", "secret_prefix", "create_time", "expire_time", "last_use_time", "revoke_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SECRET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    display_name: str
    secret_prefix: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    last_use_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., secret_prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_use_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("user_id", "display_name", "expire_time", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    expire_time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("user_id", "show_inactive", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SHOW_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    show_inactive: bool
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., show_inactive: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "event_time", "principal", "action", "resource", "status_code", "reason", "client_ip", "request_id", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: str
    event_time: _timestamp_pb2.Timestamp
    principal: str
    action: str
    resource: str
    status_code: str
    reason: str
    client_ip: str
    request_id: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., status_code: _Optional[str] = ..., reason: _Optional[str] = ..., client_ip: _Optional[str] = ..., request_id: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("action", "principal", "start_time", "end_time", "page_size", "page_token")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    action: str
    principal: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, action: _Optional[str] = ..., principal: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("audit_events", "next_page_token")
    AUDIT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    audit_events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, audit_events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReadOnlyMode(_message.Message):
    __slots__ = ("enabled", "effective", "reason", "update_time", "update_principal")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    effective: bool
    reason: str
    update_time: _timestamp_pb2.Timestamp
    update_principal: str
    def __init__(self, enabled: _Optional[bool] = ..., effective: _Optional[bool] = ..., reason: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_principal: _Optional[str] = ...) -> None: ...

class SetReadOnlyModeRequest(_message.Message):
    __slots__ = ("enabled", "reason")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    reason: str
    def __init__(self, enabled: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SetReadOnlyModeResponse(_message.Message):
    __slots__ = ("read_only_mode",)
    READ_ONLY_MODE_FIELD_NUMBER: _ClassVar[int]
    read_only_mode: ReadOnlyMode
    def __init__(self, read_only_mode: _Optional[_Union[ReadOnlyMode, _Mapping]] = ...) -> None: ...

class GetReadOnlyModeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetReadOnlyModeResponse(_message.Message):
    __slots__ = ("read_only_mode",)
    READ_ONLY_MODE_FIELD_NUMBER: _ClassVar[int]
    read_only_mode: ReadOnlyMode
    def __init__(self, read_only_mode: _Optional[_Union[ReadOnlyMode, _Mapping]] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("target", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: ReindexTarget
    reason: str
    def __init__(self, target: _Optional[_Union[ReindexTarget, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReindexResponse(_message.Message):
    __slots__ = ("reindex",)
    REINDEX_FIELD_NUMBER: _ClassVar[int]
    reindex: ReindexStatus
    def __init__(self, reindex: _Optional[_Union[ReindexStatus, _Mapping]] = ...) -> None: ...

class ReindexStatus(_message.Message):
    __slots__ = ("running", "target", "start_time", "end_time", "indexed_count", "total_count", "error_message")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    INDEXED_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    running: bool
    target: ReindexTarget
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    indexed_count: int
    total_count: int
    error_message: str
    def __init__(self, running: _Optional[bool] = ..., target: _Optional[_Union[ReindexTarget, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., indexed_count: _Optional[int] = ..., total_count: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class IndexSyncStatus(_message.Message):
    __slots__ = ("state", "watermark", "lag_events", "lag", "vector_count", "last_apply_time", "last_reconcile_time", "last_error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLY_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RECONCILE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    state: SyncState
    watermark: int
    lag_events: int
    lag: _duration_pb2.Duration
    vector_count: int
    last_apply_time: _timestamp_pb2.Timestamp
    last_reconcile_time: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, state: _Optional[_Union[SyncState, str]] = ..., watermark: _Optional[int] = ..., lag_events: _Optional[int] = ..., lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., vector_count: _Optional[int] = ..., last_apply_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_reconcile_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class GetSyncStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSyncStatusResponse(_message.Message):
    __slots__ = ("outbox_head_id", "local_index", "milvus", "reindex")
    OUTBOX_HEAD_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    MILVUS_FIELD_NUMBER: _ClassVar[int]
    REINDEX_FIELD_NUMBER: _ClassVar[int]
    outbox_head_id: int
    local_index: IndexSyncStatus
    milvus: IndexSyncStatus
    reindex: ReindexStatus
    def __init__(self, outbox_head_id: _Optional[int] = ..., local_index: _Optional[_Union[IndexSyncStatus, _Mapping]] = ..., milvus: _Optional[_Union[IndexSyncStatus, _Mapping]] = ..., reindex: _Optional[_Union[ReindexStatus, _Mapping]] = ...) -> None: ...

class Backup(_message.Message):
    __slots__ = ("id", "state", "trigger", "create_time", "end_time", "expire_time", "size_bytes", "sha256", "location", "error_message", "schema_version", "row_counts")
    class RowCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: BackupState
    trigger: BackupTrigger
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    size_bytes: int
    sha256: str
    location: str
    error_message: str
    schema_version: str
    row_counts: _containers.ScalarMap[str, int]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[BackupState, str]] = ..., trigger: _Optional[_Union[BackupTrigger, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., location: _Optional[str] = ..., error_message: _Optional[str] = ..., schema_version: _Optional[str] = ..., row_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CreateBackupResponse(_message.Message):
    __slots__ = ("backup",)
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    backup: Backup
    def __init__(self, backup: _Optional[_Union[Backup, _Mapping]] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups", "next_page_token")
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[Backup]
    next_page_token: str
    def __init__(self, backups: _Optional[_Iterable[_Union[Backup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
