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

use super::units::{Step, Unit, Units};
use crate::checkpoint::range::{RangeError, RangeProducer, RangeState, RangeTopics};
use crate::exchange::{Membership, Owner, Progress, Released};
use crate::kafka::{KafkaConfig, KafkaSetupError};

/// What runs on a range's records: stage 2.
pub trait Stage2 {
    /// Range `range` is this host's now, restored to `state` (an error:
    /// the range is not taken up, and is opened again later).
    fn gained(&mut self, range: u32, state: &RangeState) -> Result<(), String>;
    /// Apply `released` (a range's records, seals included, in each
    /// task's order; perhaps none), then fire what the tasks' `progress`
    /// (each one's last committed seal here, after `released`; none while
    /// a task sealed nothing) makes due, writing outputs through `out`.
    /// Returns what it wrote or applied (a range that did anything commits
    /// on the pace).
    fn apply(
        &mut self,
        range: u32,
        released: &[Released],
        progress: &[Option<Progress>],
        out: &mut RangeProducer,
    ) -> Result<usize, RangeError>;
    /// Write range `range`'s state changes since its last commit through
    /// `out`; the meta to commit it with.
    fn commit(&mut self, range: u32, out: &mut RangeProducer) -> Result<Vec<u8>, RangeError>;
    /// Range `range` is no longer this host's: forget its state.
    fn lost(&mut self, range: u32);
}

/// How often a range reads its tasks' committed markers (one broker
/// round trip for every task), while records wait for them. Read at every
/// step (a few ms apart), they cost the broker more CPU than the records
/// (BENCHMARKS.md, "Many hosts").
const MARKERS_EVERY: Duration = Duration::from_millis(50);

/// A running range's exchange reader, for the log.
#[derive(Debug)]
pub struct RangeProgress {
    pub range: u32,
    pub seals: Vec<Option<Progress>>,
    pub waiting: usize,
}

/// A range this host runs: an incarnation and its exchange reader.
struct Running {
    producer: RangeProducer,
    owner: Owner,
    /// When it last read the tasks' markers.
    markers_read: Instant,
}

/// Ranges as the units of `super::units`.
struct RangeUnits<S: Stage2> {
    client: ClientConfig,
    topics: RangeTopics,
    running: BTreeMap<u32, Running>,
    stage2: S,
}

/// The ranges one host runs (see the module).
pub struct Ranges<S: Stage2> {
    units: Units<RangeUnits<S>>,
}

impl<S: Stage2> Ranges<S> {
    /// Join the ranges' group (`<ranges_group>` on `ranges_topic`) as
    /// `member`; nothing runs until [`Self::step`] is called. A range
    /// with applied records commits every `commit_every`.
    pub fn join(
        cfg: &KafkaConfig,
        topics: RangeTopics,
        ranges_group: &str,
        ranges_topic: &str,
        member: &str,
        commit_every: Duration,
        stage2: S,
    ) -> Result<Self, KafkaSetupError> {
        let membership = Membership::join(cfg, ranges_group, ranges_topic, member)?;
        let unit = RangeUnits {
            client: cfg.client(&[]),
            topics,
            running: BTreeMap::new(),
            stage2,
        };
        Ok(Ranges {
            units: Units::new(membership, commit_every, unit),
        })
    }

    /// The ranges running here.
    pub fn running(&self) -> Vec<u32> {
        self.units.running()
    }

    /// Serve the group for up to `wait`, take up and let go of ranges as
    /// it says, read and apply each running range's records, and commit
    /// the ranges that are due (`Step::records`: records applied).
    pub fn step(&mut self, wait: Duration) -> Step {
        self.units.step(wait)
    }

    /// Each running range's exchange reader: its tasks' last committed
    /// seals there, and the records it read that wait for their
    /// transaction's outcome.
    pub fn progress(&self) -> Vec<RangeProgress> {
        self.units
            .unit
            .running
            .iter()
            .map(|(r, run)| RangeProgress {
                range: *r,
                seals: run.owner.progress(),
                waiting: run.owner.waiting(),
            })
            .collect()
    }

    /// This host's stage 2.
    pub fn stage2(&self) -> &S {
        &self.units.unit.stage2
    }

    /// Commit every running range and leave the group (the others take
    /// its ranges over after the session timeout: `Membership`).
    pub fn leave(self) -> Step {
        self.units.leave()
    }
}

impl<S: Stage2> Unit for RangeUnits<S> {
    const WHAT: &'static str = "key-group range";

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
        self.stage2.gained(r, &state)?;
        self.running.insert(
            r,
            Running {
                producer,
                owner,
                markers_read: Instant::now() - MARKERS_EVERY,
            },
        );
        Ok(())
    }

    /// Read range `r`'s exchange partitions briefly and apply what the
    /// gates release.
    fn work(&mut self, r: u32) -> Result<usize, String> {
        let run = self.running.get_mut(&r).expect("a running range");
        let mut released = Vec::new();
        let markers = run.owner.waiting() > 0 && run.markers_read.elapsed() >= MARKERS_EVERY;
        if markers {
            run.markers_read = Instant::now();
        }
        run.owner
            .pump(Duration::from_millis(5), markers, &mut released)
            .map_err(|e| e.to_string())?;
        self.stage2
            .apply(r, &released, &run.owner.progress(), &mut run.producer)
            .map_err(|e| e.to_string())
    }

    fn commit(&mut self, r: u32) -> Result<u64, String> {
        let run = self.running.get_mut(&r).expect("a running range");
        let meta = self
            .stage2
            .commit(r, &mut run.producer)
            .map_err(|e| e.to_string())?;
        run.producer
            .commit(&run.owner.state(), &meta)
            .map_err(|e| e.to_string())
    }

    fn close(&mut self, r: u32) {
        if self.running.remove(&r).is_some() {
            self.stage2.lost(r);
        }
    }
}
