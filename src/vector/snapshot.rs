//! Snapshots of the vector index, so a restart loads the graph instead of rebuilding it (minutes
//! at 100k vectors). A snapshot carries the caller's position in whatever feeds the index (a
//! watermark, and the positions applied beyond it: for the search service, outbox ids), so the
//! caller replays only what came after.
//!
//! Layout of the snapshot directory:
//! - `snap-<millis>/`: one complete snapshot — the index files and `meta.json` (parameters,
//!   watermark, and a SHA-256 of every other file);
//! - `CURRENT`: the name of the snapshot to load.
//!
//! A snapshot is written into a temporary directory, every file fsynced, the directory renamed to
//! its final name, and only then is `CURRENT` replaced (temporary file, fsync, rename). A crash
//! at any point leaves the previous snapshot in force. Anything that does not check out on load —
//! missing files, a digest mismatch, other index parameters — is refused, and the caller
//! rebuilds from its source.

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{HnswParams, Key, VectorIndex};

/// 2: half-precision vectors and our own graph's links (1 was hnsw_rs's dump).
const FORMAT: u32 = 2;
const CURRENT: &str = "CURRENT";
const META: &str = "meta.json";

/// Where snapshots go and how often they are taken.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    pub interval: Duration,
    /// What the index mirrors, in the caller's words (the search service: the redacted database
    /// URL). A snapshot of another source (a data directory reused against a new
    /// `DATABASE_URL`) would carry a position in a different feed, so it is refused.
    pub source: String,
}

/// What a snapshot restores: the index and the caller's position in its feed.
pub struct Restored<K> {
    pub index: VectorIndex<K>,
    pub watermark: i64,
    pub applied_above: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    dim: usize,
    metric: String,
    m: usize,
    ef_construction: usize,
    /// SHA-256 of [`SnapshotConfig::source`].
    source: String,
    watermark: i64,
    applied_above: Vec<i64>,
    /// File name → hex SHA-256.
    files: Vec<(String, String)>,
}

fn metric_name(params: &HnswParams) -> String {
    format!("{:?}", params.metric).to_ascii_lowercase()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a snapshot of `index` at `watermark` and makes it the current one. Older snapshots are
/// removed once the new one is in force. Returns the snapshot's directory.
pub fn write<K: Key>(
    config: &SnapshotConfig,
    index: &VectorIndex<K>,
    watermark: i64,
    applied_above: &[i64],
) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(&config.dir)?;
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let name = format!("snap-{millis}");
    let tmp = config.dir.join(format!("tmp-{millis}-{}", std::process::id()));
    fs::create_dir(&tmp)?;
    let result = (|| -> anyhow::Result<()> {
        let mut files = Vec::new();
        for path in index.dump(&tmp)? {
            File::open(&path)?.sync_all()?;
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            files.push((file_name, sha256_file(&path)?));
        }
        let params = index.params();
        let meta = Meta {
            format: FORMAT,
            dim: index.dim(),
            metric: metric_name(&params),
            m: params.m,
            ef_construction: params.ef_construction,
            source: sha256_hex(config.source.as_bytes()),
            watermark,
            applied_above: applied_above.to_vec(),
            files,
        };
        let mut out = File::create(tmp.join(META))?;
        out.write_all(&serde_json::to_vec(&meta)?)?;
        out.sync_all()?;
        fsync_dir(&tmp)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = config.dir.join(&name);
    fs::rename(&tmp, &dest)?;
    fsync_dir(&config.dir)?;
    let pointer = config.dir.join(format!("{CURRENT}.tmp"));
    let mut out = File::create(&pointer)?;
    out.write_all(name.as_bytes())?;
    out.sync_all()?;
    fs::rename(&pointer, config.dir.join(CURRENT))?;
    fsync_dir(&config.dir)?;
    // Only now are the older snapshots (and any temporary directory a crash left) garbage.
    for entry in fs::read_dir(&config.dir)?.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if (file_name.starts_with("snap-") && file_name != name) || file_name.starts_with("tmp-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(dest)
}

/// Why there is nothing to restore.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no snapshot yet")]
    Missing,
    #[error("snapshot was taken with other index settings ({0}); rebuilding")]
    Settings(String),
    #[error("snapshot is unusable: {0}")]
    Corrupt(String),
}

/// Loads the current snapshot, if there is one that checks out for these settings.
pub fn load<K: Key>(config: &SnapshotConfig, dim: usize, params: HnswParams) -> Result<Restored<K>, LoadError> {
    let name = match fs::read_to_string(config.dir.join(CURRENT)) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Corrupt(format!("reading {CURRENT}: {e}"))),
    };
    let name = name.trim();
    if !name.starts_with("snap-") || name.contains(['/', '\\']) {
        return Err(LoadError::Corrupt(format!("{CURRENT} names {name:?}")));
    }
    let dir = config.dir.join(name);
    let corrupt = |what: &str, e: &dyn std::fmt::Display| LoadError::Corrupt(format!("{what}: {e}"));
    let raw = fs::read(dir.join(META)).map_err(|e| corrupt(META, &e))?;
    let meta: Meta = serde_json::from_slice(&raw).map_err(|e| corrupt(META, &e))?;
    let expected = (FORMAT, dim, metric_name(&params), params.m, params.ef_construction);
    let found = (meta.format, meta.dim, meta.metric.clone(), meta.m, meta.ef_construction);
    if expected != found {
        return Err(LoadError::Settings(format!(
            "format/dim/metric/M/ef_construction {found:?}, configured {expected:?}"
        )));
    }
    if meta.source != sha256_hex(config.source.as_bytes()) {
        return Err(LoadError::Settings("taken from another source".into()));
    }
    for (file, digest) in &meta.files {
        if file.contains(['/', '\\']) {
            return Err(LoadError::Corrupt(format!("meta lists {file:?}")));
        }
        let actual = sha256_file(&dir.join(file)).map_err(|e| corrupt(file, &e))?;
        if &actual != digest {
            return Err(LoadError::Corrupt(format!("{file} does not match its digest")));
        }
    }
    let index = VectorIndex::load(&dir, dim, params).map_err(|e| corrupt("index", &e))?;
    Ok(Restored { index, watermark: meta.watermark, applied_above: meta.applied_above })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::synthetic::Mixture;
    use uuid::Uuid;

    fn config(dir: &Path) -> SnapshotConfig {
        SnapshotConfig { dir: dir.to_path_buf(), interval: Duration::from_secs(60), source: "sqlite:a.db".into() }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("soko-snapshot-{name}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample_index(n: usize) -> (VectorIndex<Uuid>, Vec<(Uuid, Vec<f32>)>) {
        let mut mixture = Mixture::embedding_like(7, 16);
        let data: Vec<(Uuid, Vec<f32>)> = (0..n).map(|_| (Uuid::new_v4(), mixture.sample())).collect();
        let mut index = VectorIndex::new(16, HnswParams::default(), n);
        for (id, v) in &data {
            index.upsert(*id, v);
        }
        index.remove(data[0].0);
        (index, data)
    }

    #[test]
    fn a_snapshot_restores_the_same_answers_and_watermark() {
        let dir = temp_dir("roundtrip");
        let (index, data) = sample_index(300);
        write(&config(&dir), &index, 42, &[44, 45]).unwrap();
        let restored = load(&config(&dir), 16, HnswParams::default()).unwrap();
        assert_eq!((restored.watermark, restored.applied_above.as_slice()), (42, [44, 45].as_slice()));
        assert_eq!(restored.index.len(), index.len());
        for (_, q) in data.iter().take(20) {
            assert_eq!(restored.index.search(q, 5, |_| true, None), index.search(q, 5, |_| true, None));
        }
        assert!(restored.index.vector(data[0].0).is_none(), "a removed key stays removed");
        // And it keeps taking inserts.
        let mut restored = restored.index;
        let late = Uuid::new_v4();
        restored.upsert(late, &data[5].1);
        assert!(restored.search(&data[5].1, 2, |_| true, None).iter().any(|h| h.key == late));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_new_snapshot_replaces_the_old_and_a_damaged_one_is_refused() {
        let dir = temp_dir("damage");
        assert!(matches!(load::<Uuid>(&config(&dir), 16, HnswParams::default()), Err(LoadError::Missing)));
        let (index, _) = sample_index(100);
        let first = write(&config(&dir), &index, 1, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = write(&config(&dir), &index, 2, &[]).unwrap();
        assert!(!first.exists() && second.exists(), "only the current snapshot is kept");
        let other = HnswParams { m: 16, ..HnswParams::default() };
        assert!(matches!(load::<Uuid>(&config(&dir), 16, other), Err(LoadError::Settings(_))));
        assert!(matches!(load::<Uuid>(&config(&dir), 8, HnswParams::default()), Err(LoadError::Settings(_))));
        let elsewhere = SnapshotConfig { source: "postgres://db/other".into(), ..config(&dir) };
        assert!(matches!(load::<Uuid>(&elsewhere, 16, HnswParams::default()), Err(LoadError::Settings(_))));

        // Flip one byte of the graph: the digest catches it.
        let graph = second.join("links.u32");
        let mut bytes = fs::read(&graph).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xFF;
        fs::write(&graph, bytes).unwrap();
        assert!(matches!(load::<Uuid>(&config(&dir), 16, HnswParams::default()), Err(LoadError::Corrupt(_))));
        // A truncated meta file, too.
        fs::write(second.join(META), b"{\"format\":").unwrap();
        assert!(matches!(load::<Uuid>(&config(&dir), 16, HnswParams::default()), Err(LoadError::Corrupt(_))));
        fs::remove_dir_all(dir).unwrap();
    }
}
