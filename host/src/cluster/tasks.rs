//! The input partitions one host runs, decided by Kafka's group protocol
//! (issue #28, step 5 of `docs/kafka-exactly-once-plan.md`): a [`Tasks`]
//! is a member of the input's consumer group (cooperative-sticky,
//! `crate::exchange::Membership`) on an empty topic with a partition per
//! input partition, `<group>-input-tasks`, as the ranges have theirs: the
//! member given partition *p* runs input partition *p*. (Subscribed to the
//! input itself, the member fetched the input a second time, and its
//! rebalances stalled on tansu.) For each partition it is given it opens
//! the partition's task — its [`TaskProducer`] (`<prefix>-task-<p>`, which
//! fences whoever had it and commits a claim) and a reader from the
//! group's committed offset of the input partition — hands what it reads
//! to its [`Stage1`], which sends records for the key-group ranges in the
//! task's open transaction, and commits the transaction with a seal of
//! the task's progress and the partition's input offset in the offsets
//! group (another group than the members': see [`InputGroup`]). So
//! a record of the input is sent on to the ranges exactly once, whichever
//! host reads it, and the owners (`super::ranges`) apply it once. The
//! pipeline does not run on it yet: `host/tests/kafka_range.rs` runs both
//! stages on hosts that join and leave.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::units::{Step, Unit, Units};
use crate::exchange::{ExchangeError, ExchangeTopics, Membership, Progress, TaskProducer};
use crate::kafka::{KafkaConfig, KafkaSetupError};

/// The most records handed to stage 1 at once.
const MAX_READ: usize = 2_000;

/// What runs on an input partition's records: stage 1.
pub trait Stage1 {
    /// Input partition `task` is this host's now.
    fn gained(&mut self, task: u32);
    /// `records` (offset, payload) of input partition `task`, in order
    /// (perhaps none): send what they make for the key-group ranges through
    /// `out`, in its open transaction; return the task's progress after
    /// them (its watermark, or that it is idle).
    fn apply(
        &mut self,
        task: u32,
        records: &[(i64, &[u8])],
        out: &mut TaskProducer,
    ) -> Result<Progress, ExchangeError>;
    /// Input partition `task` is no longer this host's.
    fn lost(&mut self, task: u32);
}

/// Where the input is and how its partitions are shared.
#[derive(Debug, Clone)]
pub struct InputGroup {
    /// The input topic.
    pub topic: String,
    /// The consumer group whose members share the partitions
    /// (`<group>-input-tasks`).
    pub group: String,
    /// The empty topic with a partition per input partition that `group`
    /// is subscribed to (`<group>-input-tasks`).
    pub tasks_topic: String,
    /// The group holding the committed input offsets (`<group>`), which
    /// has no members. (With the members' group holding them too, its
    /// rebalances on tansu took minutes; see
    /// `docs/kafka-exactly-once-plan.md`, step 5.)
    pub offsets_group: String,
}

/// An input partition this host runs.
struct Running {
    producer: TaskProducer,
    reader: BaseConsumer,
    /// The offset after the last record handed to stage 1 (none until
    /// one was: then the committed offset stands).
    next: Option<i64>,
    progress: Progress,
}

/// Input partitions as the units of `super::units`.
struct TaskUnits<S: Stage1> {
    client: ClientConfig,
    exchange: ExchangeTopics,
    input_topic: String,
    /// A client of the offsets group: its committed offsets, and its
    /// metadata for the transactions.
    offsets: BaseConsumer,
    offsets_meta: ConsumerGroupMetadata,
    running: BTreeMap<u32, Running>,
    stage1: S,
}

/// The input partitions one host runs (see the module).
pub struct Tasks<S: Stage1> {
    units: Units<TaskUnits<S>>,
}

impl<S: Stage1> Tasks<S> {
    /// Join the input's group as `member` (partition *p* of the input is
    /// task *p* of `exchange`); nothing runs until [`Self::step`].
    pub fn join(
        cfg: &KafkaConfig,
        exchange: ExchangeTopics,
        input: &InputGroup,
        member: &str,
        commit_every: Duration,
        stage1: S,
    ) -> Result<Self, KafkaSetupError> {
        let setup = |why: String| KafkaSetupError {
            what: format!("the input's offsets group {}", input.offsets_group),
            why,
        };
        let offsets: BaseConsumer = cfg
            .client(&[
                ("group.id", input.offsets_group.as_str()),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .map_err(|e| setup(e.to_string()))?;
        let offsets_meta = offsets
            .group_metadata()
            .ok_or_else(|| setup("no group metadata".into()))?;
        let membership = Membership::join(cfg, &input.group, &input.tasks_topic, member)?;
        let unit = TaskUnits {
            client: cfg.client(&[]),
            input_topic: input.topic.clone(),
            offsets,
            offsets_meta,
            exchange,
            running: BTreeMap::new(),
            stage1,
        };
        Ok(Tasks {
            units: Units::new(membership, commit_every, unit),
        })
    }

    /// The input partitions running here.
    pub fn running(&self) -> Vec<u32> {
        self.units.running()
    }

    /// Serve the group for up to `wait`, take up and let go of partitions
    /// as it says, hand each running task's new records to stage 1, and
    /// commit the tasks that are due (`Step::records`: records read).
    pub fn step(&mut self, wait: Duration) -> Step {
        self.units.step(wait)
    }

    /// This host's stage 1.
    pub fn stage1(&self) -> &S {
        &self.units.unit.stage1
    }

    /// Commit every running task and leave the group.
    pub fn leave(self) -> Step {
        self.units.leave()
    }
}

impl<S: Stage1> Unit for TaskUnits<S> {
    const WHAT: &'static str = "input task";

    /// Take input partition `t` up: fence its task and commit a claim,
    /// then read from the group's committed offset (read after the fence,
    /// so the last commit of whoever had it is in it).
    fn open(&mut self, t: u32) -> Result<(), String> {
        let producer = TaskProducer::open(
            &self.client,
            &self.exchange,
            t,
            crate::checkpoint::changelog::now_us(),
        )
        .map_err(|e| e.to_string())?;
        let topic = self.input_topic.clone();
        let from = committed(&self.offsets, &topic, t)
            .map_err(|e| format!("the committed offset of {topic} [{t}]: {e}"))?
            .map_or(Offset::Beginning, Offset::Offset);
        let reader: BaseConsumer = self
            .client
            .clone()
            .set(
                "group.id",
                format!("{}-reader", self.exchange.transactional_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(|e| format!("the reader of {topic} [{t}]: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, t as i32, from)
            .and_then(|()| reader.assign(&tpl))
            .map_err(|e| format!("assigning {topic} [{t}]: {e}"))?;
        tracing::info!(task = t, from = ?from, "input partition taken up");
        self.stage1.gained(t);
        self.running.insert(
            t,
            Running {
                producer,
                reader,
                next: None,
                progress: Progress {
                    watermark: i64::MIN,
                    idle: true,
                },
            },
        );
        Ok(())
    }

    /// Read what task `t`'s partition has now (a few ms at most) and hand
    /// it to stage 1.
    fn work(&mut self, t: u32) -> Result<usize, String> {
        let run = self.running.get_mut(&t).expect("a running task");
        let mut got: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut wait = Duration::from_millis(5);
        while got.len() < MAX_READ {
            match run.reader.poll(wait) {
                None => break,
                Some(Err(e)) => return Err(format!("reading input partition {t}: {e}")),
                Some(Ok(m)) => {
                    got.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
                    wait = Duration::ZERO;
                }
            }
        }
        let records: Vec<(i64, &[u8])> = got.iter().map(|(o, p)| (*o, p.as_slice())).collect();
        run.progress = self
            .stage1
            .apply(t, &records, &mut run.producer)
            .map_err(|e| e.to_string())?;
        if let Some((last, _)) = got.last() {
            run.next = Some(last + 1);
        }
        Ok(got.len())
    }

    /// Commit task `t`'s transaction: its seal and its input offset.
    fn commit(&mut self, t: u32) -> Result<u64, String> {
        let topic = &self.input_topic;
        let run = self.running.get_mut(&t).expect("a running task");
        let mut offsets = TopicPartitionList::new();
        if let Some(next) = run.next {
            offsets
                .add_partition_offset(topic, t as i32, Offset::Offset(next))
                .map_err(|e| e.to_string())?;
        }
        let input = [(&offsets, &self.offsets_meta)];
        run.producer
            .commit(run.progress, if run.next.is_some() { &input } else { &[] })
            .map_err(|e| e.to_string())
    }

    fn close(&mut self, t: u32) {
        if self.running.remove(&t).is_some() {
            self.stage1.lost(t);
        }
    }
}

/// The offset `group` committed on `partition` of `topic`, if any.
fn committed(
    group: &BaseConsumer,
    topic: &str,
    partition: u32,
) -> Result<Option<i64>, rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition as i32);
    let got = group.committed_offsets(tpl, Duration::from_secs(10))?;
    for e in got.elements() {
        e.error()?;
        if let Offset::Offset(o) = e.offset() {
            return Ok(Some(o));
        }
    }
    Ok(None)
}
