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
//!
//! A member never sends LeaveGroup: a host that stops, like one that
//! dies, is dropped from the group after the session timeout. tansu 0.6.0
//! keeps a member that leaves in the middle of a rebalance as the group's
//! leader (`Inner<Forming>::leave` removes the member, not the leader),
//! so every other member's SyncGroup is answered "rebalance in progress"
//! until a race between two requests happens to reload the group: 23 s
//! to over 4 min in the cross-host tests (`kafka_range.rs`), where the
//! first host, the leader, leaves 6 s after a third joined. A member that
//! only stops heartbeating is removed together with its leadership.
//! Against Apache Kafka the cost is the session timeout on a clean stop.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::kafka::{KafkaConfig, KafkaSetupError};

/// What changed for this member in one poll, in the order Kafka said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Gained(BTreeSet<i32>),
    Lost(BTreeSet<i32>),
}

/// What the member holds and what changed, shared by the consumer's
/// rebalance callbacks, the watchdog and the host's polls.
#[derive(Default)]
struct Held {
    owned: Mutex<BTreeSet<i32>>,
    changes: Mutex<Vec<Change>>,
}

impl Held {
    fn lose(&self, lost: BTreeSet<i32>) {
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

    fn gain(&self, gained: BTreeSet<i32>) {
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

    fn lose_all(&self) {
        let all = self.owned.lock().expect("membership lock").clone();
        self.lose(all);
    }
}

/// The consumer's context: the rebalance callbacks run inside `poll`, on
/// the polling thread.
struct Tracker(Arc<Held>);

fn partitions(tpl: &rdkafka::TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
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
            Rebalance::Revoke(tpl) => self.0.lose(partitions(tpl)),
            Rebalance::Error(e) => tracing::warn!("consumer-group rebalance: {e}"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.0.gain(partitions(tpl));
        }
    }
}

/// A consumer that is never closed, only stopped (see the module).
struct Member(BaseConsumer<Tracker>);

impl Member {
    /// Stop heartbeating, without a LeaveGroup.
    fn stop(self) {
        let client = self.0.client().native_ptr();
        std::mem::forget(self.0);
        // SAFETY: `client` is this consumer's own handle, destroyed once,
        // here, on a thread of ours (never a librdkafka thread). The Rust
        // consumer was forgotten, so nothing uses or destroys the handle
        // after this: its consumer queue reference and its context are
        // leaked, a few hundred bytes per member. `NO_CONSUMER_CLOSE`
        // makes librdkafka stop the group handler without a LeaveGroup and
        // without rebalance callbacks.
        unsafe {
            rdkafka::bindings::rd_kafka_destroy_flags(
                client,
                rdkafka::bindings::RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE,
            );
        }
    }
}

/// The member and its watchdog's view of it.
struct Shared {
    member: Mutex<Option<Member>>,
    last_poll: Mutex<Instant>,
    held: Arc<Held>,
    closing: AtomicBool,
}

/// A member of a consumer group on a topic of units (see the module).
/// Dropping it stops the member without a LeaveGroup (see the module).
pub struct Membership {
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
    cfg: KafkaConfig,
    group: String,
    topic: String,
    name: String,
}

impl Membership {
    /// How long a member may go silent before the group gives its
    /// partitions to the others (`session.timeout.ms`); tansu's rebalance
    /// adds its own delays (BENCHMARKS.md, "Membership").
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

    /// How long a host may go without polling its member before the
    /// watchdog stops the member (then the session timeout runs). It must
    /// cover the longest step of a healthy host: a unit's restore runs
    /// between two polls (a range of 8 key groups with ~4 000 changelog
    /// records: 49–142 ms, BENCHMARKS.md), so a stop means a stuck host,
    /// not a busy one. Kafka's own default for the poll interval is 300 s.
    pub const POLL_LIMIT: Duration = Duration::from_secs(30);

    /// Join `group` on `topic` as `member` (its client id: which host).
    pub fn join(
        cfg: &KafkaConfig,
        group: &str,
        topic: &str,
        member: &str,
    ) -> Result<Self, KafkaSetupError> {
        let held = Arc::new(Held::default());
        let first = Self::member(cfg, group, topic, member, &held)?;
        let shared = Arc::new(Shared {
            member: Mutex::new(Some(first)),
            last_poll: Mutex::new(Instant::now()),
            held,
            closing: AtomicBool::new(false),
        });
        let watched = shared.clone();
        let name = format!("{member} in {group}");
        let watchdog = std::thread::Builder::new()
            .name("rtap-membership".into())
            .spawn(move || Self::watch(&watched, &name))
            .map_err(|e| KafkaSetupError {
                what: format!("the watchdog of member {member} of group {group}"),
                why: e.to_string(),
            })?;
        Ok(Self {
            shared,
            watchdog: Some(watchdog),
            cfg: cfg.clone(),
            group: group.to_string(),
            topic: topic.to_string(),
            name: member.to_string(),
        })
    }

    fn member(
        cfg: &KafkaConfig,
        group: &str,
        topic: &str,
        member: &str,
        held: &Arc<Held>,
    ) -> Result<Member, KafkaSetupError> {
        let session = Self::SESSION_TIMEOUT.as_millis().to_string();
        let consumer: BaseConsumer<Tracker> = cfg
            .client(&[
                ("group.id", group),
                ("client.id", member),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", &session),
                ("heartbeat.interval.ms", "1000"),
                // librdkafka's largest: the watchdog does this job.
                ("max.poll.interval.ms", "86400000"),
                ("enable.auto.commit", "false"),
            ])
            .create_with_context(Tracker(held.clone()))
            .map_err(|e| KafkaSetupError {
                what: format!("the member {member} of group {group}"),
                why: e.to_string(),
            })?;
        let member = Member(consumer);
        if let Err(e) = member.0.subscribe(&[topic]) {
            member.stop();
            return Err(KafkaSetupError {
                what: format!("subscribing group {group} to {topic}"),
                why: e.to_string(),
            });
        }
        Ok(member)
    }

    /// Stop the member once its host has not polled it for
    /// [`Self::POLL_LIMIT`]; what it held is reported lost.
    fn watch(shared: &Shared, name: &str) {
        while !shared.closing.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(250));
            let silent = shared.last_poll.lock().expect("membership lock").elapsed();
            if silent < Self::POLL_LIMIT {
                continue;
            }
            let mut member = shared.member.lock().expect("membership lock");
            if let Some(m) = member.take() {
                tracing::warn!(
                    member = name,
                    silent_ms = silent.as_millis() as u64,
                    "the host did not poll its group membership: the member stops, its partitions go to the others"
                );
                m.stop();
                shared.held.lose_all();
            }
        }
    }

    /// Serve the group for up to `wait` (heartbeats run on librdkafka's
    /// threads; rebalances only here) and return what changed since the
    /// last call. The topic's partitions are never written: every record
    /// found on one is dropped (all that are queued: the group's rebalance
    /// events queue behind them, and served one record per poll they held
    /// a rebalance back for minutes). A member the watchdog stopped joins
    /// again here, as a new member.
    pub fn poll(&self, wait: Duration) -> Vec<Change> {
        *self.shared.last_poll.lock().expect("membership lock") = Instant::now();
        let mut member = self.shared.member.lock().expect("membership lock");
        if member.is_none() {
            match Self::member(
                &self.cfg,
                &self.group,
                &self.topic,
                &self.name,
                &self.shared.held,
            ) {
                Ok(m) => *member = Some(m),
                Err(e) => tracing::warn!("joining the group again: {e}"),
            }
        }
        if let Some(Member(consumer)) = member.as_ref() {
            let mut skipped = 0u64;
            let mut next = consumer.poll(wait);
            while let Some(got) = next {
                match got {
                    Ok(_) => skipped += 1,
                    Err(e) => tracing::debug!(topic = %self.topic, "membership poll: {e}"),
                }
                next = consumer.poll(Duration::ZERO);
            }
            if skipped > 0 {
                tracing::warn!(
                    topic = %self.topic,
                    skipped,
                    "records on a membership topic, which nothing should write: dropped"
                );
            }
        }
        drop(member);
        std::mem::take(&mut *self.shared.held.changes.lock().expect("membership lock"))
    }

    /// The partitions this member holds now.
    pub fn owned(&self) -> BTreeSet<i32> {
        self.shared
            .held
            .owned
            .lock()
            .expect("membership lock")
            .clone()
    }

    /// Stop being a member: the group gives this member's partitions to
    /// the others once the session timeout has passed (see the module for
    /// why no LeaveGroup is sent).
    pub fn leave(self) {
        drop(self);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        if let Some(m) = self.shared.member.lock().expect("membership lock").take() {
            m.stop();
        }
    }
}
