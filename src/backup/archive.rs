//! The backup file: gzip-compressed JSON lines.
//!
//! ```text
//! {"@":"header","format":"soko-backup","format_version":1,"id":…,"schema_version":…,…}
//! {"@":"table","name":"categories"}
//! {"id":"shoes","display_name":"Shoes","created_at":0}          one line per row
//! {"@":"end","name":"categories","rows":5,"sha256":"…"}         SHA-256 of the table's row lines
//! … every table …
//! {"@":"manifest","tables":[{"name":…,"rows":…,"sha256":…},…]}   last line
//! ```
//!
//! JSON lines keep the file readable with `zcat | head` and portable across backends; the
//! manifest comes last so the file can be written in one streaming pass, and a file without it
//! is known to be truncated. Rows are objects and control lines are the only ones with an `@`
//! key, which no table has.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
};

use flate2::{Compression, bufread::MultiGzDecoder, write::GzEncoder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackupError;
use crate::store::backup::{DumpItem, TABLES};

pub const FORMAT: &str = "soko-backup";
pub const FORMAT_VERSION: u32 = 1;

/// The first line: what the file is and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub id: String,
    /// Microseconds since the Unix epoch when the snapshot was taken.
    pub created_at: i64,
    /// The newest migration applied to the source database.
    pub schema_version: String,
    pub source_backend: String,
    pub soko_version: String,
}

/// One table's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "@", rename_all = "snake_case")]
enum Control {
    Header(Header),
    Table { name: String },
    End(TableSummary),
    Manifest { tables: Vec<TableSummary> },
}

/// What writing an archive produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub tables: Vec<TableSummary>,
    /// Compressed size in bytes.
    pub size: u64,
    /// SHA-256 of the compressed file.
    pub sha256: String,
}

/// Counts and hashes what passes through to the file, so the file's checksum costs no second read.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn line(out: &mut impl Write, control: &Control) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, control).map_err(|e| BackupError::Io(io::Error::other(e)))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes the archive to `path` from the dump's items, blocking on `items` (run it on a blocking
/// thread). The file is flushed and synced before this returns.
pub fn write(
    path: &Path,
    header: Header,
    items: &mut tokio::sync::mpsc::Receiver<DumpItem>,
) -> Result<Written, BackupError> {
    let file = File::create(path)?;
    let hashing = HashingWriter { inner: BufWriter::new(file), hasher: Sha256::new(), written: 0 };
    // Level 3: most of the ratio of level 6 at a fraction of the CPU; backups run beside traffic.
    let mut gz = GzEncoder::new(hashing, Compression::new(3));
    line(&mut gz, &Control::Header(header))?;
    let mut tables = Vec::new();
    let mut current: Option<(&'static str, Sha256, u64)> = None;
    while let Some(item) = items.blocking_recv() {
        match item {
            DumpItem::Table(name) => {
                line(&mut gz, &Control::Table { name: name.to_owned() })?;
                current = Some((name, Sha256::new(), 0));
            }
            DumpItem::Row(row) => {
                let (_, hasher, rows) =
                    current.as_mut().ok_or_else(|| BackupError::Dump("row outside a table".into()))?;
                hasher.update(row.as_bytes());
                hasher.update(b"\n");
                *rows += 1;
                gz.write_all(row.as_bytes())?;
                gz.write_all(b"\n")?;
            }
            DumpItem::End => {
                let (name, hasher, rows) =
                    current.take().ok_or_else(|| BackupError::Dump("end outside a table".into()))?;
                let summary = TableSummary { name: name.to_owned(), rows, sha256: hex(hasher.finalize()) };
                line(&mut gz, &Control::End(summary.clone()))?;
                tables.push(summary);
            }
        }
    }
    if tables.len() != TABLES.len() {
        return Err(BackupError::Dump(format!("the dump stopped after {} of {} tables", tables.len(), TABLES.len())));
    }
    line(&mut gz, &Control::Manifest { tables: tables.clone() })?;
    let mut hashing = gz.finish()?;
    hashing.flush()?;
    let HashingWriter { inner, hasher, written } = hashing;
    let file = inner.into_inner().map_err(|e| BackupError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok(Written { tables, size: written, sha256: hex(hasher.finalize()) })
}

/// What a verified archive holds.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub tables: Vec<TableSummary>,
    /// SHA-256 of the compressed file.
    pub sha256: String,
    pub size: u64,
}

impl Verified {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Reads the archive at `path`, checking its structure and every table's checksum, and hands
/// each row to `on_row(table, line)` as it goes. Any damage is an error; rows already handed out
/// before it must then be discarded by the caller (restore does so by rolling back).
pub fn read(
    path: &Path,
    mut on_row: impl FnMut(&str, String) -> Result<(), BackupError>,
) -> Result<Verified, BackupError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut file_hash = Sha256::new();
    let reader = BufReader::new(HashingReader { inner: file, hasher: &mut file_hash });
    let lines = BufReader::new(MultiGzDecoder::new(reader));
    let corrupt = |what: String| BackupError::Corrupt(what);

    let mut header = None;
    let mut ended: Vec<TableSummary> = Vec::new();
    let mut current: Option<(String, Sha256, u64)> = None;
    let mut manifest = None;
    for (number, text) in lines.lines().enumerate() {
        let text = text.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackupError::Truncated,
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                corrupt(format!("not a valid gzip stream: {e}"))
            }
            _ => BackupError::Io(e),
        })?;
        let number = number + 1;
        if manifest.is_some() {
            return Err(corrupt(format!("line {number}: data after the manifest")));
        }
        if text.starts_with("{\"@\"") {
            let control: Control =
                serde_json::from_str(&text).map_err(|e| corrupt(format!("line {number}: bad control line: {e}")))?;
            match control {
                Control::Header(h) if number == 1 => {
                    if h.format != FORMAT {
                        return Err(BackupError::NotABackup);
                    }
                    if h.format_version > FORMAT_VERSION {
                        return Err(BackupError::NewerFormat(h.format_version));
                    }
                    header = Some(h);
                }
                Control::Table { name } if current.is_none() => {
                    // Tables come in restore order, each once, so a restore can insert as it reads.
                    let expected = TABLES.get(ended.len()).copied();
                    if expected != Some(name.as_str()) {
                        return Err(corrupt(format!("line {number}: table `{name}` where `{expected:?}` was due")));
                    }
                    current = Some((name, Sha256::new(), 0));
                }
                Control::End(summary) => {
                    let Some((name, hasher, rows)) = current.take() else {
                        return Err(corrupt(format!("line {number}: end of a table that never began")));
                    };
                    let actual = TableSummary { name, rows, sha256: hex(hasher.finalize()) };
                    if actual != summary {
                        return Err(BackupError::ChecksumMismatch(actual.name));
                    }
                    ended.push(actual);
                }
                Control::Manifest { tables } => {
                    if current.is_some() || tables != ended || ended.len() != TABLES.len() {
                        return Err(corrupt("the manifest does not match the tables in the file".into()));
                    }
                    manifest = Some(tables);
                }
                _ => return Err(corrupt(format!("line {number}: control line out of place"))),
            }
        } else {
            if header.is_none() {
                return Err(BackupError::NotABackup);
            }
            let Some((name, hasher, rows)) = current.as_mut() else {
                return Err(corrupt(format!("line {number}: row outside a table")));
            };
            hasher.update(text.as_bytes());
            hasher.update(b"\n");
            *rows += 1;
            on_row(name, text)?;
        }
    }
    let header = header.ok_or(BackupError::NotABackup)?;
    let tables = manifest.ok_or(BackupError::Truncated)?;
    Ok(Verified { header, tables, sha256: hex(file_hash.finalize()), size })
}

struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: io::Read> io::Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
