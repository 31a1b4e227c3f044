//! Stage 2's unit of commit when hosts share the work (issue #28, step 4
//! of `docs/kafka-exactly-once-plan.md`): a **range of key groups** with a
//! transactional producer of its own, `<prefix>-kg-<r>`, whoever runs it.
//! The pipeline does not run on it yet; `host/tests/kafka_range.rs` moves
//! ranges between incarnations through crashes and a zombie.
//!
//! Every partition it writes has **one writer**, the range (tansu holds a
//! committed transaction's records and offsets back while an earlier
//! transaction on any of its partitions is open, `kafka_broker.rs`):
//! - partition *r* of each output topic ([`RangeProducer::output`]): the
//!   output topics have a partition per range, and a key's partition is
//!   fixed (key → key group → range) whichever host owns the range;
//! - the changelog partitions of its key groups ([`RangeProducer::change`],
//!   the records of `super::changelog`), and in its first one the range's
//!   **meta record** (`\0range-meta`): the [`Lineage`], what the owner
//!   applied of each exchange task and where to read on, and the caller's
//!   own meta (window and plugin state that is not per key);
//! - the range's **marker**: its commit id as the offset of partition *r*
//!   of a marker topic in a marker group, committed in the transaction;
//! - and, for monitoring, the exchange offsets in the owners' group (lag
//!   in any Kafka tool). Restore reads them from the meta record, which is
//!   read anyway.
//!
//! **Opening a range** ([`RangeProducer::open`]) initialises its
//! transactional id, which fences the incarnation before it (a zombie's
//! commit fails, and its open transaction is aborted); reads the marker
//! *g*; rebuilds the range's state from the changelog at *g* (records
//! count by the lineage's rule, so those of aborted transactions, which
//! tansu shows, do not); and commits a **claim** (the same state, the id
//! `max(g + 2, now in µs)`, the ids in between declared aborted) before
//! anything else, so a later incarnation never reuses an id this one
//! wrote, whatever the hosts' clocks — as the exchange's tasks do
//! (`crate::exchange`). Nothing local is needed: a host's RocksDB can be
//! a cache of it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::changelog::{self, Folded, ID_HEADER, Lineage};
use crate::exchange::{Applied, ExchangeTopics};
use crate::kafka::{Quiet, Txn, TxnError};
use crate::state::keygroup;

/// The key of a range's meta record.
pub const META_KEY: &[u8] = b"\0range-meta";

/// Where the ranges live.
#[derive(Debug, Clone)]
pub struct RangeTopics {
    /// The number of ranges (the output topics have as many partitions).
    pub ranges: u32,
    /// `<group>-changelog`: a partition per key group.
    pub changelog: String,
    /// The topic whose partition *r* holds range *r*'s marker (an offset
    /// of `marker_group`; the topic holds no records).
    pub marker_topic: String,
    pub marker_group: String,
    /// The exchange the ranges' owners read.
    pub exchange: ExchangeTopics,
    /// The group whose offsets of the exchange show the owners' lag.
    pub owners_group: String,
    /// Range *r* commits with the transactional id `<prefix>-kg-<r>`.
    pub transactional_prefix: String,
}

impl RangeTopics {
    /// The key groups of range `r`.
    pub fn key_groups(&self, r: u32) -> Range<u32> {
        keygroup::range_of(r as usize, self.ranges as usize)
    }

    /// The range key group `kg` belongs to.
    pub fn range_of(&self, kg: u32) -> u32 {
        keygroup::part_of(kg, self.ranges as usize) as u32
    }
}

/// A range's transactions failed, or a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("key-group range {range}: {what}: {source}")]
    Kafka {
        range: u32,
        what: &'static str,
        source: KafkaError,
    },
    #[error("key-group range {range}: {why}")]
    Refused { range: u32, why: String },
}

impl RangeError {
    /// A [`Txn`]'s failure, as range `range`'s.
    fn of(range: u32) -> impl Fn(TxnError) -> RangeError {
        move |e| match e {
            TxnError::Kafka { what, source } => RangeError::Kafka {
                range,
                what,
                source,
            },
            TxnError::Broken => RangeError::Refused {
                range,
                why: "a call failed: open the range again".into(),
            },
            TxnError::Refused(why) => RangeError::Refused { range, why },
        }
    }
}

/// Per exchange task: the last record applied, and the exchange offset to
/// read on from (what `crate::exchange::Owner::state` gives, and
/// `Owner::open` takes).
pub type ExchangeState = Vec<(BTreeMap<u32, Applied>, i64)>;

/// A meta record as written and read.
#[derive(Serialize, Deserialize)]
struct Meta {
    lineage: Lineage,
    exchange: ExchangeState,
    user: Vec<u8>,
}

/// A range's state as its last committed transaction left it.
#[derive(Debug)]
pub struct RangeState {
    /// The marker it was read at (0: the range never committed).
    pub marker: u64,
    /// Where its owner reads the exchange on from (each partition's
    /// beginning when the range never committed).
    pub exchange: ExchangeState,
    /// The caller's meta of the last commit (empty when none).
    pub meta: Vec<u8>,
    /// Every key (`<plugin>\0<key>`) of its key groups with its value.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Changelog records read, and how long the restore took.
    pub records: usize,
    pub took: Duration,
    /// Of which reading the first partition, with the meta records.
    pub meta_took: Duration,
}

/// An incarnation of a range: after a failed call it must be opened again.
pub struct RangeProducer {
    range: u32,
    topics: RangeTopics,
    key_groups: Range<u32>,
    txn: Txn,
    owners_meta: ConsumerGroupMetadata,
    lineage: Lineage,
    /// The first id of this incarnation (its claim's).
    start: u64,
    /// The id of the open (or next) transaction.
    id: u64,
}

impl RangeProducer {
    /// Take range `range` over (see the module doc): fence the incarnation
    /// before, restore the state it committed, commit this one's claim.
    /// `now_us`: the time in µs.
    pub fn open(
        client: &ClientConfig,
        topics: &RangeTopics,
        range: u32,
        now_us: u64,
    ) -> Result<(RangeProducer, RangeState), RangeError> {
        let err = |what| {
            move |source| RangeError::Kafka {
                range,
                what,
                source,
            }
        };
        if range >= topics.ranges {
            return Err(RangeError::Refused {
                range,
                why: format!("there are {} ranges", topics.ranges),
            });
        }
        let txn = Txn::open(
            client,
            &format!("{}-kg-{range}", topics.transactional_prefix),
            &topics.marker_group,
            &topics.marker_topic,
            range,
        )
        .map_err(RangeError::of(range))?;
        let (_, owners_meta) =
            Txn::group(client, &topics.owners_group).map_err(RangeError::of(range))?;
        let g =
            read_marker(txn.marker_group(), topics, range).map_err(err("reading the marker"))?;
        let (state, lineage) = restore(client, topics, range, g)?;
        let (lineage, start) = match lineage {
            Some(mut l) => {
                let start = l.restart(g, now_us);
                (l, start)
            }
            None => Lineage::fresh(g, now_us),
        };
        let mut p = RangeProducer {
            range,
            key_groups: topics.key_groups(range),
            topics: topics.clone(),
            txn,
            owners_meta,
            lineage,
            start,
            id: start,
        };
        p.commit(&state.exchange, &state.meta)?;
        Ok((p, state))
    }

    /// The range.
    pub fn range(&self) -> u32 {
        self.range
    }

    /// The first id of this incarnation (its claim's).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The id the open (or next) transaction commits as.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), RangeError> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.txn.send(rec).map_err(RangeError::of(self.range))
    }

    /// A changelog record of the open transaction (its id in the header).
    fn changelog(&mut self, kg: u32, key: &[u8], value: Option<&[u8]>) -> Result<(), RangeError> {
        let id = self.id.to_string();
        let headers = OwnedHeaders::new_with_capacity(1).insert(KafkaHeader {
            key: ID_HEADER,
            value: Some(id.as_bytes()),
        });
        let topic = self.topics.changelog.clone();
        self.produce(&topic, kg as i32, key, value, Some(headers))
    }

    /// An output record in the open transaction: partition *r* of `topic`.
    pub fn output(&mut self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), RangeError> {
        self.produce(topic, self.range as i32, key, Some(payload), None)
    }

    /// A state change in the open transaction: `key` (`<plugin>\0<key>`)
    /// of key group `kg`, set to `value` or deleted (`None`). A key group
    /// of another range is refused.
    pub fn change(&mut self, kg: u32, key: &[u8], value: Option<&[u8]>) -> Result<(), RangeError> {
        if !self.key_groups.contains(&kg) {
            return Err(RangeError::Refused {
                range: self.range,
                why: format!("key group {kg} is not in {:?}", self.key_groups),
            });
        }
        self.changelog(kg, key, value)
    }

    /// Every key of `plugin` in the range is gone (a state rewritten or a
    /// plugin removed), in the open transaction.
    pub fn clear(&mut self, plugin: &str) -> Result<(), RangeError> {
        let key = changelog::clear_key(plugin);
        for kg in self.key_groups.clone() {
            self.changelog(kg, &key, Some(b""))?;
        }
        Ok(())
    }

    /// Commit the open transaction (begun if none is): the meta record
    /// with `exchange` and the caller's `meta`, the marker, the owners'
    /// exchange offsets. Returns the committed id.
    pub fn commit(&mut self, exchange: &ExchangeState, meta: &[u8]) -> Result<u64, RangeError> {
        if exchange.len() != self.topics.exchange.tasks as usize {
            return Err(RangeError::Refused {
                range: self.range,
                why: format!(
                    "an exchange state of {} tasks (the exchange has {})",
                    exchange.len(),
                    self.topics.exchange.tasks
                ),
            });
        }
        let record = postcard::to_allocvec(&Meta {
            lineage: self.lineage.clone(),
            exchange: exchange.clone(),
            user: meta.to_vec(),
        })
        .expect("a range meta serializes");
        let mut offsets = TopicPartitionList::new();
        for (p, (_, from)) in self
            .topics
            .exchange
            .of_range(self.range)
            .into_iter()
            .zip(exchange)
        {
            offsets
                .add_partition_offset(&self.topics.exchange.topic, p, Offset::Offset(*from))
                .map_err(|source| RangeError::Kafka {
                    range: self.range,
                    what: "the exchange offsets",
                    source,
                })?;
        }
        self.changelog(self.key_groups.start, META_KEY, Some(&record))?;
        self.txn
            .commit(self.id, &[(&offsets, &self.owners_meta)])
            .map_err(RangeError::of(self.range))?;
        let id = self.id;
        self.id += 1;
        Ok(id)
    }

    /// Send what is queued to the broker (still in the open transaction).
    pub fn flush(&mut self) -> Result<(), RangeError> {
        self.txn.flush().map_err(RangeError::of(self.range))
    }

    /// The range's committed marker, as the broker has it now.
    pub fn committed(&self) -> Result<u64, RangeError> {
        read_marker(self.txn.marker_group(), &self.topics, self.range).map_err(|source| {
            RangeError::Kafka {
                range: self.range,
                what: "reading the marker",
                source,
            }
        })
    }
}

/// Range `range`'s committed marker; 0 when it has none.
fn read_marker(group: &BaseConsumer, topics: &RangeTopics, range: u32) -> Result<u64, KafkaError> {
    crate::kafka::read_markers(group, &topics.marker_topic, &[range])
        .map(|m| m.get(&range).copied().unwrap_or(0))
}

/// The state of range `range` at its marker `g`: its meta record of `g`,
/// then the records of its key groups that count. With `g` 0, an empty
/// state and no lineage.
fn restore(
    client: &ClientConfig,
    topics: &RangeTopics,
    range: u32,
    g: u64,
) -> Result<(RangeState, Option<Lineage>), RangeError> {
    let started = Instant::now();
    if g == 0 {
        let state = RangeState {
            marker: 0,
            exchange: vec![(BTreeMap::new(), 0); topics.exchange.tasks as usize],
            meta: Vec::new(),
            entries: BTreeMap::new(),
            records: 0,
            took: started.elapsed(),
            meta_took: Duration::ZERO,
        };
        return Ok((state, None));
    }
    let topic = &topics.changelog;
    let refused = |why: String| RangeError::Refused { range, why };
    let consumer: BaseConsumer<Quiet> = client
        .clone()
        .set(
            "group.id",
            format!("{}-range-reader", topics.transactional_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(Quiet)
        .map_err(|source| RangeError::Kafka {
            range,
            what: "creating the changelog's reader",
            source,
        })?;
    // Assigned before it has the topic's metadata, a consumer gets its
    // first records ~500 ms later (BENCHMARKS.md, "Restoring").
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| RangeError::Kafka {
            range,
            what: "the changelog's metadata",
            source,
        })?;
    let kgs = topics.key_groups(range);
    let first = kgs.start as i32;
    // The first partition holds the meta records: read it first, keeping
    // its records until the meta record of `g` says which count; then fold
    // the others as they come.
    let mut held: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut meta: Option<Meta> = None;
    let mut records = changelog::read_partitions(topic, &consumer, &[first], |(_, id, key, v)| {
        if id > g {
            return Ok(());
        }
        if key == META_KEY {
            if id == g {
                let m = postcard::from_bytes(v.as_deref().unwrap_or_default())
                    .map_err(|e| format!("the meta record of commit #{g}: {e}"))?;
                meta = Some(m);
            }
            return Ok(());
        }
        held.push((id, key, v));
        Ok(())
    })
    .map_err(refused)?;
    let Some(Meta {
        lineage,
        exchange,
        user,
    }) = meta
    else {
        return Err(refused(format!(
            "`{topic}` has no meta record of the committed #{g} in partition {first}"
        )));
    };
    let meta_took = started.elapsed();
    let mut folded = Folded::default();
    for (id, key, v) in held {
        if lineage.counts(id, g) {
            folded.apply(first, key, v);
        }
    }
    let rest: Vec<i32> = kgs.clone().skip(1).map(|kg| kg as i32).collect();
    if !rest.is_empty() {
        records += changelog::read_partitions(topic, &consumer, &rest, |(p, id, key, v)| {
            if lineage.counts(id, g) && key != META_KEY {
                folded.apply(p, key, v);
            }
            Ok(())
        })
        .map_err(refused)?;
    }
    let entries = folded
        .entries()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((
        RangeState {
            marker: g,
            exchange,
            meta: user,
            entries,
            records,
            took: started.elapsed(),
            meta_took,
        },
        Some(lineage),
    ))
}
