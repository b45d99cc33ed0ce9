//! Where deployments live: the record of each deployed component (its current version and
//! the ones before, for rollback) and the bytes of every version, by content hash. On disk
//! always; in Redis too when it is configured ([`super::cluster`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::DeploySpec;

/// Versions kept per component for rollback, besides the current one.
pub const HISTORY: usize = 5;

/// One version of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Short id of this deployment (bytes, settings and time).
    pub version: String,
    /// SHA-256 of the wasm bytes, hex.
    pub hash: String,
    pub deployed_at_ms: u64,
    /// Every limit filled in; `triggers: None` means the manifest's triggers.
    pub spec: DeploySpec,
    /// Where the bytes are when they are not in the blob store: a manifest component's
    /// own file (the version a first deploy replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

/// A component's deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentRecord {
    pub name: String,
    /// `None` once deleted: the record stays so that a restart does not bring it back.
    pub current: Option<Deployment>,
    /// Earlier versions, oldest first, at most [`HISTORY`].
    #[serde(default)]
    pub history: Vec<Deployment>,
}

impl ComponentRecord {
    /// Makes `next` current, keeping the previous one for rollback.
    pub fn push(&mut self, next: Deployment) {
        if let Some(previous) = self.current.take() {
            self.history.push(previous);
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.current = Some(next);
    }
}

/// The state folder: `components/NAME.json` and `blobs/HASH.wasm`.
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["components", "blobs"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| {
                format!("creating the state folder `{}`", dir.join(sub).display())
            })?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{hash}.wasm"))
    }

    /// Stores `bytes` under their hash (once; a blob never changes).
    pub fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.blob_path(hash);
        if !path.is_file() {
            write_atomically(&path, bytes)?;
        }
        Ok(path)
    }

    pub fn put_record(&self, record: &ComponentRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).context("encoding a deployment record")?;
        write_atomically(
            &self
                .dir
                .join("components")
                .join(format!("{}.json", record.name)),
            &json,
        )
    }

    /// Every record in the folder; one that cannot be read is skipped with a warning.
    pub fn records(&self) -> Vec<ComponentRecord> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("components")) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
            {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable deployment record: {e}")
                }
            }
        }
        records.sort_by(|a: &ComponentRecord, b| a.name.cmp(&b.name));
        records
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to `{}`", path.display()))
}

/// The default state folder: `$XDG_STATE_HOME/llmchat`, or `~/.local/state/llmchat`.
pub fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("llmchat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(version: &str) -> Deployment {
        Deployment {
            version: version.into(),
            hash: "h".into(),
            deployed_at_ms: 1,
            spec: DeploySpec::default(),
            source: None,
        }
    }

    #[test]
    fn records_round_trip_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let mut record = ComponentRecord {
            name: "hello".into(),
            ..Default::default()
        };
        for v in 0..10 {
            record.push(deployment(&v.to_string()));
        }
        assert_eq!(record.history.len(), HISTORY);
        assert_eq!(record.history[0].version, "4");
        store.put_record(&record).unwrap();
        assert_eq!(store.records(), vec![record]);
        let path = store.put_blob("abc", b"bytes").unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"bytes");
    }
}
