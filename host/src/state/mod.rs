//! The state store: RocksDB under `--data-dir/state`, written by atomic
//! commits. One commit is a consistent cut of the pipeline at a batch
//! boundary: every changed key of every plugin's operator state (window
//! contents, detector states, timers), the source positions, the watermark,
//! each plugin's content hash and state schema, and the committed length of
//! every JSONL file — in one `WriteBatch`, so a crash leaves the store at one
//! commit or the next, never between.
//!
//! Layout (one column family, byte-ordered keys):
//!
//! | key                         | value                                     |
//! |-----------------------------|-------------------------------------------|
//! | `m/commit`                  | [`CommitMeta`] of the last applied commit |
//! | `m/pending`                 | a prepared [`Commit`] (transactional mode)|
//! | `s/<plugin>\0<key>`         | that key's entry (windows, or state+timers)|
//!
//! Per-key entries make commits incremental: the operators track the keys
//! they changed, and a commit writes only those (a swapped-in plugin with a
//! new or migrated state rewrites its whole prefix). Keys are what the
//! scale-out plan repartitions by (see `docs/kafka-exactly-once-plan.md`).
//!
//! ## Commit protocol
//!
//! *Without a transactional sink* (simulator or file source, JSONL/InfluxDB
//! sinks), the runner commits every `--checkpoint-interval`: InfluxDB points
//! are written or spooled to disk, JSONL files are flushed and fsynced, then
//! the commit is applied with a synced write. On restart the store gives the
//! positions to resume from, and every JSONL file is cut back to its
//! committed length, so its content is exactly that of an uninterrupted run.
//!
//! *With the Kafka sink* (transactional), the runner commits every
//! `--commit-interval` (default 100 ms) in three steps:
//!
//! 1. **prepare**: the commit is written to `m/pending` (synced);
//! 2. **Kafka**: the input offsets and a commit marker — the offset
//!    `commit id` of partition 0 of the marker topic — are sent to the
//!    consumer group inside the producer's transaction, which also holds
//!    every output of the interval; then the transaction commits;
//! 3. **apply**: the pending commit is applied to the state and removed.
//!
//! The consumer group's committed marker is the single point of truth: the
//! transaction commits the outputs, the input offsets and the marker
//! atomically. On restart the host first calls `init_transactions` (which
//! aborts a transaction left open by the crashed process and fences it), then
//! reads the marker: a pending commit whose id equals the marker is rolled
//! forward; any other pending commit is discarded (its transaction aborted).
//! A crash before step 2 completes therefore loses nothing (the interval is
//! replayed from the last commit's positions), a crash after it loses
//! nothing either (the pending commit is applied at restart). When the
//! marker and the store disagree in any other way — another host committed
//! for this group, the data dir was lost or restored from an old copy — the
//! host refuses to start and says so.

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::pipeline::StateDelta;
use crate::source::Position;
use crate::window::Watermark;

pub const FORMAT: u32 = 3;
const META: &[u8] = b"m/commit";
const PENDING: &[u8] = b"m/pending";

/// A plugin as the last commit saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginMeta {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub state_schema: u32,
    /// The operator-wide part of its state.
    pub op_meta: Vec<u8>,
}

/// Everything of a commit except the per-key entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitMeta {
    pub format: u32,
    /// The commit sequence number (the marker committed to Kafka).
    pub id: u64,
    pub taken_at: i64,
    pub source: String,
    /// The next position of every source partition.
    pub positions: Vec<(i32, Position)>,
    pub watermark: Watermark,
    pub plugins: Vec<PluginMeta>,
    /// Every JSONL file with its length at this commit.
    pub files: Vec<(String, u64)>,
    /// Whether the commit went through a Kafka transaction.
    pub transactional: bool,
}

/// One plugin's changed keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginChanges {
    pub name: String,
    pub rewrite: bool,
    pub changes: Vec<(Box<str>, Option<Vec<u8>>)>,
}

impl PluginChanges {
    pub fn new(name: &str, d: StateDelta) -> (Self, Vec<u8>) {
        (
            PluginChanges {
                name: name.to_string(),
                rewrite: d.rewrite,
                changes: d.changes,
            },
            d.meta,
        )
    }
}

/// A commit: the meta and the changed keys of every plugin.
#[derive(Debug, Serialize, Deserialize)]
pub struct Commit {
    pub meta: CommitMeta,
    pub plugins: Vec<PluginChanges>,
}

impl Commit {
    pub fn keys(&self) -> usize {
        self.plugins.iter().map(|p| p.changes.len()).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {why}")]
    Db { path: PathBuf, why: String },
    #[error("state store {path} is corrupt or from another version: {why}")]
    Corrupt { path: PathBuf, why: String },
}

pub struct StateStore {
    db: DB,
    path: PathBuf,
}

fn prefix(plugin: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(plugin.len() + 3);
    k.extend_from_slice(b"s/");
    k.extend_from_slice(plugin.as_bytes());
    k.push(0);
    k
}

fn prefix_end(plugin: &str) -> Vec<u8> {
    let mut k = prefix(plugin);
    *k.last_mut().expect("non-empty") = 1;
    k
}

impl StateStore {
    /// Open (or create) the store in `<data_dir>/state`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let path = data_dir.join("state");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        let db = DB::open(&opts, &path).map_err(|e| StateError::Db {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let old = data_dir.join("checkpoint.bin");
        if old.exists() {
            tracing::warn!(path = %old.display(), "ignoring a checkpoint file of an older rtap (state now lives in RocksDB)");
        }
        Ok(StateStore { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self) -> impl Fn(rocksdb::Error) -> StateError + '_ {
        |e| StateError::Db {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    fn corrupt(&self, why: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            why,
        }
    }

    /// The meta of the last applied commit.
    pub fn last(&self) -> Result<Option<CommitMeta>, StateError> {
        let Some(bytes) = self.db.get(META).map_err(self.db_err())? else {
            return Ok(None);
        };
        let meta: CommitMeta = postcard::from_bytes(&bytes)
            .map_err(|e| self.corrupt(format!("commit record: {e}")))?;
        if meta.format != FORMAT {
            return Err(self.corrupt(format!("format {} (expected {FORMAT})", meta.format)));
        }
        Ok(Some(meta))
    }

    /// A prepared commit whose Kafka transaction may or may not have
    /// committed.
    pub fn pending(&self) -> Result<Option<Commit>, StateError> {
        let Some(bytes) = self.db.get(PENDING).map_err(self.db_err())? else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(format!("pending commit: {e}")))
    }

    /// Step 1 of a transactional commit: make it durable as pending.
    pub fn prepare(&self, c: &Commit) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(c).map_err(|e| self.corrupt(e.to_string()))?;
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.put_opt(PENDING, bytes, &w).map_err(self.db_err())
    }

    /// Drop a pending commit (its transaction did not commit).
    pub fn discard_pending(&self) -> Result<(), StateError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.delete_opt(PENDING, &w).map_err(self.db_err())
    }

    /// Apply a commit atomically (and remove the pending copy, if any).
    /// `sync`: fsync the write-ahead log before returning.
    pub fn apply(&self, c: &Commit, sync: bool) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        if let Some(prev) = self.last()? {
            for p in &prev.plugins {
                if !c.meta.plugins.iter().any(|q| q.name == p.name) {
                    batch.delete_range(prefix(&p.name), prefix_end(&p.name));
                }
            }
        }
        for p in &c.plugins {
            let pre = prefix(&p.name);
            if p.rewrite {
                batch.delete_range(pre.clone(), prefix_end(&p.name));
            }
            let mut key = pre;
            let base = key.len();
            for (k, v) in &p.changes {
                key.truncate(base);
                key.extend_from_slice(k.as_bytes());
                match v {
                    Some(v) => batch.put(&key, v),
                    None => batch.delete(&key),
                }
            }
        }
        let meta = postcard::to_allocvec(&c.meta).map_err(|e| self.corrupt(e.to_string()))?;
        batch.put(META, meta);
        batch.delete(PENDING);
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        self.db.write_opt(batch, &w).map_err(self.db_err())
    }

    /// Every stored entry of a plugin: (key, entry).
    pub fn entries(&self, plugin: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let pre = prefix(plugin);
        let mut out = Vec::new();
        let it = self
            .db
            .iterator(IteratorMode::From(&pre, rocksdb::Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(self.db_err())?;
            if !k.starts_with(&pre) {
                break;
            }
            let key = std::str::from_utf8(&k[pre.len()..])
                .map_err(|e| self.corrupt(format!("plugin `{plugin}`: a key is not UTF-8: {e}")))?;
            out.push((key.to_string(), v.to_vec()));
        }
        Ok(out)
    }

    /// Write the memtables to disk (bounds the log replayed at start).
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map_err(self.db_err())
    }

    /// Forget everything.
    pub fn clear(&self) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(b"".as_slice(), b"\xff\xff\xff\xff".as_slice());
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(self.db_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, plugins: &[&str]) -> CommitMeta {
        CommitMeta {
            format: FORMAT,
            id,
            taken_at: 0,
            source: "file:x".into(),
            positions: vec![(
                0,
                Position {
                    offset: id,
                    seq: id,
                },
            )],
            watermark: Watermark::new(0, 0),
            plugins: plugins
                .iter()
                .map(|n| PluginMeta {
                    name: n.to_string(),
                    hash: "h".into(),
                    version: "1".into(),
                    state_schema: 1,
                    op_meta: vec![],
                })
                .collect(),
            files: vec![],
            transactional: false,
        }
    }

    fn change(name: &str, rewrite: bool, kv: &[(&str, Option<&str>)]) -> PluginChanges {
        PluginChanges {
            name: name.into(),
            rewrite,
            changes: kv
                .iter()
                .map(|(k, v)| ((*k).into(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn keys(s: &StateStore, p: &str) -> Vec<(String, String)> {
        s.entries(p)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn commits_are_incremental_and_rewrites_and_removals_clear_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert!(s.last().unwrap().is_none());
        let c = Commit {
            meta: meta(1, &["a", "ab"]),
            plugins: vec![
                change("a", true, &[("k1", Some("1")), ("k2", Some("2"))]),
                change("ab", true, &[("k1", Some("x"))]),
            ],
        };
        s.apply(&c, true).unwrap();
        let c = Commit {
            meta: meta(2, &["a", "ab"]),
            plugins: vec![change("a", false, &[("k1", None), ("k3", Some("3"))])],
        };
        s.apply(&c, true).unwrap();
        assert_eq!(
            keys(&s, "a"),
            vec![("k2".into(), "2".into()), ("k3".into(), "3".into())]
        );
        assert_eq!(keys(&s, "ab"), vec![("k1".into(), "x".into())]);
        // A rewrite replaces the prefix; a plugin missing from the meta goes.
        let c = Commit {
            meta: meta(3, &["a"]),
            plugins: vec![change("a", true, &[("k9", Some("9"))])],
        };
        s.apply(&c, true).unwrap();
        assert_eq!(keys(&s, "a"), vec![("k9".into(), "9".into())]);
        assert!(keys(&s, "ab").is_empty());
        assert_eq!(s.last().unwrap().unwrap().id, 3);
    }

    #[test]
    fn a_prepared_commit_survives_reopening_until_applied_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let c = Commit {
            meta: meta(7, &["a"]),
            plugins: vec![change("a", false, &[("k", Some("v"))])],
        };
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.prepare(&c).unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        let p = s.pending().unwrap().unwrap();
        assert_eq!(p.meta.id, 7);
        assert!(keys(&s, "a").is_empty(), "pending is not applied yet");
        s.apply(&p, false).unwrap();
        assert!(s.pending().unwrap().is_none());
        assert_eq!(keys(&s, "a"), vec![("k".into(), "v".into())]);
        s.prepare(&c).unwrap();
        s.discard_pending().unwrap();
        assert!(s.pending().unwrap().is_none());
        s.clear().unwrap();
        assert!(s.last().unwrap().is_none());
        assert!(keys(&s, "a").is_empty());
    }
}
