//! `soko backup …`: the operator's side of backups, against the database in `DATABASE_URL`.

use std::{io::Read, path::Path, process::ExitCode, time::Duration};

use sha2::{Digest, Sha256};

use super::{BackupError, Backups, State, Trigger};
use crate::{
    configuration::Config,
    domain::product::Timestamp,
    store::{Db, PoolSettings, backup::RestoreMode},
};

pub const USAGE: &str = "\
  backup create [--reason TEXT]
                   take a backup now into SOKO_BACKUP_DIR and wait for it
  backup list      list backups with state, size, row counts and whether the file still matches
                   its recorded checksum
  backup verify FILE
                   check a backup file (structure, every table's checksum, schema) without restoring
  backup restore FILE [--replace]
                   restore into DATABASE_URL, which must be empty unless --replace (stop the
                   servers first); the search index rebuilds from the restored outbox on start
  backup prune     delete backups past SOKO_BACKUP_RETENTION_DAYS (keeping SOKO_BACKUP_KEEP_MIN)";

/// Parsed `soko backup` arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Create { reason: String },
    List,
    Verify { file: String },
    Restore { file: String, replace: bool },
    Prune,
}

impl Command {
    pub fn parse(args: &[&str]) -> Option<Self> {
        Some(match args {
            ["create"] => Self::Create { reason: String::new() },
            ["create", "--reason", reason] => Self::Create { reason: (*reason).to_owned() },
            ["list"] => Self::List,
            ["verify", file] => Self::Verify { file: (*file).to_owned() },
            ["restore", file] => Self::Restore { file: (*file).to_owned(), replace: false },
            ["restore", file, "--replace"] | ["restore", "--replace", file] => {
                Self::Restore { file: (*file).to_owned(), replace: true }
            }
            ["prune"] => Self::Prune,
            _ => return None,
        })
    }
}

fn connect(config: &Config) -> Result<Db, BackupError> {
    let settings = PoolSettings { max_size: 2, checkout_timeout: Duration::from_secs(30) };
    Ok(Db::connect(&config.database, &settings)?)
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub async fn run(config: &Config, command: Command) -> ExitCode {
    match execute(config, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soko backup: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(config: &Config, command: Command) -> Result<(), BackupError> {
    match command {
        Command::Create { reason } => {
            let db = connect(config)?;
            db.migrate().await?;
            let info = Backups::new(db, config.backups.clone()).create(Trigger::Manual, &reason).await?;
            println!("{}", info.location);
            println!(
                "  {} rows in {} tables, {} bytes, sha256 {}",
                info.total_rows(),
                info.tables.len(),
                info.size,
                info.sha256
            );
        }
        Command::List => {
            // Listing reads only files; no database connection is needed.
            let backups = Backups::new(connect(config)?, config.backups.clone());
            println!("{:<36} {:<9} {:<9} {:>12} {:>10}  checksum", "id", "state", "trigger", "bytes", "rows");
            for info in backups.list()? {
                let checksum = match (info.state, backups.archive_of(&info.id)) {
                    (State::Succeeded, Ok(path)) => match file_sha256(&path) {
                        Ok(sha) if sha == info.sha256 => "ok".to_owned(),
                        Ok(_) => "MISMATCH".to_owned(),
                        Err(e) => format!("unreadable: {e}"),
                    },
                    (State::Succeeded, Err(_)) => "missing file".to_owned(),
                    _ => "-".to_owned(),
                };
                let state = format!("{:?}", info.state).to_lowercase();
                let trigger = format!("{:?}", info.trigger).to_lowercase();
                println!(
                    "{:<36} {state:<9} {trigger:<9} {:>12} {:>10}  {checksum}{}",
                    info.id,
                    info.size,
                    info.total_rows(),
                    if info.error.is_empty() { String::new() } else { format!("  ({})", info.error) }
                );
            }
        }
        Command::Verify { file } => {
            let verified = super::verify(Path::new(&file)).await?;
            println!(
                "ok: backup {} of schema {} from {}, {} bytes, sha256 {}",
                verified.header.id,
                verified.header.schema_version,
                verified.header.source_backend,
                verified.size,
                verified.sha256
            );
            for table in &verified.tables {
                println!("  {:<16} {:>10} rows  sha256 {}", table.name, table.rows, table.sha256);
            }
        }
        Command::Restore { file, replace } => {
            let db = connect(config)?;
            let mode = if replace { RestoreMode::Replace } else { RestoreMode::IntoEmpty };
            let started = std::time::Instant::now();
            let verified = super::restore(&db, Path::new(&file), mode).await?;
            println!(
                "restored backup {} into {}: {} rows in {:.1} s",
                verified.header.id,
                db.backend(),
                verified.total_rows(),
                started.elapsed().as_secs_f64()
            );
            println!(
                "before starting servers on it, empty each replica's SOKO_SNAPSHOT_DIR: the search index rebuilds from the restored outbox"
            );
        }
        Command::Prune => {
            let backups = Backups::new(connect(config)?, config.backups.clone());
            for id in backups.prune(Timestamp::now().0)? {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands() {
        assert_eq!(Command::parse(&["list"]), Some(Command::List));
        assert_eq!(
            Command::parse(&["restore", "--replace", "f"]),
            Some(Command::Restore { file: "f".into(), replace: true })
        );
        assert_eq!(Command::parse(&["restore", "f"]), Some(Command::Restore { file: "f".into(), replace: false }));
        assert_eq!(Command::parse(&["create", "--reason", "r"]), Some(Command::Create { reason: "r".into() }));
        assert_eq!(Command::parse(&["restore"]), None);
        assert_eq!(Command::parse(&["verify"]), None);
        assert_eq!(Command::parse(&["drop"]), None);
    }
}
