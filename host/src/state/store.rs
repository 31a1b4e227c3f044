//! The state store: RocksDB under `--data-dir/state`, written by atomic
//! commits. Each commit is a consistent cut: the changed keys of every
//! plugin's operator state, and a meta record (what the checkpoint protocol
//! keeps beside the state: positions, watermark, plugin hashes… — opaque
//! here but for the plugins it names; see `crate::checkpoint`).
//!
//! Layout (one column family, byte-ordered keys):
//!
//! | key                  | value                                           |
//! |----------------------|-------------------------------------------------|
//! | `m/commit`           | the meta of the state in `s/`                   |
//! | `s/<plugin>\0<key>`  | that key's entry (its windows, or state+timers) |
//! | `d/<id>`             | a logged [`Commit`] not yet folded into `s/`    |
//!
//! Two ways in: [`StateStore::apply`] writes a commit straight into `s/`
//! (one synced batch); [`StateStore::log_commit`] appends it to the commit
//! log, and a later [`StateStore::fold`] (or [`StateStore::compact`], from
//! the log) merges the logged commits into `s/` in one write.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StateError;
use super::codec::Changes;
use super::fold::{Fold, newest_changes};
use super::prefetch;
use super::table::StateDelta;

/// What the store needs to know of a commit's meta record.
pub trait Meta: Serialize + DeserializeOwned {
    /// The commit's sequence number.
    fn id(&self) -> u64;
    /// The plugins whose state the commit holds: a plugin missing from the
    /// newest commit was removed, and its keys go.
    fn plugins(&self) -> impl Iterator<Item = &str>;
    /// Refuse a record this build cannot read (another format).
    fn check(&self) -> Result<(), String>;
}

/// Write one plugin's changes into `batch`: its whole prefix first when it
/// is rewritten, then every changed key (`None`: deleted).
fn write_changes<'a>(
    batch: &mut WriteBatch,
    plugin: &str,
    rewrite: bool,
    changes: impl Iterator<Item = Result<(&'a str, Option<&'a [u8]>), String>>,
) -> Result<(), String> {
    if rewrite {
        batch.delete_range(prefix(plugin), prefix_end(plugin));
    }
    let mut key = prefix(plugin);
    let base = key.len();
    for c in changes {
        let (k, v) = c?;
        key.truncate(base);
        key.extend_from_slice(k.as_bytes());
        match v {
            Some(v) => batch.put(&key, v),
            None => batch.delete(&key),
        }
    }
    Ok(())
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

/// One plugin's changed keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginChanges {
    pub name: String,
    pub rewrite: bool,
    pub changes: Changes,
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
pub struct Commit<M> {
    pub meta: M,
    pub plugins: Vec<PluginChanges>,
}

impl<M> Commit<M> {
    pub fn keys(&self) -> usize {
        self.plugins.iter().map(|p| p.changes.len()).sum()
    }
}

pub struct StateStore<M> {
    db: DB,
    path: PathBuf,
    meta: PhantomData<fn() -> M>,
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

/// How the state store uses RocksDB.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// The memtable size (`--state-write-buffer`).
    pub write_buffer: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            write_buffer: 256 << 20,
        }
    }
}

impl<M: Meta> StateStore<M> {
    /// Open (or create) the store in `<data_dir>/state`.
    pub fn open(data_dir: &Path, cfg: &StoreConfig) -> Result<Self, StateError> {
        let path = data_dir.join("state");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Level 0 uncompressed: it holds the commit log (`d/`, ~17 MB/s of
        // already compact records at 100 000 events/s) that the next fold
        // deletes, and compressing it on every memtable flush was the
        // flush thread's main cost. The levels below keep LZ4.
        use rocksdb::DBCompressionType::{Lz4, None as Plain};
        opts.set_compression_per_level(&[Plain, Lz4, Lz4, Lz4, Lz4, Lz4, Lz4]);
        opts.set_max_background_jobs(2);
        // A memtable big enough for a checkpoint interval of commit log
        // (~96 MB at 100 000 events/s; 256 MiB by default): the fold deletes
        // the logged commits before they are ever flushed, instead of
        // flushing them to level 0 and compacting them away later. Memory is
        // taken as it fills.
        opts.set_write_buffer_size(cfg.write_buffer);
        let db = DB::open(&opts, &path).map_err(|e| StateError::Db {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let old = data_dir.join("checkpoint.bin");
        if old.exists() {
            tracing::warn!(path = %old.display(), "ignoring a checkpoint file of an older rtap (state now lives in RocksDB)");
        }
        Ok(StateStore {
            db,
            path,
            meta: PhantomData,
        })
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
    pub fn last(&self) -> Result<Option<M>, StateError> {
        let Some(bytes) = self.db.get(META).map_err(self.db_err())? else {
            return Ok(None);
        };
        let meta: M = postcard::from_bytes(&bytes)
            .map_err(|e| self.corrupt(format!("commit record: {e}")))?;
        meta.check().map_err(|why| self.corrupt(why))?;
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
    pub fn log_commit(&self, c: &Commit<M>) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(c).map_err(|e| self.corrupt(e.to_string()))?;
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_opt(delta_key(c.meta.id()), bytes, &w)
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
    /// atomic write (a checkpoint in transactional mode), reading them from
    /// the commit log — at start-up, after a crash. A running host folds
    /// the commits it logged from memory instead ([`StateStore::fold`]).
    pub fn compact(&self, id: u64) -> Result<Fold, StateError> {
        let started = std::time::Instant::now();
        // The logged commits up to `id`, newest first.
        let mut commits: Vec<Commit<M>> = Vec::new();
        let newest = delta_key(id);
        for item in self
            .db
            .iterator(IteratorMode::From(&newest, rocksdb::Direction::Reverse))
        {
            let (k, v) = item.map_err(self.db_err())?;
            if !k.starts_with(DELTA) {
                break;
            }
            if delta_id(&k).is_none_or(|d| d > id) {
                continue;
            }
            commits.push(
                postcard::from_bytes(&v)
                    .map_err(|e| self.corrupt(format!("logged commit: {e}")))?,
            );
        }
        let load = started.elapsed();
        let newest_first: Vec<&Commit<M>> = commits.iter().collect();
        let mut f = self.fold(&newest_first, id)?;
        f.load = load;
        f.read += load;
        Ok(f)
    }

    /// Fold `commits` — every logged commit up to `id`, newest first — into
    /// the per-key state, in one atomic write that also deletes them from
    /// the commit log. A key changed by many commits is written once. The
    /// fold is durable after the next [`StateStore::flush`]; until then a
    /// crash undoes it whole.
    ///
    /// The caller vouches that `commits` are exactly the log's commits up
    /// to `id`: the running host hands over the commits it logged and
    /// committed itself, which spares decoding ~100 MB of log per
    /// checkpoint at 100 000 events/s (a quarter of the fold's CPU).
    pub fn fold(&self, commits: &[&Commit<M>], id: u64) -> Result<Fold, StateError> {
        use std::collections::{BTreeMap, BTreeSet};
        let started = std::time::Instant::now();
        // Newest commit first: a key's newest change is the one that counts,
        // so older ones are skipped, and a plugin's rewrite ends its history
        // (older commits of it are ignored). See [`newest_changes`] for how.
        // Per plugin: whether its prefix is rewritten, whether a rewrite
        // closed its history, and its logged changes, newest first.
        #[derive(Default)]
        struct Logs<'c> {
            rewrite: bool,
            closed: bool,
            logs: Vec<&'c Changes>,
        }
        let mut plugins: BTreeMap<&str, Logs> = BTreeMap::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        if let Some(base) = self.last()? {
            seen.extend(base.plugins().map(str::to_string));
        }
        for c in commits {
            for p in &c.plugins {
                let l = plugins.entry(&p.name).or_default();
                if l.closed {
                    continue;
                }
                l.logs.push(&p.changes);
                if p.rewrite {
                    l.rewrite = true;
                    l.closed = true;
                }
            }
            seen.extend(c.meta.plugins().map(str::to_string));
        }
        let folded = commits.len();
        let last_meta = commits.first().map(|c| &c.meta);
        let Some(meta) = last_meta else {
            return Ok(Fold::default());
        };
        // The plugins of the newest commit: the others were removed since.
        let present: BTreeSet<&str> = meta.plugins().collect();
        let (mut keys, mut changes) = (0, 0);
        let mut kept = Vec::with_capacity(plugins.len());
        for (name, l) in plugins {
            // A plugin removed since keeps nothing (its prefix is deleted
            // below): its older changes must not come back.
            if present.contains(name) {
                let newest = newest_changes(&l.logs)
                    .map_err(|e| self.corrupt(format!("logged commit of plugin `{name}`: {e}")))?;
                keys += newest.len();
                changes += l.logs.iter().map(|c| c.len()).sum::<usize>();
                kept.push((name, l.rewrite, newest));
            }
        }
        let read = started.elapsed();
        // The batch's buffer at its final size: grown by doubling, it was
        // copied over and over (a third of the fold's write).
        let bytes: usize = kept
            .iter()
            .map(|(name, _, newest)| {
                newest
                    .iter()
                    .map(|c| 16 + name.len() + c.key.len() + c.value.map_or(0, <[u8]>::len))
                    .sum::<usize>()
            })
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + 4096);
        for name in &seen {
            if !present.contains(name.as_str()) {
                batch.delete_range(prefix(name), prefix_end(name));
            }
        }
        for (name, rewrite, newest) in &kept {
            let changes = newest.iter().enumerate().map(|(i, c)| {
                if let Some(Some(v)) = newest.get(i + 16).map(|c| c.value) {
                    prefetch(v);
                }
                Ok((c.key.as_str(), c.value))
            });
            write_changes(&mut batch, name, *rewrite, changes).map_err(|e| self.corrupt(e))?;
        }
        let m = postcard::to_allocvec(meta).map_err(|e| self.corrupt(e.to_string()))?;
        batch.put(META, m);
        batch.delete_range(DELTA.to_vec(), delta_key(id + 1));
        // Without the write-ahead log: the batch holds every key the fold
        // keeps (~30 MB at 100 000 events/s), and writing it twice — log
        // and memtable — was half the write. It is atomic all the same: one
        // batch goes into one memtable, which a flush persists whole. A
        // crash before the flush loses the whole batch, its deletion of the
        // logged commits included, and the restart folds them again;
        // commits logged after it went through the log and touch other
        // keys.
        let mut w = WriteOptions::default();
        w.disable_wal(true);
        self.db.write_opt(batch, &w).map_err(self.db_err())?;
        Ok(Fold {
            commits: folded,
            changes,
            keys,
            read,
            load: std::time::Duration::ZERO,
            write: started.elapsed() - read,
        })
    }

    /// Apply a commit atomically (the direct path, without a Kafka
    /// transaction). `sync`: fsync the write-ahead log before returning.
    pub fn apply(&self, c: &Commit<M>, sync: bool) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        if let Some(prev) = self.last()? {
            for p in prev.plugins() {
                if !c.meta.plugins().any(|q| q == p) {
                    batch.delete_range(prefix(p), prefix_end(p));
                }
            }
        }
        for p in &c.plugins {
            write_changes(&mut batch, &p.name, p.rewrite, p.changes.iter())
                .map_err(|e| self.corrupt(format!("plugin `{}`: {e}", p.name)))?;
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

    /// A record of the store's own (`m/…`, beside the commit meta).
    pub fn get_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(key).map_err(self.db_err())
    }

    /// Write a record of the store's own, synced.
    pub fn put_record(&self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.put_opt(key, value, &w).map_err(self.db_err())
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
pub(crate) mod tests {
    use super::*;

    /// A meta record with just what the store reads.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct TestMeta {
        pub id: u64,
        pub plugins: Vec<String>,
    }

    impl Meta for TestMeta {
        fn id(&self) -> u64 {
            self.id
        }
        fn plugins(&self) -> impl Iterator<Item = &str> {
            self.plugins.iter().map(String::as_str)
        }
        fn check(&self) -> Result<(), String> {
            Ok(())
        }
    }

    pub(crate) fn meta(id: u64, plugins: &[&str]) -> TestMeta {
        TestMeta {
            id,
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
        }
    }

    pub(crate) fn change(name: &str, rewrite: bool, kv: &[(&str, Option<&str>)]) -> PluginChanges {
        let mut changes = Changes::default();
        for (k, v) in kv {
            changes.put(k, v.map(str::as_bytes));
        }
        PluginChanges {
            name: name.into(),
            rewrite,
            changes,
        }
    }

    pub(crate) fn keys<M: Meta>(s: &StateStore<M>, p: &str) -> Vec<(String, String)> {
        s.entries(p)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn commits_are_incremental_and_rewrites_and_removals_clear_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
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
            let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
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
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(s.delta_ids().unwrap(), vec![1, 2, 3]);
        assert!(
            keys(&s, "a").is_empty(),
            "logged commits are not folded yet"
        );
        assert_eq!(s.discard_after(2).unwrap(), vec![3]);
        assert_eq!(s.compact(2).unwrap().commits, 2);
        assert!(s.delta_ids().unwrap().is_empty());
        assert_eq!(keys(&s, "a"), vec![("k1".into(), "1b".into())]);
        assert_eq!(s.last().unwrap().unwrap().id, 2);
        assert_eq!(s.compact(5).unwrap().commits, 0, "nothing left to fold");

        // A later rewrite ends a plugin's history; a plugin gone from the
        // newest commit loses its prefix; commits after the fold id stay.
        for (id, plugins) in [
            (
                3,
                vec![
                    change("a", false, &[("k4", Some("4")), ("k1", Some("1c"))]),
                    change("b", false, &[("x", Some("x"))]),
                ],
            ),
            (4, vec![change("a", true, &[("k5", Some("5"))])]),
            (
                5,
                vec![change("a", false, &[("k5", Some("5b")), ("k6", Some("6"))])],
            ),
            (6, vec![change("a", false, &[("k7", Some("7"))])]),
        ] {
            let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
            let names = if id == 3 { names } else { vec!["a"] };
            let c = Commit {
                meta: meta(id, &names),
                plugins,
            };
            s.log_commit(&c).unwrap();
        }
        assert_eq!(s.compact(5).unwrap().commits, 3);
        assert_eq!(
            keys(&s, "a"),
            vec![("k5".into(), "5b".into()), ("k6".into(), "6".into())]
        );
        assert!(keys(&s, "b").is_empty(), "b is not in commit 5");
        assert_eq!(s.last().unwrap().unwrap().id, 5);
        assert_eq!(s.delta_ids().unwrap(), vec![6], "commit 6 is not folded");
        s.clear().unwrap();
        assert!(s.last().unwrap().is_none());
        assert!(keys(&s, "a").is_empty());
    }
}

/// `cargo test --release -p rtap-host --lib fold_bench -- --ignored --nocapture`:
/// a checkpoint fold as at 100 000 events/s (70 logged commits of 28 000
/// changed keys each, out of 400 000), timed alone.
#[cfg(test)]
mod fold_bench {
    use super::*;

    #[test]
    #[ignore]
    fn fold_bench() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::<super::tests::TestMeta>::open(dir.path(), &StoreConfig::default())
            .unwrap();
        let names = [
            "active-users",
            "bot-burst",
            "cart-abandonment",
            "session-duration",
        ];
        let mut rng = 7u64;
        for round in 0..3u64 {
            for id in round * 70 + 1..=round * 70 + 70 {
                let plugins = names
                    .iter()
                    .map(|n| {
                        let mut changes = Changes::default();
                        for _ in 0..7_000 {
                            rng = rng
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let k = format!("user-{}", (rng >> 33) % 400_000);
                            changes.put(&k, Some(&[(rng >> 40) as u8; 60]));
                        }
                        PluginChanges {
                            name: n.to_string(),
                            rewrite: false,
                            changes,
                        }
                    })
                    .collect();
                let meta = super::tests::meta(id, &names);
                s.log_commit(&Commit { meta, plugins }).unwrap();
            }
            let t = std::time::Instant::now();
            let f = s.compact(round * 70 + 70).unwrap();
            let flushing = std::time::Instant::now();
            s.flush().unwrap();
            let flush = flushing.elapsed();
            let all = t.elapsed();
            eprintln!(
                "fold {round}: {} commits, {} changes, {} keys, read {:?} (load {:?}), write {:?}, flush {:?}, total {all:?}",
                f.commits, f.changes, f.keys, f.read, f.load, f.write, flush
            );
        }
    }
}
