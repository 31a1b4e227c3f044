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
//! Every `--checkpoint-interval` a checkpoint thread **folds** the logged
//! commits — up to the last one the committer has committed to Kafka — into
//! `s/` (one `WriteBatch`, made durable by flushing the memtables rather
//! than through the write-ahead log; a key changed by a hundred commits is
//! written once), while the committer
//! goes on committing (a fold takes seconds under load). A commit costs one
//! sequential write; the per-key work happens once per checkpoint. A fold
//! and later logged commits touch disjoint keys (`d/` ids above the fold's).
//! The running host folds the commits it logged from the copies it kept in
//! memory, so the log is only read back at start-up, after a crash.
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

mod keyed;

pub use keyed::{KeyedState, Vacant, hash_key, hash_keys};

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::pipeline::StateDelta;
use crate::source::Position;
use crate::window::Watermark;

/// 4: changed keys travel as one encoded buffer per plugin ([`Changes`]).
/// 5: sliding windows are kept as panes; a window operator's meta holds the
/// watermark of its last firing round.
pub const FORMAT: u32 = 5;

/// A key of an operator's state (a user, session or page id…): up to 24
/// bytes are stored inline, so a hash-map probe compares bytes that are in
/// the bucket already instead of chasing a pointer to a heap string — a
/// cache miss per lookup with hundreds of thousands of keys.
pub type Key = compact_str::CompactString;

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

/// Changed keys with their new entries, encoded back to back in one buffer
/// as they are taken from an operator — no allocation per key, and the
/// commit log record embeds the buffer with one copy. Per entry: a varint
/// key length, the key, then `0` (the key is gone) or `1`, a varint entry
/// length and the entry.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    n: usize,
    buf: Vec<u8>,
}

/// The bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// `v` as postcard writes an `i64`: zigzag, so small negatives stay short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A LEB128 varint, as postcard writes lengths and integers: entries
/// encoded by hand (the hot commit path) stay readable by `postcard`.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn take_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(take_varint(buf)?).ok()?;
    if n > buf.len() {
        return None;
    }
    let (b, rest) = buf.split_at(n);
    *buf = rest;
    Some(b)
}

impl Changes {
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Append `key`: its new entry, or `None` when it is gone.
    pub fn put(&mut self, key: &str, entry: Option<&[u8]>) {
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        match entry {
            None => self.buf.push(0),
            Some(e) => {
                self.buf.push(1);
                put_varint(&mut self.buf, e.len() as u64);
                self.buf.extend_from_slice(e);
            }
        }
        self.n += 1;
    }

    /// Append `key` with an entry of exactly `len` bytes that `write`
    /// appends straight to the buffer: no scratch copy. Panics if `write`
    /// breaks the promise, which would corrupt every later entry.
    pub fn put_sized(&mut self, key: &str, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        put_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(1);
        put_varint(&mut self.buf, len as u64);
        let at = self.buf.len();
        self.buf.reserve(len);
        write(&mut self.buf);
        assert_eq!(
            self.buf.len() - at,
            len,
            "state entry of key `{key}`: size promised and written differ"
        );
        self.n += 1;
    }

    /// The entries in the order they were put.
    pub fn iter(&self) -> impl Iterator<Item = Result<(&str, Option<&[u8]>), String>> {
        let mut rest = self.buf.as_slice();
        (0..self.n).map(move |i| {
            let bad = || format!("changed key #{i} is truncated or not UTF-8");
            let key = take_bytes(&mut rest).ok_or_else(bad)?;
            let key = std::str::from_utf8(key).map_err(|_| bad())?;
            let (&tag, tail) = rest.split_first().ok_or_else(bad)?;
            rest = tail;
            let entry = match tag {
                0 => None,
                1 => Some(take_bytes(&mut rest).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            Ok((key, entry))
        })
    }
}

impl Serialize for Changes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&(self.n as u64))?;
        t.serialize_element(&AsBytes(&self.buf))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Buf(Vec<u8>);
        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(b.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
        let (n, Buf(buf)) = <(u64, Buf)>::deserialize(d)?;
        let n = usize::try_from(n).map_err(serde::de::Error::custom)?;
        Ok(Changes { n, buf })
    }
}

/// Serializes a byte slice as bytes (one copy) rather than as a sequence of
/// `u8` (one call per byte); postcard writes both the same way.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// For `#[serde(serialize_with)]` on `&[u8]` fields: the slice as bytes (one
/// copy), not as a sequence of `u8`.
pub fn ser_bytes<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    AsBytes(b).serialize(s)
}

/// What a checkpoint fold did, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fold {
    /// Logged commits folded.
    pub commits: usize,
    /// Changes merged: those of the plugins still present, up to each
    /// one's latest rewrite.
    pub changes: usize,
    /// Keys written.
    pub keys: usize,
    /// Reading and merging the logged commits.
    pub read: std::time::Duration,
    /// Of `read`: loading and decoding them.
    pub load: std::time::Duration,
    /// The one write of the keys, the meta and the log's deletion.
    pub write: std::time::Duration,
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

/// Ask the CPU to load `v`'s first bytes into its cache (a hint).
#[inline]
pub(crate) fn prefetch<T>(v: &[T]) {
    prefetch_ptr(v.as_ptr().cast());
}

/// Ask the CPU to load the cache line holding `p` (a hint; any address).
#[inline]
pub(crate) fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One change as a fold keeps it: the key copied inline (up to 24 bytes),
/// the entry pointing into its decoded commit.
#[derive(Default)]
struct Kept<'c> {
    key: Key,
    value: Option<&'c [u8]>,
}

/// Changes per partition of a fold, about: a partition's keys and map stay
/// in the L2 cache.
const PART: usize = 4096;

/// Each key's newest change in one plugin's logged changes (`logs`, newest
/// commit first), in key order — the memtable, a skip list, takes sorted
/// inserts faster.
///
/// Measured at 100 000 events/s, a fold merges ~2 M changes into ~400 000
/// keys. Probing one map of that size cost a cache miss for the bucket and
/// another for the key bytes in some older commit, per change: ~1 s of a
/// core per checkpoint, taken from the processing thread on two cores. So
/// the changes are first placed by key hash into partitions of a few
/// thousand, keys copied inline — sequential reads and writes, into one
/// allocation (a vector per partition spent a quarter of the fold in the
/// allocator) — and each partition is then deduplicated with a map that
/// stays in the cache.
fn newest_changes<'c>(logs: &[&'c Changes]) -> Result<Vec<Kept<'c>>, String> {
    use std::hash::BuildHasher;
    let total: usize = logs.iter().map(|c| c.len()).sum();
    let parts = (total / PART).next_power_of_two().clamp(1, 1 << 16);
    // Bits 40.. pick the partition: a partition's map indexes by the low
    // bits and tags by the top seven, so both stay spread.
    let part_of =
        |key: &str| (rustc_hash::FxBuildHasher.hash_one(key) >> 40) as usize & (parts - 1);
    // Count, then place each change at its partition's next slot.
    let mut at = vec![0usize; parts + 1];
    for log in logs {
        for c in log.iter() {
            at[part_of(c?.0) + 1] += 1;
        }
    }
    for p in 1..=parts {
        at[p] += at[p - 1];
    }
    let bounds = at.clone();
    let mut all: Vec<Kept> = Vec::new();
    all.resize_with(total, Kept::default);
    for log in logs {
        for c in log.iter() {
            let (key, value) = c?;
            let slot = &mut at[part_of(key)];
            all[*slot] = Kept {
                key: Key::from(key),
                value,
            };
            *slot += 1;
        }
    }
    // Per partition, the first (newest) change of each key.
    let mut keep = vec![false; total];
    let mut set = rustc_hash::FxHashSet::default();
    for p in 0..parts {
        set.clear();
        for i in bounds[p]..bounds[p + 1] {
            keep[i] = set.insert(all[i].key.as_str());
        }
    }
    drop(set);
    let mut out: Vec<Kept> = all
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect();
    // Key order, sorting (first 16 bytes as a number, index) pairs: most
    // keys differ there, so most comparisons are one integer compare
    // instead of a string compare of two 40-byte items.
    let mut order: Vec<(u128, u32)> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (prefix16(c.key.as_bytes()), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| out[a.1 as usize].key.cmp(&out[b.1 as usize].key))
    });
    Ok(order
        .into_iter()
        .map(|(_, i)| std::mem::take(&mut out[i as usize]))
        .collect())
}

/// A key's first 16 bytes, zero-padded, as a big-endian number: where two
/// of these differ they order the keys as the bytes do (a zero byte that
/// pads compares like the end of the shorter key); where they are equal the
/// keys must be compared whole.
fn prefix16(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
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

impl StateStore {
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
    /// atomic write (a checkpoint in transactional mode), reading them from
    /// the commit log — at start-up, after a crash. A running host folds
    /// the commits it logged from memory instead ([`StateStore::fold`]).
    pub fn compact(&self, id: u64) -> Result<Fold, StateError> {
        let started = std::time::Instant::now();
        // The logged commits up to `id`, newest first.
        let mut commits: Vec<Commit> = Vec::new();
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
        let newest_first: Vec<&Commit> = commits.iter().collect();
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
    pub fn fold(&self, commits: &[&Commit], id: u64) -> Result<Fold, StateError> {
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
            seen.extend(base.plugins.iter().map(|p| p.name.clone()));
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
            seen.extend(c.meta.plugins.iter().map(|p| p.name.clone()));
        }
        let folded = commits.len();
        let last_meta = commits.first().map(|c| &c.meta);
        let Some(meta) = last_meta else {
            return Ok(Fold::default());
        };
        // The plugins of the newest commit: the others were removed since.
        let present: BTreeSet<&str> = meta.plugins.iter().map(|p| p.name.as_str()).collect();
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

    pub(crate) fn meta(id: u64, plugins: &[&str]) -> CommitMeta {
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

    pub(crate) fn keys(s: &StateStore, p: &str) -> Vec<(String, String)> {
        s.entries(p)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn commits_are_incremental_and_rewrites_and_removals_clear_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), &StoreConfig::default()).unwrap();
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
    fn a_fold_keeps_each_keys_newest_change_in_key_order() {
        // Enough changes for many partitions; keys short and long (inline
        // and heap), entries and deletions, repeated across the logs.
        let mut rng = 11u64;
        let mut logs = Vec::new();
        for _ in 0..12 {
            // A commit holds each key once.
            let mut c = Changes::default();
            let mut once = std::collections::HashSet::new();
            for _ in 0..3_000 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (rng >> 33) % 9_000;
                let key = if n.is_multiple_of(7) {
                    format!("a-rather-long-session-key-{n}")
                } else {
                    format!("u{n}")
                };
                if !once.insert(n) {
                    continue;
                }
                let v = (rng >> 20).to_le_bytes();
                c.put(
                    &key,
                    (!n.is_multiple_of(5) || rng & 1 == 0).then_some(&v[..]),
                );
            }
            logs.push(c);
        }
        // Newest first, as the fold hands them over.
        let newest_first: Vec<&Changes> = logs.iter().rev().collect();
        let mut want: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
        for c in &logs {
            for e in c.iter() {
                let (k, v) = e.unwrap();
                want.insert(k.to_string(), v.map(<[u8]>::to_vec));
            }
        }
        let got: Vec<(String, Option<Vec<u8>>)> = newest_changes(&newest_first)
            .unwrap()
            .into_iter()
            .map(|c| (c.key.to_string(), c.value.map(<[u8]>::to_vec)))
            .collect();
        assert!(got.len() > 8_000, "{} keys", got.len());
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn varint_len_is_what_put_varint_writes() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX]
            .into_iter()
            .chain((0..64).map(|b| 1u64 << b))
        {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(b, postcard::to_allocvec(&v).unwrap(), "{v}");
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, zigzag(v));
            assert_eq!(b, postcard::to_allocvec(&v).unwrap(), "{v}");
        }
    }

    #[test]
    #[should_panic(expected = "size promised and written differ")]
    fn a_broken_size_promise_is_caught() {
        Changes::default().put_sized("k", 3, |b| b.push(1));
    }

    #[test]
    fn changes_survive_the_commit_log_and_a_cut_buffer_is_an_error() {
        let mut c = Changes::default();
        c.put("k1", Some(b"one"));
        c.put("", None);
        c.put_sized("k\u{e9}", 300, |b| b.extend_from_slice(&[7; 300]));
        c.put("gone", None);
        let bytes = postcard::to_allocvec(&c).unwrap();
        let back: Changes = postcard::from_bytes(&bytes).unwrap();
        let got: Vec<(String, Option<Vec<u8>>)> = back
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("k1".into(), Some(b"one".to_vec())),
                ("".into(), None),
                ("k\u{e9}".into(), Some(vec![7; 300])),
                ("gone".into(), None),
            ]
        );
        let mut cut = back.clone();
        cut.buf.truncate(cut.buf.len() - 10);
        let err = cut.iter().find_map(Result::err).expect("an error");
        assert!(err.contains("changed key #2"), "{err}");
    }

    #[test]
    fn logged_commits_fold_into_the_state_or_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path(), &StoreConfig::default()).unwrap();
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
        let s = StateStore::open(dir.path(), &StoreConfig::default()).unwrap();
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
        let s = StateStore::open(dir.path(), &StoreConfig::default()).unwrap();
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
                let mut m = super::tests::meta(id, &names);
                m.transactional = true;
                s.log_commit(&Commit { meta: m, plugins }).unwrap();
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
