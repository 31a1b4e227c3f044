//! The state store: RocksDB under `--data-dir/state`, written by atomic
//! commits. Each commit is a consistent cut: the changed keys of every
//! plugin's operator state, and a meta record (what the checkpoint protocol
//! keeps beside the state: positions, watermark, plugin hashes… — opaque
//! here but for the plugins it names; see `crate::checkpoint`).
//!
//! Layout (one column family, byte-ordered keys):
//!
//! | key                       | value                                      |
//! |---------------------------|--------------------------------------------|
//! | `m/commit`                | the meta of the state in `g/`              |
//! | `g/<plugin>\0<kg><key>`   | that key's entry (its windows, or state+timers) |
//! | `d/<id>`                  | a logged [`Commit`] not yet folded into `g/` |
//!
//! `<kg>` is the key's key group ([`super::keygroup`], two bytes,
//! big-endian), so a plugin's keys of one key group — or of a range of
//! them, such as a worker's — are one range of the store: read at restore
//! by the worker that owns them, dropped or replaced as a whole when the
//! key group leaves or joins a host. A plugin's keys are one range too
//! (dropped when it is removed or its state rewritten), as with Flink's
//! key-group-prefixed keys in a column family per state. Stores of builds
//! before key groups (`s/<plugin>\0<key>`) are rewritten into this layout
//! when opened ([`StateStore::open`]).
//!
//! Two ways in: [`StateStore::apply`] writes a commit straight into `g/`
//! (one synced batch); [`StateStore::log_commit`] appends it to the commit
//! log, and a later [`StateStore::fold`] (or [`StateStore::compact`], from
//! the log) merges the logged commits into `g/` in one write.

use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StateError;
use super::codec::Changes;
use super::fold::{Fold, newest_changes};
use super::keygroup::{self, key_group};
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
    /// Mark the record as this build's (its format): done before the store
    /// rewrites an older layout, so that an older build refuses the store
    /// from then on instead of missing the keys it no longer finds.
    fn upgrade(&mut self);
}

/// Write one plugin's changes into `batch`: its whole prefix first when it
/// is rewritten, then every changed key (`None`: deleted), in the store's
/// key order — key group, then key — when the changes come in key order
/// (as a fold's do): a counting sort by key group that keeps each group's
/// keys in their order. Written in key order, not hashed order, a fold's
/// million keys went into the memtable 2.5 times faster (`fold_bench`).
fn write_changes<'a>(
    batch: &mut WriteBatch,
    plugin: &str,
    rewrite: bool,
    changes: impl Iterator<Item = Result<(&'a str, Option<&'a [u8]>), String>>,
) -> Result<(), String> {
    if rewrite {
        batch.delete_range(prefix(plugin), prefix_end(plugin));
    }
    let mut items: Vec<(u16, &str, Option<&[u8]>)> = Vec::new();
    let mut counts = [0usize; keygroup::KEY_GROUPS as usize + 1];
    for c in changes {
        let (k, v) = c?;
        let kg = key_group(k) as u16;
        counts[kg as usize + 1] += 1;
        items.push((kg, k, v));
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    let mut order = vec![0u32; items.len()];
    for (i, (kg, _, _)) in items.iter().enumerate() {
        let at = &mut counts[*kg as usize];
        order[*at] = i as u32;
        *at += 1;
    }
    let mut key = prefix(plugin);
    let base = key.len();
    for (n, &i) in order.iter().enumerate() {
        if let Some(&j) = order.get(n + 16)
            && let Some(v) = items[j as usize].2
        {
            prefetch(v);
        }
        let (kg, k, v) = items[i as usize];
        key.truncate(base);
        key.extend_from_slice(&kg.to_be_bytes());
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

/// The per-key state: `g/<plugin>\0<kg><key>`.
const STATE: &[u8] = b"g/";
/// The per-key state as builds before key groups kept it:
/// `s/<plugin>\0<key>`, rewritten into [`STATE`] when the store opens.
const LEGACY_STATE: &[u8] = b"s/";
/// How many keys one write of the rewrite into key groups moves.
const MIGRATE_CHUNK: usize = 100_000;

/// A plugin's keys: `g/<plugin>\0`.
fn prefix(plugin: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(plugin.len() + 5);
    k.extend_from_slice(STATE);
    k.extend_from_slice(plugin.as_bytes());
    k.push(0);
    k
}

/// The end of a plugin's keys (exclusive).
fn prefix_end(plugin: &str) -> Vec<u8> {
    let mut k = prefix(plugin);
    *k.last_mut().expect("non-empty") = 1;
    k
}

/// A key group as it is written into a key.
fn kg_bytes(kg: u32) -> [u8; 2] {
    u16::try_from(kg)
        .expect("key groups fit two bytes")
        .to_be_bytes()
}

/// Where a plugin's keys of key group `kg` begin: its keys of a range of
/// key groups `a..b` lie from `kg_start(p, a)` to `kg_start(p, b)`.
fn kg_start(plugin: &str, kg: u32) -> Vec<u8> {
    let mut k = prefix(plugin);
    k.extend_from_slice(&kg_bytes(kg));
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
        let store = StateStore {
            db,
            path,
            meta: PhantomData,
        };
        store.migrate_to_key_groups(usize::MAX)?;
        Ok(store)
    }

    /// Rewrite the keys of a store written before key groups
    /// (`s/<plugin>\0<key>`) into `g/<plugin>\0<kg><key>`. Each write
    /// moves a chunk of keys — puts the new ones and deletes the old in one
    /// batch — so a crash midway leaves every key in one layout or the
    /// other, and the next open goes on where it stopped.
    /// `cut_after`: return after that many chunks, as a crash would (all,
    /// but for a test of an interrupted rewrite).
    fn migrate_to_key_groups(&self, cut_after: usize) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let first = self
            .db
            .iterator(IteratorMode::From(
                LEGACY_STATE,
                rocksdb::Direction::Forward,
            ))
            .next()
            .transpose()
            .map_err(self.db_err())?;
        if !first.is_some_and(|(k, _)| k.starts_with(LEGACY_STATE)) {
            return Ok(());
        }
        if let Some(mut meta) = self.last()? {
            meta.upgrade();
            let bytes = postcard::to_allocvec(&meta)
                .map_err(|e| self.corrupt(format!("commit record: {e}")))?;
            let mut w = WriteOptions::default();
            w.set_sync(true);
            self.db.put_opt(META, bytes, &w).map_err(self.db_err())?;
        }
        let mut moved = 0usize;
        // Each chunk seeks to the last key the one before moved (deleted by
        // then), not to `s/`: scanning from `s/` would step over every
        // deletion of the chunks before it again.
        let mut from = LEGACY_STATE.to_vec();
        for chunk in 0.. {
            if chunk == cut_after {
                return Ok(());
            }
            let mut batch = WriteBatch::default();
            let mut n = 0;
            let mut key = Vec::new();
            let mut last = None;
            for item in self
                .db
                .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward))
            {
                let (k, v) = item.map_err(self.db_err())?;
                if !k.starts_with(LEGACY_STATE) || n == MIGRATE_CHUNK {
                    break;
                }
                let rest = &k[LEGACY_STATE.len()..];
                let cut = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| self.corrupt("a state key without a plugin name".into()))?;
                let (plugin, name) = (&rest[..cut], &rest[cut + 1..]);
                let name = std::str::from_utf8(name)
                    .map_err(|e| self.corrupt(format!("a state key is not UTF-8: {e}")))?;
                key.clear();
                key.extend_from_slice(STATE);
                key.extend_from_slice(plugin);
                key.push(0);
                key.extend_from_slice(&kg_bytes(key_group(name)));
                key.extend_from_slice(name.as_bytes());
                batch.put(&key, &v);
                batch.delete(&k);
                n += 1;
                last = Some(k);
            }
            let Some(last) = last else { break };
            from = last.to_vec();
            let mut w = WriteOptions::default();
            w.set_sync(true);
            self.db.write_opt(batch, &w).map_err(self.db_err())?;
            moved += n;
        }
        if moved > 0 {
            tracing::info!(
                path = %self.path.display(),
                keys = moved,
                took_ms = started.elapsed().as_millis() as u64,
                "rewrote the state store's keys into key groups (a store of an older rtap)"
            );
        }
        Ok(())
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
            let changes = newest.iter().map(|c| Ok((c.key.as_str(), c.value)));
            write_changes(&mut batch, name, *rewrite, changes).map_err(|e| self.corrupt(e))?;
        }
        let m = postcard::to_allocvec(meta).map_err(|e| self.corrupt(e.to_string()))?;
        batch.put(META, m);
        // Up to and including `id`: past the last possible id, the log's end.
        let end = id.checked_add(1).map_or_else(delta_end, delta_key);
        batch.delete_range(DELTA.to_vec(), end);
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
        self.entries_in(plugin, keygroup::all())
    }

    /// A plugin's stored entries of the key groups `kgs`, key group by key
    /// group: one range of the store.
    pub fn entries_in(
        &self,
        plugin: &str,
        kgs: Range<u32>,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let (from, to) = (kg_start(plugin, kgs.start), kg_start(plugin, kgs.end));
        let skip = from.len();
        let mut out = Vec::new();
        let it = self
            .db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(self.db_err())?;
            if *k >= *to || !k.starts_with(&from[..skip - 2]) {
                break;
            }
            let key = std::str::from_utf8(&k[skip..])
                .map_err(|e| self.corrupt(format!("plugin `{plugin}`: a key is not UTF-8: {e}")))?;
            out.push((key.to_string(), v.to_vec()));
        }
        Ok(out)
    }

    /// Drop every key of the key groups `kgs` (of `plugins`): the key
    /// groups left this host. Synced.
    pub fn drop_key_groups<'a>(
        &self,
        plugins: impl IntoIterator<Item = &'a str>,
        kgs: Range<u32>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for p in plugins {
            batch.delete_range(kg_start(p, kgs.start), kg_start(p, kgs.end));
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(self.db_err())
    }

    /// Replace the state of the key groups `kgs` with `plugins`' keys (as a
    /// changelog holds them), in one synced write: what was stored of those
    /// key groups goes, for every plugin given. The meta is not touched: the
    /// caller restores key groups to the commit the store is at. A key of
    /// another key group is refused, and nothing is written.
    pub fn put_key_groups(
        &self,
        kgs: Range<u32>,
        plugins: &[PluginChanges],
    ) -> Result<usize, StateError> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for p in plugins {
            batch.delete_range(kg_start(&p.name, kgs.start), kg_start(&p.name, kgs.end));
            let mut outside = None;
            let changes = p.changes.iter().filter(|c| {
                if let Ok((k, _)) = c
                    && !kgs.contains(&key_group(k))
                {
                    outside.get_or_insert_with(|| k.to_string());
                }
                outside.is_none()
            });
            write_changes(&mut batch, &p.name, false, changes)
                .map_err(|e| self.corrupt(format!("plugin `{}`: {e}", p.name)))?;
            if let Some(k) = outside {
                return Err(self.corrupt(format!(
                    "plugin `{}`: key `{k}` is in key group {}, not in {kgs:?}",
                    p.name,
                    key_group(&k)
                )));
            }
            n += p.changes.len();
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(self.db_err())?;
        Ok(n)
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
        /// 1 once upgraded.
        pub format: u32,
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
        fn upgrade(&mut self) {
            self.format = 1;
        }
    }

    pub(crate) fn meta(id: u64, plugins: &[&str]) -> TestMeta {
        TestMeta {
            id,
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
            format: 0,
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

    /// A plugin's stored keys, in key order (the store keeps them in key
    /// group order).
    pub(crate) fn keys<M: Meta>(s: &StateStore<M>, p: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = s
            .entries(p)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        out.sort();
        out
    }

    /// `n` keys of a plugin, each with its value (`<key>=<tag>`).
    fn many(name: &str, n: usize, tag: &str) -> (PluginChanges, Vec<(String, String)>) {
        let kv: Vec<(String, String)> = (0..n)
            .map(|i| (format!("user-{i}"), format!("user-{i}={tag}")))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = kv
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        (change(name, true, &refs), kv)
    }

    fn in_groups(kv: &[(String, String)], kgs: Range<u32>) -> Vec<(String, String)> {
        let mut out: Vec<_> = kv
            .iter()
            .filter(|(k, _)| kgs.contains(&key_group(k)))
            .cloned()
            .collect();
        out.sort();
        out
    }

    fn sorted(mut v: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
        v.sort();
        v.into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    /// A plugin's keys of a range of key groups are read, dropped and
    /// replaced as one range, without touching other key groups or other
    /// plugins (one named like a prefix of it included).
    #[test]
    fn key_groups_are_read_dropped_and_replaced_as_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
        let (a, a_kv) = many("a", 2_000, "1");
        let (ab, ab_kv) = many("ab", 500, "x");
        s.apply(
            &Commit {
                meta: meta(1, &["a", "ab"]),
                plugins: vec![a, ab],
            },
            true,
        )
        .unwrap();
        assert_eq!(keys(&s, "a"), in_groups(&a_kv, keygroup::all()));
        for kgs in [0..1, 5..9, 64..128, 127..128, 3..3] {
            assert_eq!(
                sorted(s.entries_in("a", kgs.clone()).unwrap()),
                in_groups(&a_kv, kgs.clone()),
                "{kgs:?}"
            );
        }
        // A worker's key groups: the owner ranges of 3 workers.
        let mut read = 0;
        for w in 0..3 {
            read += s.entries_in("a", keygroup::range_of(w, 3)).unwrap().len();
        }
        assert_eq!(read, 2_000, "three workers read every key once");

        s.drop_key_groups(["a", "ab"], 10..70).unwrap();
        let kept = |kv: &[(String, String)]| {
            let mut v = in_groups(kv, 0..10);
            v.extend(in_groups(kv, 70..128));
            v.sort();
            v
        };
        assert_eq!(keys(&s, "a"), kept(&a_kv));
        assert_eq!(keys(&s, "ab"), kept(&ab_kv));

        // Key groups 20..30 come back with other values (as a changelog
        // holds them), for plugin `a` only.
        let (a2, a2_kv) = many("a", 2_000, "2");
        let a2_in: Vec<(&str, Option<&str>)> = a2_kv
            .iter()
            .filter(|(k, _)| (20..30).contains(&key_group(k)))
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        drop(a2);
        let n = s
            .put_key_groups(20..30, &[change("a", true, &a2_in)])
            .unwrap();
        assert_eq!(n, a2_in.len());
        let mut want = kept(&a_kv);
        want.extend(in_groups(&a2_kv, 20..30));
        want.sort();
        assert_eq!(keys(&s, "a"), want);
        assert_eq!(keys(&s, "ab"), kept(&ab_kv));

        // A key of another key group is refused, and nothing is written.
        let stray = (0..)
            .map(|i| format!("user-{i}"))
            .find(|k| !(20..30).contains(&key_group(k)))
            .unwrap();
        let err = s
            .put_key_groups(20..30, &[change("a", true, &[(&stray, Some("z"))])])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&stray) && err.contains("20..30"), "{err}");
        assert_eq!(keys(&s, "a"), want);
    }

    /// The keys still in the layout before key groups.
    fn legacy_keys<M: Meta>(s: &StateStore<M>) -> usize {
        s.db.iterator(IteratorMode::From(
            LEGACY_STATE,
            rocksdb::Direction::Forward,
        ))
        .filter_map(Result::ok)
        .take_while(|(k, _)| k.starts_with(LEGACY_STATE))
        .count()
    }

    /// A store of a build before key groups (`s/<plugin>\0<key>`) is
    /// rewritten into key groups when opened, also when an earlier open
    /// stopped midway (some keys moved, some not).
    #[test]
    fn an_older_store_is_rewritten_into_key_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a_kv) = many("a", 250_000, "1");
        {
            let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
            let mut batch = WriteBatch::default();
            for (i, (k, v)) in a_kv.iter().enumerate() {
                if i % 10 == 0 {
                    // Already moved by an open that was cut off.
                    let mut key = kg_start("a", key_group(k));
                    key.extend_from_slice(k.as_bytes());
                    batch.put(key, v);
                } else {
                    batch.put(format!("s/a\0{k}"), v);
                }
            }
            batch.put("s/b\0only", "b");
            batch.put(META, postcard::to_allocvec(&meta(7, &["a", "b"])).unwrap());
            s.db.write(batch).unwrap();
        }
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(keys(&s, "a"), in_groups(&a_kv, keygroup::all()));
        assert_eq!(keys(&s, "b"), vec![("only".into(), "b".into())]);
        let m = s.last().unwrap().unwrap();
        assert_eq!(
            (m.id, m.format),
            (7, 1),
            "the meta is marked as this build's"
        );
        let legacy = legacy_keys(&s);
        assert_eq!(legacy, 0, "no key left in the old layout");
        // Marked before the first key moves: an older build refuses the
        // store from the start of the rewrite.
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
        let mut batch = WriteBatch::default();
        for (k, v) in a_kv.iter().take(MIGRATE_CHUNK + 10) {
            batch.put(format!("s/a\0{k}"), v);
        }
        batch.put(META, postcard::to_allocvec(&meta(7, &["a"])).unwrap());
        s.db.write(batch).unwrap();
        s.migrate_to_key_groups(1).unwrap();
        assert_eq!(s.last().unwrap().unwrap().format, 1);
        let left = legacy_keys(&s);
        assert_eq!(left, 10, "one chunk moved, the rest left for the next open");
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

    /// The last possible commit id folds and leaves no logged commit behind
    /// (its range's end is the log's end, not `id + 1`, which overflows: a
    /// fuzz find, `fuzz/regressions/state_codec/fold-last-commit-id`).
    #[test]
    fn the_last_possible_commit_id_folds() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::<TestMeta>::open(dir.path(), &StoreConfig::default()).unwrap();
        let c = Commit {
            meta: meta(u64::MAX, &["a"]),
            plugins: vec![change("a", true, &[("k", Some("v"))])],
        };
        s.log_commit(&c).unwrap();
        assert_eq!(s.compact(u64::MAX).unwrap().commits, 1);
        assert!(s.delta_ids().unwrap().is_empty());
        assert_eq!(keys(&s, "a"), vec![("k".into(), "v".into())]);
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
