//! The sender's side of the exchange topic: a task's transactional
//! producer, and the reader of the tasks' committed markers (see the module
//! doc of `crate::exchange`).

use std::collections::BTreeMap;

use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::{HEADER, Header, Kind, Progress};
use crate::kafka::{Txn, TxnError};

/// Where the exchange lives. The topic has a partition per task and
/// range of key groups, so that every partition has one writer: tansu
/// applies a transaction's offsets only once no transaction that wrote to
/// the same partitions before it is still open (`kafka_broker.rs`), so
/// tasks that shared partitions would see each other's commits hold their
/// markers back.
#[derive(Debug, Clone)]
pub struct ExchangeTopics {
    /// `<group>-exchange`, with `tasks × ranges` partitions.
    pub topic: String,
    /// The upstream tasks (the input topic's partitions).
    pub tasks: u32,
    /// The ranges of key groups (the stage-2 owners' unit).
    pub ranges: u32,
    /// The topic whose partition *t* holds task *t*'s marker (an offset of
    /// `marker_group`; the topic holds no records).
    pub marker_topic: String,
    pub marker_group: String,
    /// Task *t* commits with the transactional id `<prefix>-task-<t>`.
    pub transactional_prefix: String,
}

impl ExchangeTopics {
    /// The partitions the topic needs.
    pub fn partitions(&self) -> i32 {
        (self.tasks * self.ranges) as i32
    }

    /// The partition task `task` writes range `range`'s records to.
    pub fn partition(&self, task: u32, range: u32) -> i32 {
        (task * self.ranges + range) as i32
    }

    /// The partitions the owner of `range` reads: one per task.
    pub fn of_range(&self, range: u32) -> Vec<i32> {
        (0..self.tasks).map(|t| self.partition(t, range)).collect()
    }
}

/// The exchange topic failed for a task.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("exchange task {task}: {what}: {source}")]
    Kafka {
        task: u32,
        what: &'static str,
        source: KafkaError,
    },
    #[error("exchange task {task}: {why}")]
    Refused { task: u32, why: String },
}

impl ExchangeError {
    /// A [`Txn`]'s failure, as task `task`'s.
    fn of(task: u32) -> impl Fn(TxnError) -> ExchangeError {
        move |e| match e {
            TxnError::Kafka { what, source } => ExchangeError::Kafka { task, what, source },
            TxnError::Broken => ExchangeError::Refused {
                task,
                why: "a call failed: open the task again".into(),
            },
            TxnError::Refused(why) => ExchangeError::Refused { task, why },
        }
    }
}

/// A task's transactional producer: an incarnation of the task. Opening it
/// fences the task's previous producer; after a failed call it must be
/// opened again, which begins a new incarnation.
pub struct TaskProducer {
    task: u32,
    topics: ExchangeTopics,
    txn: Txn,
    /// The first id of this incarnation.
    start: u64,
    /// The committed marker it found.
    prev: u64,
    /// The id of the open (or next) transaction.
    id: u64,
    /// Records sent in the open transaction, per partition.
    sent: Vec<u32>,
}

impl TaskProducer {
    /// Take task `task` over: initialise its transactional id (the broker
    /// fences the producer that had it and aborts its open transaction),
    /// read the committed marker *m*, and commit this incarnation's claim
    /// as `max(m + 2, now_us)` (`now_us`: the time in µs) before anything
    /// else.
    pub fn open(
        client: &ClientConfig,
        topics: &ExchangeTopics,
        task: u32,
        now_us: u64,
    ) -> Result<TaskProducer, ExchangeError> {
        let err = |what| move |source| ExchangeError::Kafka { task, what, source };
        if task >= topics.tasks {
            return Err(ExchangeError::Refused {
                task,
                why: format!("the exchange has {} tasks", topics.tasks),
            });
        }
        let txn = Txn::open(
            client,
            &format!("{}-task-{task}", topics.transactional_prefix),
            &topics.marker_group,
            &topics.marker_topic,
            task,
        )
        .map_err(ExchangeError::of(task))?;
        let prev = read_markers(txn.marker_group(), topics, &[task])
            .map_err(err("reading the committed marker"))?
            .remove(&task)
            .unwrap_or(0);
        let start = (prev + 2).max(now_us);
        let mut p = TaskProducer {
            task,
            topics: topics.clone(),
            txn,
            start,
            prev,
            id: start,
            sent: vec![0; topics.ranges as usize],
        };
        p.claim()?;
        Ok(p)
    }

    /// Close task `task` for good (its input partition is gone): one last
    /// incarnation, which fences the one before and commits its claim and
    /// nothing else. The claim shows every owner how the task's last
    /// transactions ended, so none of its records is left waiting in a
    /// [`super::Gate`] and holding the owner's committed exchange offset
    /// back (`gate::tests::a_task_closed_by_a_last_claim_holds_nothing_back`).
    pub fn close(
        client: &ClientConfig,
        topics: &ExchangeTopics,
        task: u32,
        now_us: u64,
    ) -> Result<(), ExchangeError> {
        TaskProducer::open(client, topics, task, now_us).map(drop)
    }

    /// Commit the claim: a claim record to each of the task's partitions
    /// and the marker at `start` (tansu drops the offsets of a transaction
    /// that wrote no record).
    fn claim(&mut self) -> Result<(), ExchangeError> {
        self.begin()?;
        for r in 0..self.topics.ranges {
            self.produce(r, &[], Kind::Claim)?;
        }
        self.finish(&[])
    }

    /// The first id of this incarnation (its claim's).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The task's committed marker when this incarnation began.
    pub fn prev(&self) -> u64 {
        self.prev
    }

    /// The id the open (or next) transaction commits as.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn begin(&mut self) -> Result<(), ExchangeError> {
        self.txn.begin().map_err(ExchangeError::of(self.task))
    }

    fn header(&self, range: u32, kind: Kind) -> OwnedHeaders {
        let h = Header {
            task: self.task,
            start: self.start,
            prev: self.prev,
            id: self.id,
            n: self.sent[range as usize],
            kind,
        };
        OwnedHeaders::new().insert(KafkaHeader {
            key: HEADER,
            value: Some(&h.encode()[..]),
        })
    }

    fn produce(&mut self, range: u32, payload: &[u8], kind: Kind) -> Result<(), ExchangeError> {
        let headers = self.header(range, kind);
        let rec = BaseRecord::<(), [u8]>::to(&self.topics.topic)
            .partition(self.topics.partition(self.task, range))
            .payload(payload)
            .headers(headers);
        self.txn.send(rec).map_err(ExchangeError::of(self.task))?;
        self.sent[range as usize] += 1;
        Ok(())
    }

    /// A record for the owner of key-group range `range`, in the open
    /// transaction (begun if none is).
    pub fn send(&mut self, range: u32, payload: &[u8]) -> Result<(), ExchangeError> {
        if range >= self.topics.ranges {
            return Err(ExchangeError::Refused {
                task: self.task,
                why: format!(
                    "key-group range {range} (the exchange has {})",
                    self.topics.ranges
                ),
            });
        }
        self.begin()?;
        self.produce(range, payload, Kind::Data)
    }

    /// Wait until the records sent so far reached the broker (still in the
    /// open transaction).
    pub fn flush(&mut self) -> Result<(), ExchangeError> {
        self.txn.flush().map_err(ExchangeError::of(self.task))
    }

    /// Commit the open transaction: a seal with the task's `progress` to
    /// each of its partitions, the task's marker, and `offsets` of other
    /// groups (the input's), all in it. Returns the committed id.
    pub fn commit(
        &mut self,
        progress: Progress,
        offsets: &[(&TopicPartitionList, &ConsumerGroupMetadata)],
    ) -> Result<u64, ExchangeError> {
        self.begin()?;
        let seal = progress.encode();
        for r in 0..self.topics.ranges {
            self.produce(r, &seal, Kind::Seal)?;
        }
        let id = self.id;
        self.finish(offsets)?;
        Ok(id)
    }

    /// The marker and `offsets` into the open transaction, and commit it.
    fn finish(
        &mut self,
        offsets: &[(&TopicPartitionList, &ConsumerGroupMetadata)],
    ) -> Result<(), ExchangeError> {
        self.txn
            .commit(self.id, offsets)
            .map_err(ExchangeError::of(self.task))?;
        self.sent.iter_mut().for_each(|n| *n = 0);
        self.id += 1;
        Ok(())
    }

    /// The task's committed marker, as the broker has it now.
    pub fn committed(&self) -> Result<Option<u64>, ExchangeError> {
        read_markers(self.txn.marker_group(), &self.topics, &[self.task])
            .map(|mut m| m.remove(&self.task))
            .map_err(|source| ExchangeError::Kafka {
                task: self.task,
                what: "reading the committed marker",
                source,
            })
    }
}

fn read_markers(
    group: &BaseConsumer,
    topics: &ExchangeTopics,
    tasks: &[u32],
) -> Result<BTreeMap<u32, u64>, KafkaError> {
    crate::kafka::read_markers(group, &topics.marker_topic, tasks)
}

/// Reads the tasks' committed markers, for the gates.
pub struct MarkerReader {
    group: BaseConsumer,
    topics: ExchangeTopics,
}

impl MarkerReader {
    pub fn new(client: &ClientConfig, topics: &ExchangeTopics) -> Result<Self, KafkaError> {
        let group: BaseConsumer = client
            .clone()
            .set("group.id", &topics.marker_group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(MarkerReader {
            group,
            topics: topics.clone(),
        })
    }

    /// The committed marker of each of `tasks` that has one.
    pub fn read(&self, tasks: &[u32]) -> Result<BTreeMap<u32, u64>, KafkaError> {
        read_markers(&self.group, &self.topics, tasks)
    }
}
