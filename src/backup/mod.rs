//! Backups: a portable, checksummed export of every table, written to a local directory on
//! demand (AdminService.CreateBackup, `soko backup create`) and on a schedule, kept for a
//! retention period, and restorable into an empty database of any backend.
//!
//! Each backup is two files in the backup directory: `<id>.jsonl.gz`, the archive (see
//! [`archive`]), and `<id>.json`, its record (state, size, checksums), which is what listing
//! reads. The archive is written as `<id>.jsonl.gz.part` and renamed once complete and synced, so
//! a crash never leaves a file that looks finished.

pub mod archive;
pub mod cli;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::product::Timestamp,
    store::{
        Db, StoreError,
        backup::{RestoreBatch, RestoreMode, latest_schema_version},
    },
};

/// Name of the lease that makes one replica at a time take the scheduled backup.
const SCHEDULE_LEASE: &str = "backup";
/// How often the scheduler checks whether a backup is due.
const SCHEDULE_TICK: Duration = Duration::from_secs(60);
/// Rows per insert batch during a restore.
const RESTORE_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup is already running ({0})")]
    AlreadyRunning(String),
    #[error("backup `{0}` not found")]
    NotFound(String),
    #[error("the file is not a Soko backup")]
    NotABackup,
    #[error("the backup is damaged: it ends before its manifest (truncated)")]
    Truncated,
    #[error("the backup is damaged: {0}")]
    Corrupt(String),
    #[error("the backup is damaged: table `{0}` does not match its checksum")]
    ChecksumMismatch(String),
    #[error("the backup uses archive format {0}, newer than this version of Soko reads")]
    NewerFormat(u32),
    #[error(
        "the backup is from a newer schema ({backup}) than this version of Soko ({ours}); restore it with a newer Soko"
    )]
    NewerSchema { backup: String, ours: String },
    #[error("the target database already holds data ({0} rows); restore into an empty database, or pass --replace")]
    NotEmpty(i64),
    #[error("dumping the database failed: {0}")]
    Dump(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotEmpty(rows) => Self::NotEmpty(rows),
            other => Self::Store(other),
        }
    }
}

impl From<BackupError> for crate::domain::Error {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::AlreadyRunning(_) => Self::FailedPrecondition(e.to_string()),
            BackupError::NotFound(id) => Self::NotFound { resource: "backup", id },
            BackupError::Store(e) => e.into(),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// Page tokens of ListBackups are bound to this scope.
const PAGE_SCOPE: &str = "backups";

/// What AdminService asks of backups, with its input rules.
impl Backups {
    /// Starts a backup for an operator; `reason` goes to the audit log and the record.
    pub fn request(&self, reason: &str) -> Result<BackupInfo, crate::domain::Error> {
        crate::domain::audit::check_reason(reason)?;
        Ok(self.start(Trigger::Manual, reason)?)
    }

    /// One page of backups, newest first, for ListBackups.
    pub fn list_page(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<BackupInfo>, Option<String>), crate::domain::Error> {
        use crate::domain::listing::{decode_cursor, encode_cursor, page_size as clamp};
        let mut violations = crate::domain::error::Violations::default();
        let size = violations.check("page_size", clamp(page_size));
        let after = if page_token.is_empty() {
            None
        } else {
            violations.check("page_token", decode_cursor(page_token, PAGE_SCOPE).map(|(_, id)| id))
        };
        violations.finish()?;
        let (page, next) = self.page(after.as_deref(), size.unwrap_or(1))?;
        Ok((page, next.map(|id| encode_cursor(PAGE_SCOPE, 0, &id))))
    }
}

/// Where and how often backups are taken, and how long they are kept.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// `SOKO_BACKUP_DIR`, by default `<data dir>/backups`.
    pub dir: PathBuf,
    /// `SOKO_BACKUP_INTERVAL_SECS`: the schedule; `None` (0) takes backups only on demand.
    pub interval: Option<Duration>,
    /// `SOKO_BACKUP_RETENTION_DAYS`: backups older than this are deleted...
    pub retention: Duration,
    /// `SOKO_BACKUP_KEEP_MIN`: ...except the newest this many successful ones.
    pub keep_min: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Scheduled,
    Manual,
}

/// One backup's record, stored beside its archive as `<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub id: String,
    pub state: State,
    pub trigger: Trigger,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub expires_at: i64,
    pub size: u64,
    /// SHA-256 of the archive file; empty until it succeeded.
    pub sha256: String,
    pub location: String,
    pub error: String,
    pub reason: String,
    pub schema_version: String,
    pub tables: Vec<archive::TableSummary>,
}

impl BackupInfo {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Takes, lists and prunes the backups of one database.
#[derive(Clone)]
pub struct Backups {
    db: Db,
    config: BackupConfig,
    /// The id of the backup this process is taking, if any.
    running: Arc<Mutex<Option<String>>>,
    /// Who holds the schedule lease when this process does.
    holder: String,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn new_id(now: i64) -> String {
    let secs = now / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    // Sorts by time as text, and says when it was taken to whoever reads a directory listing.
    format!("soko-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{}", rem / 3600, rem / 60 % 60, rem % 60, &suffix[..6])
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Ids are made by [`new_id`]; anything else (a path, `..`) is not one of ours.
fn valid_id(id: &str) -> bool {
    id.starts_with("soko-") && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Backups {
    pub fn new(db: Db, config: BackupConfig) -> Self {
        Self { db, config, running: Arc::default(), holder: crate::store::lease::new_holder() }
    }

    pub fn config(&self) -> &BackupConfig {
        &self.config
    }

    fn archive_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.jsonl.gz"))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.json"))
    }

    fn save(&self, info: &BackupInfo) -> Result<(), BackupError> {
        let path = self.record_path(&info.id);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Registers a new backup and starts taking it in the background; returns it as running.
    pub fn start(&self, trigger: Trigger, reason: &str) -> Result<BackupInfo, BackupError> {
        let info = self.begin(trigger, reason)?;
        let this = self.clone();
        let started = info.clone();
        tokio::spawn(async move {
            let id = started.id.clone();
            match this.finish(started).await {
                Ok(done) => {
                    tracing::info!(backup = %id, bytes = done.size, rows = done.total_rows(), "backup finished")
                }
                Err(e) => tracing::error!(backup = %id, error = %e, "backup failed"),
            }
        });
        Ok(info)
    }

    /// Takes a backup and waits for it.
    pub async fn create(&self, trigger: Trigger, reason: &str) -> Result<BackupInfo, BackupError> {
        let info = self.begin(trigger, reason)?;
        self.finish(info).await
    }

    fn begin(&self, trigger: Trigger, reason: &str) -> Result<BackupInfo, BackupError> {
        let now = Timestamp::now().0;
        let id = new_id(now);
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = running.as_ref() {
                return Err(BackupError::AlreadyRunning(other.clone()));
            }
            *running = Some(id.clone());
        }
        let info = BackupInfo {
            id: id.clone(),
            state: State::Running,
            trigger,
            created_at: now,
            finished_at: None,
            expires_at: now.saturating_add(micros(self.config.retention)),
            size: 0,
            sha256: String::new(),
            location: String::new(),
            error: String::new(),
            reason: reason.to_owned(),
            schema_version: String::new(),
            tables: Vec::new(),
        };
        let saved =
            std::fs::create_dir_all(&self.config.dir).map_err(BackupError::from).and_then(|()| self.save(&info));
        if let Err(e) = saved {
            self.running.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(e);
        }
        Ok(info)
    }

    async fn finish(&self, mut info: BackupInfo) -> Result<BackupInfo, BackupError> {
        let result = self.write_archive(&info).await;
        info.finished_at = Some(Timestamp::now().0);
        let outcome = match result {
            Ok((schema_version, written)) => {
                info.state = State::Succeeded;
                info.schema_version = schema_version;
                info.size = written.size;
                info.sha256 = written.sha256;
                info.tables = written.tables;
                info.location = self.archive_path(&info.id).display().to_string();
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.archive_path(&info.id).with_extension("gz.part"));
                info.state = State::Failed;
                info.error = e.to_string();
                Err(e)
            }
        };
        let saved = self.save(&info);
        self.running.lock().unwrap_or_else(|e| e.into_inner()).take();
        outcome?;
        saved?;
        Ok(info)
    }

    async fn write_archive(&self, info: &BackupInfo) -> Result<(String, archive::Written), BackupError> {
        let schema_version = self.db.schema_version().await?;
        let header = archive::Header {
            format: archive::FORMAT.into(),
            format_version: archive::FORMAT_VERSION,
            id: info.id.clone(),
            created_at: info.created_at,
            schema_version: schema_version.clone(),
            source_backend: self.db.backend().into(),
            soko_version: env!("CARGO_PKG_VERSION").into(),
        };
        let part = self.archive_path(&info.id).with_extension("gz.part");
        let (tx, mut rx) = mpsc::channel(1024);
        let writer_path = part.clone();
        let writer = tokio::task::spawn_blocking(move || archive::write(&writer_path, header, &mut rx));
        let dumped = self.db.dump(tx).await;
        let written = writer.await.map_err(|e| BackupError::Dump(format!("archive writer panicked: {e}")))?;
        // A dump error explains a writer error (the writer only sees its channel close).
        dumped?;
        let written = written?;
        std::fs::rename(&part, self.archive_path(&info.id))?;
        if let Ok(dir) = std::fs::File::open(&self.config.dir) {
            let _ = dir.sync_all();
        }
        Ok((schema_version, written))
    }

    /// Every backup on record, newest first. A record left `running` by a process that died is
    /// reported as failed.
    pub fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        let entries = match std::fs::read_dir(&self.config.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut list = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(mut info) = serde_json::from_slice::<BackupInfo>(&bytes) else {
                tracing::warn!(path = %path.display(), "skipping an unreadable backup record");
                continue;
            };
            if info.state == State::Running && running.as_deref() != Some(id) && stale(&path) {
                info.state = State::Failed;
                info.error = "interrupted: the process taking it stopped".into();
            }
            list.push(info);
        }
        // Ids begin with their UTC time, so this is newest first and a stable order for paging.
        list.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(list)
    }

    /// One page of [`Backups::list`] after the backup `after` (exclusive).
    pub fn page(&self, after: Option<&str>, size: usize) -> Result<(Vec<BackupInfo>, Option<String>), BackupError> {
        let list = self.list()?;
        let start = match after {
            Some(after) => list.iter().position(|b| b.id.as_str() < after).unwrap_or(list.len()),
            None => 0,
        };
        let page: Vec<BackupInfo> = list.into_iter().skip(start).take(size + 1).collect();
        if page.len() > size {
            let mut page = page;
            page.truncate(size);
            let next = page.last().map(|b| b.id.clone());
            Ok((page, next))
        } else {
            Ok((page, None))
        }
    }

    /// Finds a backup's archive by id.
    pub fn archive_of(&self, id: &str) -> Result<PathBuf, BackupError> {
        let path = self.archive_path(id);
        if valid_id(id) && path.is_file() { Ok(path) } else { Err(BackupError::NotFound(id.to_owned())) }
    }

    /// Deletes backups past their retention, keeping the newest `keep_min` successful ones
    /// whatever their age. Returns the ids deleted.
    pub fn prune(&self, now: i64) -> Result<Vec<String>, BackupError> {
        let mut kept_ok = 0;
        let mut deleted = Vec::new();
        for info in self.list()? {
            if info.state == State::Succeeded && kept_ok < self.config.keep_min {
                kept_ok += 1;
                continue;
            }
            let expired = info.created_at.saturating_add(micros(self.config.retention)) <= now;
            if expired && info.state != State::Running {
                for path in [
                    self.archive_path(&info.id),
                    self.archive_path(&info.id).with_extension("gz.part"),
                    self.record_path(&info.id),
                ] {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                deleted.push(info.id);
            } else if info.state == State::Succeeded {
                kept_ok += 1;
            }
        }
        Ok(deleted)
    }

    /// Takes a backup every `interval` on one replica at a time until `stop` fires. The lease is
    /// taken for a whole interval and kept after the backup, so whichever replica took this
    /// period's backup blocks the others until the next period; a failed backup gives it back
    /// so the next tick, on any replica, retries.
    pub async fn schedule(self, mut stop: oneshot::Receiver<()>) {
        let Some(interval) = self.config.interval else { return };
        loop {
            // The first check waits a tick, so a crash-looping replica doesn't back up each start.
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(SCHEDULE_TICK.min(interval)) => {}
            }
            match self.db.take_lease(SCHEDULE_LEASE, &self.holder, interval).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not check the backup schedule");
                    continue;
                }
            }
            match self.create(Trigger::Scheduled, "scheduled").await {
                Ok(info) => tracing::info!(backup = %info.id, bytes = info.size, "scheduled backup finished"),
                Err(e) => {
                    tracing::error!(error = %e, "scheduled backup failed");
                    if let Err(e) = self.db.release_lease(SCHEDULE_LEASE, &self.holder).await {
                        tracing::warn!(error = %e, "could not release the backup lease");
                    }
                }
            }
            match self.prune(Timestamp::now().0) {
                Ok(deleted) if !deleted.is_empty() => tracing::info!(?deleted, "deleted expired backups"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not delete expired backups"),
            }
        }
    }
}

/// A record not touched for ten minutes while `running` belongs to a process that is gone (a
/// running backup rewrites nothing, but its `.part` file grows; see [`Backups::list`]).
fn stale(record: &Path) -> bool {
    let part = record.with_extension("jsonl.gz.part");
    let newest =
        [record, part.as_path()].iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).max();
    newest.and_then(|t| t.elapsed().ok()).is_none_or(|age| age > Duration::from_secs(600))
}

/// Checks a backup file without restoring it.
pub async fn verify(path: &Path) -> Result<archive::Verified, BackupError> {
    let path = path.to_owned();
    let verified = tokio::task::spawn_blocking(move || archive::read(&path, |_, _| Ok(())))
        .await
        .map_err(|e| BackupError::Dump(format!("verifier panicked: {e}")))??;
    let ours = latest_schema_version();
    if verified.header.schema_version > ours {
        return Err(BackupError::NewerSchema { backup: verified.header.schema_version.clone(), ours });
    }
    Ok(verified)
}

/// Restores the backup at `path` into `db`: verifies the whole file first, brings the schema up
/// to date, then inserts every row in one transaction, checking the checksums again as it reads
/// so a file changed in between cannot slip through. Nothing is written unless all of it is.
pub async fn restore(db: &Db, path: &Path, mode: RestoreMode) -> Result<archive::Verified, BackupError> {
    let verified = verify(path).await?;
    db.migrate().await?;
    let (tx, rx) = mpsc::channel::<Result<Option<RestoreBatch>, String>>(4);
    let reader_path = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = RestoreBatch { table: String::new(), rows: Vec::new() };
        let read = archive::read(&reader_path, |table, row| {
            if batch.table != table || batch.rows.len() >= RESTORE_BATCH {
                let full = std::mem::replace(&mut batch, RestoreBatch { table: table.to_owned(), rows: Vec::new() });
                if !full.rows.is_empty() {
                    tx.blocking_send(Ok(Some(full))).map_err(|_| BackupError::Dump("the restore stopped".into()))?;
                }
            }
            batch.rows.push(row);
            Ok(())
        });
        let last = match read {
            Ok(_) => {
                if !batch.rows.is_empty() {
                    let _ = tx.blocking_send(Ok(Some(batch)));
                }
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        };
        let _ = tx.blocking_send(last);
    });
    let restored = db.restore(mode, rx).await;
    let _ = reader.await;
    restored?;
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_name_it() {
        // 2026-12-03T23:45:06Z
        let id = new_id(1_796_341_506_000_000);
        assert!(id.starts_with("soko-20261203T234506Z-"), "{id}");
        assert!(valid_id(&id));
        assert!(new_id(1_796_341_506_000_000) < new_id(1_796_341_507_000_000));
        assert!(!valid_id("../etc/passwd"));
        assert!(!valid_id("soko-a/b"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
