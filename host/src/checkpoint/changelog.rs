//! The changelog: every commit's state changes on the `<group>-changelog`
//! topic, written in the commit's Kafka transaction, so that a host whose
//! data dir is lost, stale or someone else's restores the state from Kafka
//! instead of refusing to start. The local RocksDB store stays the fast
//! path (a restart on the same data dir reads nothing back); the changelog
//! is what makes it a cache. On with `--kafka-changelog` or `--standby`:
//! it writes every changed key of every commit, which at 100 000 events/s
//! is more records than the input (BENCHMARKS.md, "Changelog").
//!
//! ## Records
//!
//! The topic has one partition per key group ([`KEY_GROUPS`], compacted), so
//! a key group's state is one partition — what a host that gains the key
//! group reads (issue #28). Every record carries the id of its commit in the
//! `rtap-commit` header.
//! - `<plugin>\0<key>` → the key's stored entry, or a tombstone (no payload)
//!   when the key was deleted; in the key's key group's partition;
//! - `\0clear\0<plugin>` (empty payload), to every partition: the plugin's
//!   state was rewritten (a swap with a new or migrated state) or removed —
//!   its keys written before this record in the partition are gone;
//! - `\0meta` in partition 0: the commit's meta (positions, watermark,
//!   plugins and their operator-wide state) with the [`Lineage`].
//!
//! ## Telling committed records from aborted ones
//!
//! tansu shows `read_committed` readers the records of aborted
//! transactions. So a record must say by itself whether it counts: a record
//! counts when its commit id is at most the group's committed marker `g`,
//! not below the lineage's `base` and not in one of its aborted ranges.
//! That works because commit ids are never reused: a run after a restart
//! starts at `max(g + 2, now in µs)` and declares every id between `g` and
//! its start aborted ([`Lineage::restart`]) — the crashed run may have
//! written any of them in a transaction that never committed. The lineage
//! travels in every meta record and is kept in the local store
//! (`m/lineage`), so later restores know every aborted range.
//!
//! On a broker that hides aborted records (Kafka) the rule changes nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{Commit, CommitMeta};
use crate::kafka::{KafkaConfig, Quiet};
use crate::sink::kafka::{KafkaSink, KafkaSinkError};
use crate::state::keygroup::{self, KEY_GROUPS, key_group};
use crate::state::{Changes, PluginChanges};

/// The header holding a record's commit id (decimal).
pub use crate::sink::kafka::CHANGELOG_ID_HEADER as ID_HEADER;
/// The key of the meta records.
const META_KEY: &[u8] = b"\0meta";
/// The prefix of a clear record's key (then the plugin's name).
const CLEAR: &[u8] = b"\0clear\0";
/// The store key of the local copy of the lineage.
pub const LINEAGE_KEY: &[u8] = b"m/lineage";
/// How long reading the changelog may take at most.
const READ_FOR: Duration = Duration::from_secs(300);

/// Which commit ids count: those from `base` on, except the aborted ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The first id of the state's history: a start with `--no-restore`
    /// begins a new one, and older records no longer count.
    pub base: u64,
    /// Ids no transaction committed, as inclusive ranges, in order.
    pub aborted: Vec<(u64, u64)>,
}

impl Lineage {
    /// Whether a record of commit `id` is part of the state committed at `g`.
    pub fn counts(&self, id: u64, g: u64) -> bool {
        id >= self.base && id <= g && !self.aborted.iter().any(|&(a, b)| a <= id && id <= b)
    }

    /// A run starts after commit `g` was the last one committed: its first
    /// commit id, beyond any id a crashed run may have written (so ids are
    /// never reused); the ids in between are declared aborted. `now_us`:
    /// the wall clock in µs, which keeps ids apart even when this lineage
    /// missed a restart (its run committed nothing).
    pub fn restart(&mut self, g: u64, now_us: u64) -> u64 {
        let last = self.aborted.last().map_or(0, |r| r.1);
        let start = (g + 2).max(last + 2).max(self.base + 1).max(now_us);
        self.aborted.push((g + 1, start - 1));
        start
    }

    /// A new history from `start` (a start with `--no-restore`).
    pub fn fresh(g: u64, now_us: u64) -> (Self, u64) {
        let start = (g + 2).max(now_us);
        (
            Lineage {
                base: start,
                aborted: Vec::new(),
            },
            start,
        )
    }
}

/// The wall clock in µs.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A meta record as written (borrowed).
#[derive(Serialize)]
struct MetaOut<'a> {
    lineage: &'a Lineage,
    meta: &'a CommitMeta,
}

/// A meta record as read.
#[derive(Deserialize)]
struct MetaIn {
    lineage: Lineage,
    meta: CommitMeta,
}

/// A clear record's key for `plugin`.
pub(super) fn clear_key(plugin: &str) -> Vec<u8> {
    let mut k = CLEAR.to_vec();
    k.extend_from_slice(plugin.as_bytes());
    k
}

/// The committer's side: what each commit adds to the changelog.
pub struct Writer {
    pub lineage: Lineage,
    /// The plugins of the last commit written (a plugin gone since is
    /// cleared).
    plugins: Vec<String>,
    key: Vec<u8>,
}

impl Writer {
    /// `plugins`: those of the commit the run starts from.
    pub fn new(lineage: Lineage, plugins: Vec<String>) -> Self {
        Writer {
            lineage,
            plugins,
            key: Vec::new(),
        }
    }

    /// Queue the commit's changes in the open transaction; returns the
    /// number of records.
    pub fn write(&mut self, sink: &mut KafkaSink, c: &Commit) -> Result<usize, String> {
        let sent = |e: KafkaSinkError| e.to_string();
        let id = c.meta.id;
        let mut n = 0;
        let cleared = self
            .plugins
            .iter()
            .filter(|p| !c.meta.plugins.iter().any(|m| &m.name == *p))
            .map(String::as_str)
            .chain(
                c.plugins
                    .iter()
                    .filter(|p| p.rewrite)
                    .map(|p| p.name.as_str()),
            );
        for p in cleared {
            let key = clear_key(p);
            for kg in 0..KEY_GROUPS as i32 {
                sink.changelog(kg, &key, Some(b""), id).map_err(sent)?;
                n += 1;
            }
        }
        for p in &c.plugins {
            for change in p.changes.iter() {
                let (k, v) = change.map_err(|e| format!("changelog of `{}`: {e}", p.name))?;
                self.key.clear();
                self.key.extend_from_slice(p.name.as_bytes());
                self.key.push(0);
                self.key.extend_from_slice(k.as_bytes());
                sink.changelog(key_group(k) as i32, &self.key, v, id)
                    .map_err(sent)?;
                n += 1;
            }
        }
        let meta = postcard::to_allocvec(&MetaOut {
            lineage: &self.lineage,
            meta: &c.meta,
        })
        .expect("a commit meta serializes");
        sink.changelog(0, META_KEY, Some(&meta), id).map_err(sent)?;
        self.plugins = c.meta.plugins.iter().map(|p| p.name.clone()).collect();
        Ok(n + 1)
    }
}

/// The state as the changelog holds it at commit `g`.
pub struct Restored {
    pub meta: CommitMeta,
    pub lineage: Lineage,
    /// The key groups read.
    pub key_groups: std::ops::Range<u32>,
    /// Every plugin of the meta with its keys (of those key groups). Whole
    /// (every key group), it is ready for `StateStore::apply` (each plugin
    /// `rewrite`); a part goes through `StateStore::put_key_groups`, which
    /// leaves the other key groups alone.
    pub commit: Commit,
    pub records: usize,
    pub took: Duration,
    /// Of which finding the meta record (partition 0).
    pub meta_took: Duration,
}

/// Why the changelog could not be read.
fn read_err(topic: &str, why: impl std::fmt::Display) -> String {
    format!("reading the changelog `{topic}`: {why}")
}

/// One record as read: partition, commit id, key, payload.
type Rec = (i32, u64, Vec<u8>, Option<Vec<u8>>);

/// The changelog's reader: one client for both passes of a restore.
fn reader(cfg: &KafkaConfig) -> Result<BaseConsumer<Quiet>, String> {
    let topic = &cfg.changelog_topic;
    cfg.topic_reader(
        topic,
        "changelog-reader",
        &[
            ("isolation.level", "read_committed"),
            ("fetch.min.bytes", "1"),
            // An empty or read partition must not hold its end back.
            ("fetch.wait.max.ms", "10"),
        ],
    )
    .map_err(|e| read_err(topic, e))
}

/// Read `partitions` of the changelog `topic` from the beginning to their
/// ends, handing each record to `each` in offset order per partition.
pub(super) fn read_partitions(
    topic: &str,
    consumer: &BaseConsumer<Quiet>,
    partitions: &[i32],
    mut each: impl FnMut(Rec) -> Result<(), String>,
) -> Result<usize, String> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| read_err(topic, e))?;
    }
    consumer.assign(&tpl).map_err(|e| read_err(topic, e))?;
    let mut open: std::collections::BTreeSet<i32> = partitions.iter().copied().collect();
    let deadline = Instant::now() + READ_FOR;
    let mut n = 0;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(read_err(
                topic,
                format!("partitions {open:?} not read to their end within {READ_FOR:?}"),
            ));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        match m {
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                open.remove(&p);
            }
            Err(e) => return Err(read_err(topic, e)),
            Ok(m) => {
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok())
                    .ok_or_else(|| {
                        read_err(
                            topic,
                            format!(
                                "partition {} offset {}: no `{ID_HEADER}` header",
                                m.partition(),
                                m.offset()
                            ),
                        )
                    })?;
                n += 1;
                each((
                    m.partition(),
                    id,
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ))?;
            }
        }
    }
    Ok(n)
}

/// Changelog records that count, folded into the state they leave: per
/// partition, a clear record clears what came before it there only.
#[derive(Default)]
pub(super) struct Folded(HashMap<i32, HashMap<Vec<u8>, Vec<u8>>>);

impl Folded {
    /// Record `key` → `payload` (none: a tombstone) of partition `p`.
    pub(super) fn apply(&mut self, p: i32, key: Vec<u8>, payload: Option<Vec<u8>>) {
        let part = self.0.entry(p).or_default();
        if let Some(plugin) = key.strip_prefix(CLEAR) {
            let mut pre = plugin.to_vec();
            pre.push(0);
            part.retain(|k, _| !k.starts_with(&pre));
        } else {
            match payload {
                Some(v) => {
                    part.insert(key, v);
                }
                None => {
                    part.remove(&key);
                }
            }
        }
    }

    /// Every key (`<plugin>\0<key>`) with its value.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.0.values().flatten()
    }
}

/// A changelog key's plugin and key; none when it has no `\0` or is not
/// UTF-8.
pub(super) fn split_key(k: &[u8]) -> Option<(&str, &str)> {
    let cut = k.iter().position(|&b| b == 0)?;
    Some((
        std::str::from_utf8(&k[..cut]).ok()?,
        std::str::from_utf8(&k[cut + 1..]).ok()?,
    ))
}

/// The state at commit `g`, the group's committed marker: the meta record
/// of `g`, then every partition's records that count (see the module
/// docs). `Ok(None)`: the changelog has no meta record of `g` (it was
/// committed without a changelog).
pub fn restore(cfg: &KafkaConfig, g: u64) -> Result<Option<Restored>, String> {
    restore_key_groups(cfg, g, keygroup::all())
}

/// The state of the key groups `kgs` at commit `g`: the meta record of
/// `g`, then the records that count of those key groups' partitions only
/// — what a host that gains key groups reads
/// ([`crate::state::StateStore::put_key_groups`] stores them).
pub fn restore_key_groups(
    cfg: &KafkaConfig,
    g: u64,
    kgs: std::ops::Range<u32>,
) -> Result<Option<Restored>, String> {
    let started = Instant::now();
    let topic = &cfg.changelog_topic;
    let mut found: Option<MetaIn> = None;
    let consumer = reader(cfg)?;
    read_partitions(topic, &consumer, &[0], |(_, id, key, payload)| {
        if key == META_KEY && id == g {
            let m: MetaIn = postcard::from_bytes(payload.as_deref().unwrap_or_default())
                .map_err(|e| read_err(topic, format!("the meta record of commit #{g}: {e}")))?;
            found = Some(m);
        }
        Ok(())
    })?;
    let Some(MetaIn { lineage, meta }) = found else {
        return Ok(None);
    };
    let meta_took = started.elapsed();
    let mut state = Folded::default();
    let partitions: Vec<i32> = kgs.clone().map(|kg| kg as i32).collect();
    let records = read_partitions(topic, &consumer, &partitions, |(p, id, key, payload)| {
        if lineage.counts(id, g) && key != META_KEY {
            state.apply(p, key, payload);
        }
        Ok(())
    })?;
    let mut by_plugin: HashMap<&str, Changes> = HashMap::new();
    for (k, v) in state.entries() {
        let (plugin, key) = split_key(k)
            .ok_or_else(|| read_err(topic, "a key that is not `<plugin>\\0<key>` in UTF-8"))?;
        if meta.plugins.iter().any(|p| p.name == plugin) {
            by_plugin.entry(plugin).or_default().put(key, Some(v));
        }
    }
    let plugins = meta
        .plugins
        .iter()
        .map(|p| PluginChanges {
            name: p.name.clone(),
            rewrite: true,
            changes: by_plugin.remove(p.name.as_str()).unwrap_or_default(),
        })
        .collect();
    Ok(Some(Restored {
        commit: Commit {
            meta: meta.clone(),
            plugins,
        },
        meta,
        lineage,
        key_groups: kgs,
        records,
        took: started.elapsed(),
        meta_took,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_and_the_skipped_ones_do_not_count() {
        let (mut l, start) = Lineage::fresh(0, 1_000);
        assert_eq!(start, 1_000);
        assert!(!l.counts(999, 2_000), "below the base");
        assert!(l.counts(1_000, 1_005));
        assert!(!l.counts(1_006, 1_005), "after the marker");
        // A crash with 1 005 committed and 1 006 open: the next run starts
        // past it even when the clock went back.
        let next = l.restart(1_005, 10);
        assert_eq!(next, 1_007);
        assert!(!l.counts(1_006, 2_000));
        assert!(l.counts(1_007, 2_000));
        // That run committed nothing and crashed with 1 007 open.
        let next = l.restart(1_005, 10);
        assert_eq!(next, 1_008);
        assert!(!l.counts(1_006, 2_000) && !l.counts(1_007, 2_000));
        assert!(l.counts(1_005, 2_000) && l.counts(1_008, 2_000));
        // It committed 1 008 and 1 009 and crashed with 1 010 open.
        assert_eq!(l.restart(1_009, 10), 1_011);
        assert!(!l.counts(1_010, 2_000) && l.counts(1_009, 2_000));
        // The clock moves ids well past any a lost lineage could know.
        let next = l.restart(1_009, 5_000_000);
        assert_eq!(next, 5_000_000);
        assert!(!l.counts(4_999_999, 6_000_000));
    }

    #[test]
    fn a_fresh_history_forgets_the_old_one() {
        let (l, start) = Lineage::fresh(77, 10);
        assert_eq!(start, 79);
        assert!(!l.counts(77, 100) && !l.counts(78, 100));
        assert!(l.counts(79, 100));
    }
}
