//! What crosses between the two stages: key groups, and the records of the
//! exchange.
//!
//! A plugin's key (a page, a session, a user, or `""`) hashes into one of
//! [`KEY_GROUPS`] key groups, a fixed number (Flink's max-parallelism), and
//! each key group has one owner: the worker that keeps its state and runs
//! stage 2 for it. State is kept and moved per key group, never rehashed, so
//! the same key groups can move between workers or hosts.
//!
//! Every record of a round carries its [`Pos`]: the position of its event in
//! the round's canonical order (run by run, event by event). Stage 2 applies
//! the records it receives in that order, whichever worker sent them, so the
//! outputs do not depend on the number of workers or on their timing.

use std::sync::Arc;

use crate::event::EventBatch;
use crate::operator::aggregate::PartialStates;
use crate::window::{RunPlan, Watermark};

pub use crate::state::keygroup::{KEY_GROUPS, key_group};

/// The worker (of `workers`) that owns key group `kg`: contiguous ranges,
/// as Flink assigns key groups to operator instances.
pub fn owner(kg: u32, workers: usize) -> usize {
    crate::state::keygroup::part_of(kg, workers)
}

/// The key groups worker `worker` (of `workers`) owns.
pub fn owned(worker: usize, workers: usize) -> std::ops::Range<u32> {
    crate::state::keygroup::range_of(worker, workers)
}

/// The worker that owns `key`.
pub fn owner_of(key: &str, workers: usize) -> usize {
    owner(key_group(key), workers)
}

/// The fewest events a partition's part of a batch is cut into runs of.
pub const MIN_RUN: usize = 512;

/// A position in a round's canonical order: the run, then the event index
/// in the run's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    pub run: u32,
    pub event: u32,
}

/// One partition's events in one batch of a round, with what their
/// watermarks are computed from.
#[derive(Debug, Clone)]
pub struct Run {
    /// Index into the round's batches.
    pub batch: u32,
    pub partition: i32,
    /// The run's events in the batch.
    pub events: std::ops::Range<u32>,
    pub plan: RunPlan,
}

/// A round: the batches it takes and their runs in canonical order.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub batches: Vec<Arc<EventBatch>>,
    pub runs: Vec<Run>,
    /// The watermark after the round's last event.
    pub end_wm: i64,
}

impl Round {
    /// A round of `batches` (in arrival order) planned against `wm` at
    /// processing time `now_ms`: each run begins its partition (partitions
    /// with records still to read are declared not idle first) and
    /// advances the watermark as its events would.
    ///
    /// With several `workers`, a partition's part of a batch is cut into
    /// runs of about an equal share of the round (at least [`MIN_RUN`]
    /// events), so that one partition still gives every worker a share of
    /// stage 1; the cut changes where segments end, never the outputs.
    pub fn plan(
        wm: &mut Watermark,
        batches: Vec<Arc<EventBatch>>,
        now_ms: i64,
        workers: usize,
    ) -> Round {
        let total: usize = batches.iter().map(|b| b.events.len()).sum();
        let piece = if workers > 1 {
            total.div_ceil(workers).max(MIN_RUN)
        } else {
            usize::MAX
        };
        let mut runs = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            wm.declare(&b.backlog, now_ms);
            for (partition, range) in b.runs() {
                let mut start = range.start;
                loop {
                    let end = range.end.min(start.saturating_add(piece));
                    let max = b.events[start..end].iter().map(|e| e.ts).max();
                    let plan = wm.run(partition, now_ms, max);
                    runs.push(Run {
                        batch: bi as u32,
                        partition,
                        events: start as u32..end as u32,
                        plan,
                    });
                    start = end;
                    if start >= range.end {
                        break;
                    }
                }
            }
        }
        Round {
            batches,
            runs,
            end_wm: wm.current(),
        }
    }

    /// The number of events in the round.
    pub fn events(&self) -> usize {
        self.batches.iter().map(|b| b.events.len()).sum()
    }
}

/// A record of the exchange, for one stage-2 owner.
#[derive(Debug)]
pub enum Record {
    /// A pre-aggregating plugin's partial window states for keys the
    /// receiver owns.
    Partial(Partial),
    /// An event, for the receiver's plugins in `slots` (a bit per slot):
    /// session aggregators and event detectors keyed to it.
    Event(Routed),
}

impl Record {
    pub fn pos(&self) -> Pos {
        match self {
            Record::Partial(p) => p.pos,
            Record::Event(e) => e.pos,
        }
    }
}

#[derive(Debug)]
pub struct Partial {
    /// The segment's first event.
    pub pos: Pos,
    pub slot: u16,
    /// The watermark the segment's first event arrived under: stage 2 fires
    /// what is due by it first.
    pub wm: i64,
    /// The watermark after the segment.
    pub wm_after: i64,
    pub states: PartialStates,
}

#[derive(Debug, Clone, Copy)]
pub struct Routed {
    pub pos: Pos,
    pub batch: u32,
    /// The event's index in its batch: `pos.event` in the round it was
    /// read in; another in a round decoded from the wire
    /// (`super::wire::Inbox`), whose batches hold only the owner's events.
    pub index: u32,
    /// The watermark the event arrived under, and the one after it.
    pub wm: i64,
    pub wm_after: i64,
    pub slots: u64,
}

/// An event that is late for some plugin: where it is, and for which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LateMark {
    pub pos: Pos,
    pub batch: u32,
    /// The event's index in the batch of the round the mark was made in
    /// (an owner's decoded round: see [`Routed::index`]).
    pub index: u32,
    pub slot: u16,
    pub wm: i64,
}

/// A late mark with its event, resolved against the round it was made in:
/// what an owner that decoded the event from the wire reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LateFound {
    pub pos: Pos,
    pub slot: u16,
    pub wm: i64,
    pub source: Arc<str>,
    pub partition: i32,
    pub offset: u64,
    pub event: String,
}

impl LateMark {
    /// This mark with its event from `round`, the round it was made in.
    pub fn resolve(&self, round: &Round) -> LateFound {
        let batch = &round.batches[self.batch as usize];
        let i = self.index as usize;
        let ev = &batch.events[i];
        LateFound {
            pos: self.pos,
            slot: self.slot,
            wm: self.wm,
            source: batch.origin.source.clone(),
            partition: batch.partition_of_event(i),
            offset: ev.offset,
            event: batch.raw(ev).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_owns_key_groups() {
        for w in 1..=16 {
            let owners: std::collections::BTreeSet<usize> =
                (0..KEY_GROUPS).map(|kg| owner(kg, w)).collect();
            assert_eq!(owners.len(), w, "every worker owns key groups");
            for i in 0..w {
                assert!(owned(i, w).all(|kg| owner(kg, w) == i));
            }
        }
    }
}
