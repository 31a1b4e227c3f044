//! The key-group ranges one host runs, decided by Kafka's group protocol
//! (issue #28, step 5 of `docs/kafka-exactly-once-plan.md`): a
//! [`Ranges`] is a member of the ranges' consumer group
//! (`crate::exchange::Membership`, one empty partition per range); for
//! each range it is given, it opens the range's [`RangeProducer`] (which
//! fences whoever had it and restores its state from the changelog) and an
//! exchange [`Owner`] reading on from the restored position, hands what
//! the gates release to its [`Stage2`], and commits the range's outputs,
//! changes and position in the range's transaction. A range it loses is
//! committed one last time, if it still can, and dropped. The pipeline
//! does not run on it yet: `host/tests/kafka_range.rs` moves ranges
//! between hosts that join, stall and leave.
//!
//! Ownership is not what makes a commit safe; fencing is. A host that
//! stalls keeps believing it owns its ranges until it polls again, but a
//! host that took one over has opened the range's transactional id, so the
//! stalled host's next commit fails and that range is dropped here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;

use crate::checkpoint::range::{RangeError, RangeProducer, RangeState, RangeTopics};
use crate::exchange::{Change, Membership, Owner, Released};
use crate::kafka::{KafkaConfig, KafkaSetupError};

/// How long a range whose incarnation failed waits before it is opened
/// again (if the group still gives it to this host).
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// What runs on a range's records: stage 2.
pub trait Stage2 {
    /// Range `range` is this host's now, restored to `state`.
    fn gained(&mut self, range: u32, state: &RangeState);
    /// Apply `released` (a range's records, in each task's order),
    /// writing outputs and state changes through `out`.
    fn apply(
        &mut self,
        range: u32,
        released: &[Released],
        out: &mut RangeProducer,
    ) -> Result<(), RangeError>;
    /// The meta to commit range `range` with.
    fn meta(&self, range: u32) -> Vec<u8>;
    /// Range `range` is no longer this host's: forget its state.
    fn lost(&mut self, range: u32);
}

/// A range this host runs: an incarnation and its exchange reader.
struct Running {
    producer: RangeProducer,
    owner: Owner,
    /// Records applied since the last commit.
    applied: usize,
    last_commit: Instant,
}

/// What one [`Ranges::step`] did.
#[derive(Debug, Default)]
pub struct Step {
    /// Records released and applied.
    pub applied: usize,
    /// Ranges gained and lost in it.
    pub gained: Vec<u32>,
    pub lost: Vec<u32>,
    /// Commits made: range, id.
    pub committed: Vec<(u32, u64)>,
    /// Ranges whose incarnation failed (fenced by another host, the
    /// broker away), with why; each is opened again after
    /// [`REOPEN_AFTER`] while the group gives it to this host.
    pub failed: Vec<(u32, String)>,
}

/// The ranges one host runs (see the module).
pub struct Ranges<S: Stage2> {
    client: ClientConfig,
    topics: RangeTopics,
    membership: Membership,
    running: BTreeMap<u32, Running>,
    /// Ranges this host was given but whose incarnation failed: when to
    /// try again.
    retry: BTreeMap<u32, Instant>,
    /// How often a range with applied records commits.
    commit_every: Duration,
    pub stage2: S,
}

impl<S: Stage2> Ranges<S> {
    /// Join the ranges' group (`<ranges_group>` on `ranges_topic`) as
    /// `member`; nothing runs until [`Self::step`] is called.
    pub fn join(
        cfg: &KafkaConfig,
        topics: RangeTopics,
        ranges_group: &str,
        ranges_topic: &str,
        member: &str,
        commit_every: Duration,
        stage2: S,
    ) -> Result<Self, KafkaSetupError> {
        Ok(Ranges {
            client: cfg.client(&[]),
            membership: Membership::join(cfg, ranges_group, ranges_topic, member)?,
            topics,
            running: BTreeMap::new(),
            retry: BTreeMap::new(),
            commit_every,
            stage2,
        })
    }

    /// The ranges running here.
    pub fn running(&self) -> Vec<u32> {
        self.running.keys().copied().collect()
    }

    /// Serve the group for up to `wait`, take up and let go of ranges as
    /// it says, read and apply each running range's records, and commit
    /// the ranges that are due.
    pub fn step(&mut self, wait: Duration) -> Step {
        let mut step = Step::default();
        for change in self.membership.poll(wait) {
            match change {
                Change::Gained(g) => {
                    for r in g {
                        let r = r as u32;
                        step.gained.push(r);
                        self.retry.insert(r, Instant::now());
                    }
                }
                Change::Lost(l) => {
                    for r in l {
                        let r = r as u32;
                        step.lost.push(r);
                        self.retry.remove(&r);
                        if self.running.contains_key(&r) {
                            // A last commit while the range is still ours
                            // (a cooperative rebalance revokes before it
                            // assigns); a fenced one fails harmlessly.
                            if let Err(e) = self.commit(r, &mut step) {
                                step.failed.push((r, e.to_string()));
                            }
                            self.drop_range(r);
                        }
                    }
                }
            }
        }
        let owned = self.membership.owned();
        let due: Vec<u32> = self
            .retry
            .iter()
            .filter(|(r, at)| **at <= Instant::now() && owned.contains(&(**r as i32)))
            .map(|(r, _)| *r)
            .collect();
        for r in due {
            self.retry.remove(&r);
            if let Err(e) = self.open(r) {
                step.failed.push((r, e.to_string()));
                self.retry.insert(r, Instant::now() + REOPEN_AFTER);
            }
        }
        let ranges: Vec<u32> = self.running.keys().copied().collect();
        for r in ranges {
            let result = self.pump(r, &mut step).and_then(|()| {
                let run = &self.running[&r];
                if run.applied > 0 && run.last_commit.elapsed() >= self.commit_every
                    || run.last_commit.elapsed() >= self.commit_every * 10
                {
                    self.commit(r, &mut step)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                tracing::warn!(range = r, "key-group range: {e}; opened again later");
                step.failed.push((r, e));
                self.drop_range(r);
                self.retry.insert(r, Instant::now() + REOPEN_AFTER);
            }
        }
        step
    }

    /// Take range `r` up: fence, restore, read on from its position.
    fn open(&mut self, r: u32) -> Result<(), String> {
        let (producer, state) = RangeProducer::open(
            &self.client,
            &self.topics,
            r,
            crate::checkpoint::changelog::now_us(),
        )
        .map_err(|e| e.to_string())?;
        let owner = Owner::open(
            &self.client,
            &self.topics.exchange,
            r,
            Some(state.exchange.clone()),
        )
        .map_err(|e| e.to_string())?;
        tracing::info!(
            range = r,
            marker = state.marker,
            records = state.records,
            took_ms = state.took.as_millis() as u64,
            "key-group range taken up"
        );
        self.stage2.gained(r, &state);
        self.running.insert(
            r,
            Running {
                producer,
                owner,
                applied: 0,
                last_commit: Instant::now(),
            },
        );
        Ok(())
    }

    /// Read range `r`'s exchange partitions briefly and apply what the
    /// gates release.
    fn pump(&mut self, r: u32, step: &mut Step) -> Result<(), String> {
        let run = self.running.get_mut(&r).expect("a running range");
        let mut released = Vec::new();
        run.owner
            .pump(Duration::from_millis(5), true, &mut released)
            .map_err(|e| e.to_string())?;
        if released.is_empty() {
            return Ok(());
        }
        self.stage2
            .apply(r, &released, &mut run.producer)
            .map_err(|e| e.to_string())?;
        run.applied += released.len();
        step.applied += released.len();
        Ok(())
    }

    fn commit(&mut self, r: u32, step: &mut Step) -> Result<(), String> {
        let meta = self.stage2.meta(r);
        let run = self.running.get_mut(&r).expect("a running range");
        let id = run
            .producer
            .commit(&run.owner.state(), &meta)
            .map_err(|e| e.to_string())?;
        run.applied = 0;
        run.last_commit = Instant::now();
        step.committed.push((r, id));
        Ok(())
    }

    fn drop_range(&mut self, r: u32) {
        if self.running.remove(&r).is_some() {
            self.stage2.lost(r);
        }
    }

    /// Commit every running range and leave the group (the others take
    /// its ranges over after the session timeout: `Membership`).
    pub fn leave(mut self) -> Step {
        let mut step = Step::default();
        for r in self.running() {
            if let Err(e) = self.commit(r, &mut step) {
                step.failed.push((r, e));
            }
        }
        self.membership.leave();
        step
    }
}
