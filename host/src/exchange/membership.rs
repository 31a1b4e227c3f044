//! Who runs what in a group of hosts, decided by Kafka: a [`Membership`] is
//! a member of a consumer group (cooperative-sticky, so a rebalance moves
//! only what must move) on a topic whose partitions are the units the
//! hosts share, and tells its host what it gained and lost between two
//! polls. Step 5 of `docs/kafka-exactly-once-plan.md`; the pipeline does
//! not use it yet.
//!
//! The units of stage 2 are ranges of key groups, and the exchange topic
//! has a partition per task *and* range (one writer per partition), which
//! the group protocol would split between hosts. So ranges are shared
//! through a topic of their own, `<group>-exchange-ranges`: one empty
//! partition per range, never written; the member assigned partition *r*
//! owns range *r* and reads its exchange partitions by assignment.
//!
//! Ownership is not what makes a commit safe: a host that gains a range
//! opens the range's transactional producer, which fences the one that
//! had it (tansu does not fence by group metadata,
//! `host/tests/kafka_broker.rs`). A host told it lost a range has already
//! lost it; its next commit for the range fails and is dropped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::kafka::{KafkaConfig, KafkaSetupError};

/// What changed for this member in one poll, in the order Kafka said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Gained(BTreeSet<i32>),
    Lost(BTreeSet<i32>),
}

/// The member's context: the rebalance callbacks run inside `poll`, on
/// the polling thread.
#[derive(Default)]
pub struct Tracker {
    owned: Mutex<BTreeSet<i32>>,
    changes: Mutex<Vec<Change>>,
}

impl Tracker {
    fn partitions(tpl: &rdkafka::TopicPartitionList) -> BTreeSet<i32> {
        tpl.elements().iter().map(|e| e.partition()).collect()
    }
}

impl rdkafka::client::ClientContext for Tracker {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::Quiet.error(error, reason);
    }
}

impl ConsumerContext for Tracker {
    // A revocation is recorded before the partitions go (the host must
    // stop using them), an assignment after they came.
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = Self::partitions(tpl);
                let mut owned = self.owned.lock().expect("membership lock");
                owned.retain(|p| !lost.contains(p));
                drop(owned);
                if !lost.is_empty() {
                    self.changes
                        .lock()
                        .expect("membership lock")
                        .push(Change::Lost(lost));
                }
            }
            Rebalance::Error(e) => tracing::warn!("consumer-group rebalance: {e}"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let gained = Self::partitions(tpl);
            self.owned
                .lock()
                .expect("membership lock")
                .extend(gained.iter().copied());
            if !gained.is_empty() {
                self.changes
                    .lock()
                    .expect("membership lock")
                    .push(Change::Gained(gained));
            }
        }
    }
}

/// A member of a consumer group on a topic of units (see the module).
pub struct Membership {
    consumer: BaseConsumer<Tracker>,
    topic: String,
}

impl Membership {
    /// How long a member may go silent before the group gives its
    /// partitions to the others (`session.timeout.ms`); tansu's rebalance
    /// adds its own delays (BENCHMARKS.md, "Membership").
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

    /// Join `group` on `topic` as `member` (its client id: which host).
    pub fn join(
        cfg: &KafkaConfig,
        group: &str,
        topic: &str,
        member: &str,
    ) -> Result<Self, KafkaSetupError> {
        let session = Self::SESSION_TIMEOUT.as_millis().to_string();
        // A member that stops polling is dropped after this long, as one
        // that stops heartbeating is after the session timeout.
        let poll_interval = (Self::SESSION_TIMEOUT + Duration::from_secs(1))
            .as_millis()
            .to_string();
        let consumer: BaseConsumer<Tracker> = cfg
            .client(&[
                ("group.id", group),
                ("client.id", member),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", &session),
                ("heartbeat.interval.ms", "1000"),
                ("max.poll.interval.ms", &poll_interval),
                ("enable.auto.commit", "false"),
            ])
            .create_with_context(Tracker::default())
            .map_err(|e| KafkaSetupError {
                what: format!("the member {member} of group {group}"),
                why: e.to_string(),
            })?;
        consumer.subscribe(&[topic]).map_err(|e| KafkaSetupError {
            what: format!("subscribing group {group} to {topic}"),
            why: e.to_string(),
        })?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Serve the group for up to `wait` (heartbeats run on librdkafka's
    /// threads; rebalances only here) and return what changed since the
    /// last call. The topic's partitions are never written: every record
    /// found on one is dropped (all that are queued: the group's rebalance
    /// events queue behind them, and served one record per poll they held
    /// a rebalance back for minutes).
    pub fn poll(&self, wait: Duration) -> Vec<Change> {
        let mut skipped = 0u64;
        let mut next = self.consumer.poll(wait);
        while let Some(got) = next {
            match got {
                Ok(_) => skipped += 1,
                Err(e) => tracing::debug!(topic = %self.topic, "membership poll: {e}"),
            }
            next = self.consumer.poll(Duration::ZERO);
        }
        if skipped > 0 {
            tracing::warn!(
                topic = %self.topic,
                skipped,
                "records on a membership topic, which nothing should write: dropped"
            );
        }
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .expect("membership lock"),
        )
    }

    /// The partitions this member holds now.
    pub fn owned(&self) -> BTreeSet<i32> {
        self.consumer
            .context()
            .owned
            .lock()
            .expect("membership lock")
            .clone()
    }

    /// Leave the group now (the others rebalance at once instead of after
    /// the session timeout).
    pub fn leave(self) {
        self.consumer.unsubscribe();
        // Dropping the consumer closes it, which sends the LeaveGroup.
    }
}
