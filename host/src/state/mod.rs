//! Checkpoints: the whole pipeline state at a batch boundary — source
//! position, watermark, and every plugin's operator state with the content
//! hash and state schema of the code that produced it — written atomically
//! (temporary file, fsync, rename) under `--data-dir`.
//!
//! On start the host restores the last checkpoint: the source resumes after
//! the recorded position, so every event is processed once into the state.
//! Outputs emitted after the last checkpoint are emitted again after a crash
//! (see `sink` for the guarantees per sink).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::OpState;
use crate::source::Position;
use crate::window::Watermark;

const FILE: &str = "checkpoint.bin";
const FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginCheckpoint {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub state_schema: u32,
    pub state: OpState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub id: u64,
    pub taken_at: i64,
    pub source: String,
    /// The next position of every source partition.
    pub positions: Vec<(i32, Position)>,
    pub watermark: Watermark,
    pub plugins: Vec<PluginCheckpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt or from another version: {why}")]
    Corrupt { path: PathBuf, why: String },
}

pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let cp: Checkpoint = postcard::from_bytes(&bytes).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if cp.format != FORMAT {
            return Err(StateError::Corrupt {
                path,
                why: format!("format {} (expected {FORMAT})", cp.format),
            });
        }
        Ok(Some(cp))
    }

    /// Write atomically: a crash leaves either the old or the new checkpoint.
    pub fn save(&self, cp: &Checkpoint) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |source| StateError::Io {
            path: tmp.clone(),
            source,
        };
        let bytes = postcard::to_allocvec(cp).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn clear(&self) -> Result<(), StateError> {
        match std::fs::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.path(),
                source,
            }),
        }
    }
}
