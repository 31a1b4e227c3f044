//! The state store: RocksDB under `--data-dir/state`. The pipeline's state
//! is written by atomic commits; each is a consistent cut at a batch
//! boundary: every changed key of every plugin's operator state (window
//! contents, detector states, timers), the source positions, the watermark,
//! each plugin's content hash and state schema, and the length of every
//! JSONL file.
//!
//! Layout (one column family, byte-ordered keys):
//!
//! | key                  | value                                           |
//! |----------------------|-------------------------------------------------|
//! | `m/commit`           | [`CommitMeta`] of the state in `s/`             |
//! | `s/<plugin>\0<key>`  | that key's entry (its windows, or state+timers) |
//! | `d/<id>`             | a logged [`Commit`] not yet folded into `s/`    |
//!
//! Operators track the keys they change, so a commit holds only those (a
//! swapped-in plugin with a new or migrated state rewrites its prefix). Keys
//! are also what the scale-out plan repartitions by (see
//! `docs/kafka-exactly-once-plan.md`).
//!
//! ## Without Kafka (simulator or file source, JSONL/InfluxDB sinks)
//!
//! Every `--checkpoint-interval` (10 s) the processing thread syncs the
//! sinks — InfluxDB points written or spooled to disk, JSONL files flushed
//! and fsynced — then applies the commit to `s/` and `m/commit` in one synced
//! `WriteBatch`. On restart the source resumes from the committed positions
//! and every JSONL file is cut back to its committed length, so the files end
//! up exactly as after an uninterrupted run.
//!
//! ## With the Kafka sink: commits in the transaction, checkpoints apart
//!
//! Every `--commit-interval` (100 ms) the processing thread hands a commit to
//! the committer thread (`crate::sink::kafka::Committer`) and goes on. The
//! committer, one commit after the other:
//!
//! 1. **logs** it: one synced put of `d/<id>`;
//! 2. **commits the Kafka transaction** that holds every output of the
//!    interval, the input offsets and the commit marker — offset `id` of
//!    partition 0 of the marker topic — for the consumer group
//!    (`send_offsets_to_transaction`).
//!
//! Every `--checkpoint-interval` the committer **folds** the logged commits
//! into `s/` (one synced `WriteBatch`; a key changed by a hundred commits is
//! written once) and RocksDB flushes its memtables. A commit costs one
//! sequential write; the per-key work happens once per checkpoint.
//!
//! The group's committed marker is the single point of truth: outputs,
//! input offsets and marker commit atomically in Kafka. On restart the host
//! calls `init_transactions` (which aborts a transaction the crashed process
//! left open and fences it), reads the marker `g`, folds the logged commits
//! up to `g` and discards those after it (their transactions aborted, so
//! their outputs and offsets never became visible). A crash at any point is
//! safe: before step 2 completes the interval is replayed from the previous
//! commit's positions; after it, its logged commit is folded in at restart.
//! When the store and the marker disagree in any other way — another host
//! committed for this group, the data dir was lost or restored from an old
//! copy — the host refuses to start and says so, before fencing anyone.
//!
//! The WebSocket stream is not part of the transaction: it shows outputs at
//! once (at-most-once per connection; after a crash, outputs of an aborted
//! interval are shown again when they are recomputed). JSONL files are
//! flushed at every commit and fsynced at every checkpoint; InfluxDB writes
//! are idempotent (series + timestamp).

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::pipeline::StateDelta;
use crate::source::Position;
use crate::window::Watermark;

pub const FORMAT: u32 = 3;

/// The keys of an operator's state changed since the last commit: what the
/// next commit writes.
#[derive(Debug, Clone, Default)]
pub struct ChangedKeys {
    keys: rustc_hash::FxHashSet<Box<str>>,
    /// Every key changed (new, reset or migrated state): the next commit
    /// rewrites the plugin's whole prefix.
    pub rewrite: bool,
}

impl ChangedKeys {
    pub fn touch(&mut self, key: &str) {
        if !self.keys.contains(key) {
            self.keys.insert(key.into());
        }
    }

    /// The changed keys, forgotten here.
    pub fn take(&mut self) -> rustc_hash::FxHashSet<Box<str>> {
        std::mem::take(&mut self.keys)
    }
}

/// Fault injection for the kill tests (`RTAP_FAULT_COMMIT_PAUSE_MS`): name
/// the commit phase on stderr and pause in it, so a SIGKILL lands there.
pub fn fault_phase(pause: Option<std::time::Duration>, phase: &str, id: u64) {
    if let Some(d) = pause {
        eprintln!("rtap-fault: {phase} commit {id}");
        std::thread::sleep(d);
    }
}

/// Write one plugin's changes into `batch`: its whole prefix first when it
/// is rewritten, then every changed key (`None`: deleted).
fn write_changes<'a>(
    batch: &mut WriteBatch,
    plugin: &str,
    rewrite: bool,
    changes: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) {
    if rewrite {
        batch.delete_range(prefix(plugin), prefix_end(plugin));
    }
    let mut key = prefix(plugin);
    let base = key.len();
    for (k, v) in changes {
        key.truncate(base);
        key.extend_from_slice(k.as_bytes());
        match v {
            Some(v) => batch.put(&key, v),
            None => batch.delete(&key),
        }
    }
}
const META: &[u8] = b"m/commit";
/// The commit log: `d/` + the commit id (big-endian, so in order).
const DELTA: &[u8] = b"d/";

fn delta_key(id: u64) -> Vec<u8> {
    let mut k = DELTA.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn delta_end() -> Vec<u8> {
    b"d0".to_vec()
}

fn delta_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(DELTA.len()..)?.try_into().ok()?))
}

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

    /// The ids of the logged commits (transactional mode), in order.
    pub fn delta_ids(&self) -> Result<Vec<u64>, StateError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(DELTA, rocksdb::Direction::Forward))
        {
            let (k, _) = item.map_err(self.db_err())?;
            if !k.starts_with(DELTA) {
                break;
            }
            out.push(delta_id(&k).ok_or_else(|| self.corrupt("a commit log key".into()))?);
        }
        Ok(out)
    }

    /// Step 1 of a transactional commit: append it to the commit log
    /// (synced). One sequential write, whatever the number of keys.
    pub fn log_commit(&self, c: &Commit) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(c).map_err(|e| self.corrupt(e.to_string()))?;
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_opt(delta_key(c.meta.id), bytes, &w)
            .map_err(self.db_err())
    }

    /// Drop the logged commits after `id` (their transactions did not
    /// commit); returns their ids.
    pub fn discard_after(&self, id: u64) -> Result<Vec<u64>, StateError> {
        let gone: Vec<u64> = self.delta_ids()?.into_iter().filter(|&d| d > id).collect();
        if let Some(&first) = gone.first() {
            let mut batch = WriteBatch::default();
            batch.delete_range(delta_key(first), delta_end());
            let mut w = WriteOptions::default();
            w.set_sync(true);
            self.db.write_opt(batch, &w).map_err(self.db_err())?;
        }
        Ok(gone)
    }

    /// Fold the logged commits up to `id` into the per-key state, in one
    /// atomic write (a checkpoint in transactional mode). A key changed by
    /// many commits is written once. Returns how many commits were folded.
    pub fn compact(&self, id: u64) -> Result<usize, StateError> {
        use std::collections::{BTreeMap, BTreeSet};
        // Per plugin: whether its prefix is rewritten, and its last change
        // per key.
        type Folded = (bool, BTreeMap<Box<str>, Option<Vec<u8>>>);
        let mut plugins: BTreeMap<String, Folded> = BTreeMap::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        if let Some(base) = self.last()? {
            seen.extend(base.plugins.iter().map(|p| p.name.clone()));
        }
        let mut last_meta = None;
        let mut folded = 0;
        for item in self
            .db
            .iterator(IteratorMode::From(DELTA, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(self.db_err())?;
            if !k.starts_with(DELTA) {
                break;
            }
            if delta_id(&k).is_none_or(|d| d > id) {
                break;
            }
            let c: Commit = postcard::from_bytes(&v)
                .map_err(|e| self.corrupt(format!("logged commit: {e}")))?;
            for p in c.plugins {
                let e = plugins.entry(p.name).or_default();
                if p.rewrite {
                    *e = (true, BTreeMap::new());
                }
                e.1.extend(p.changes);
            }
            seen.extend(c.meta.plugins.iter().map(|p| p.name.clone()));
            last_meta = Some(c.meta);
            folded += 1;
        }
        let Some(meta) = last_meta else {
            return Ok(0);
        };
        let mut batch = WriteBatch::default();
        for name in &seen {
            if !meta.plugins.iter().any(|p| &p.name == name) {
                batch.delete_range(prefix(name), prefix_end(name));
            }
        }
        for (name, (rewrite, changes)) in &plugins {
            write_changes(
                &mut batch,
                name,
                *rewrite,
                changes.iter().map(|(k, v)| (&**k, v.as_deref())),
            );
        }
        let m = postcard::to_allocvec(&meta).map_err(|e| self.corrupt(e.to_string()))?;
        batch.put(META, m);
        batch.delete_range(DELTA.to_vec(), delta_key(id + 1));
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(self.db_err())?;
        Ok(folded)
    }

    /// Apply a commit atomically (the direct path, without a Kafka
    /// transaction). `sync`: fsync the write-ahead log before returning.
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
            write_changes(
                &mut batch,
                &p.name,
                p.rewrite,
                p.changes.iter().map(|(k, v)| (&**k, v.as_deref())),
            );
        }
        let meta = postcard::to_allocvec(&c.meta).map_err(|e| self.corrupt(e.to_string()))?;
        batch.put(META, meta);
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
    fn logged_commits_fold_into_the_state_or_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path()).unwrap();
            for (id, kv) in [
                (1, vec![("k1", Some("1")), ("k2", Some("2"))]),
                (2, vec![("k1", Some("1b")), ("k2", None)]),
                (3, vec![("k3", Some("3"))]),
            ] {
                let c = Commit {
                    meta: meta(id, &["a"]),
                    plugins: vec![change("a", id == 1, &kv)],
                };
                s.log_commit(&c).unwrap();
            }
        }
        // Reopened as after a crash: commit 3's transaction did not commit.
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.delta_ids().unwrap(), vec![1, 2, 3]);
        assert!(
            keys(&s, "a").is_empty(),
            "logged commits are not folded yet"
        );
        assert_eq!(s.discard_after(2).unwrap(), vec![3]);
        assert_eq!(s.compact(2).unwrap(), 2);
        assert!(s.delta_ids().unwrap().is_empty());
        assert_eq!(keys(&s, "a"), vec![("k1".into(), "1b".into())]);
        assert_eq!(s.last().unwrap().unwrap().id, 2);
        assert_eq!(s.compact(5).unwrap(), 0, "nothing left to fold");
        s.clear().unwrap();
        assert!(s.last().unwrap().is_none());
        assert!(keys(&s, "a").is_empty());
    }
}
