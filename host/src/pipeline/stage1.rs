//! Stage 1: the runs a worker read. Tumbling and sliding aggregators fold
//! them into partial window states; events for session aggregators and
//! event detectors are routed by key. Everything goes to the owner of its
//! key group as exchange records.

use std::borrow::Cow;

use super::Pipeline;
use super::exchange::{LateMark, Partial, Pos, Record, Round, Routed, owner_of};
use crate::event::EventBatch;
use crate::operator::Op;
use crate::operator::aggregate::PartialStates;
use crate::operator::columns;
use crate::plugin::describe::KeyBy;
use crate::status::PluginCounters;

/// What stage 1 of a worker hands on.
#[derive(Debug, Default)]
pub struct Stage1Out {
    /// Records for each worker (the stage-2 owners), in canonical order.
    pub records: Vec<Vec<crate::pipeline::exchange::Record>>,
    /// Events late for a pre-aggregating plugin.
    pub late: Vec<LateMark>,
}

impl Stage1Out {
    pub fn new(workers: usize) -> Self {
        Stage1Out {
            records: (0..workers).map(|_| Vec::new()).collect(),
            late: Vec::new(),
        }
    }
}

/// The segment a pre-aggregating plugin is filling.
#[derive(Clone, Copy)]
struct Segment {
    start: Pos,
    batch: u32,
    wm: i64,
}

/// An event's key for a plugin keyed by `key_by`.
fn event_key<'b>(batch: &'b EventBatch, i: usize, key_by: &KeyBy) -> Cow<'b, str> {
    match key_by {
        KeyBy::Field(f) => columns::field_text(batch, &batch.events[i], f),
        _ => Cow::Borrowed(""),
    }
}

impl Pipeline {
    /// Stage 1 of a round for the runs `runs` (indices into `round.runs`,
    /// ascending) that this worker read.
    pub fn stage1(&mut self, round: &Round, runs: &[usize], out: &mut Stage1Out) {
        // Each event's watermark, per run: before each event, then after
        // the last.
        let wms: Vec<Vec<i64>> = runs
            .iter()
            .map(|&ri| {
                let run = &round.runs[ri];
                let batch = &round.batches[run.batch as usize];
                let evs = &batch.events[run.events.start as usize..run.events.end as usize];
                let mut v = Vec::with_capacity(evs.len() + 1);
                let after = run.plan.watermarks(evs.iter().map(|e| e.ts), &mut v);
                v.push(after);
                v
            })
            .collect();
        for si in 0..self.slots.len() {
            if matches!(&self.slots[si].op, Op::Aggregate(a) if a.pre_aggregates()) {
                self.pre_aggregate(si, round, runs, &wms, out);
            }
        }
        self.route(round, runs, &wms, out);
    }

    /// A tumbling or sliding aggregator over the runs, segment by segment.
    fn pre_aggregate(
        &mut self,
        si: usize,
        round: &Round,
        runs: &[usize],
        wms: &[Vec<i64>],
        out: &mut Stage1Out,
    ) {
        let mut seg: Option<Segment> = None;
        let mut last_wm = i64::MIN;
        for (&ri, wm_of) in runs.iter().zip(wms) {
            let run = &round.runs[ri];
            let batch = &round.batches[run.batch as usize];
            if let Some(s) = seg.filter(|s| s.batch != run.batch) {
                self.close_segment(si, round, s, last_wm, out);
                seg = None;
            }
            for (k, i) in (run.events.start..run.events.end).enumerate() {
                let wm = wm_of[k];
                let pos = Pos {
                    run: ri as u32,
                    event: i,
                };
                let Op::Aggregate(op) = &mut self.slots[si].op else {
                    return;
                };
                if let Some(s) = seg
                    && op.cuts_before(batch, i as usize, wm, s.wm)
                {
                    self.close_segment(si, round, s, wm, out);
                    seg = None;
                }
                let start = *seg.get_or_insert(Segment {
                    start: pos,
                    batch: run.batch,
                    wm,
                });
                let Op::Aggregate(op) = &mut self.slots[si].op else {
                    return;
                };
                let a = op.assign(batch, i as usize, wm);
                if a.dropped && !self.slots[si].shadow {
                    out.late.push(LateMark {
                        pos,
                        batch: run.batch,
                        index: i,
                        slot: si as u16,
                        wm,
                    });
                }
                if a.cut {
                    self.close_segment(si, round, start, wm_of[k + 1], out);
                    seg = None;
                }
            }
            last_wm = *wm_of.last().expect("the watermark after the run");
        }
        if let Some(s) = seg {
            self.close_segment(si, round, s, last_wm, out);
        }
    }

    /// One `add` call for a segment; its partial states to their owners.
    fn close_segment(
        &mut self,
        si: usize,
        round: &Round,
        seg: Segment,
        wm_after: i64,
        out: &mut Stage1Out,
    ) {
        let batch = &round.batches[seg.batch as usize];
        let workers = self.shard.workers;
        let slot = &mut self.slots[si];
        let skip = slot.skipped();
        let Op::Aggregate(op) = &mut slot.op else {
            return;
        };
        if !op.has_pending() {
            return;
        }
        if skip {
            let events = op.drop_pending();
            self.dead_letter_events(
                si,
                batch,
                &events,
                "degraded",
                "plugin is degraded; input skipped",
            );
            return;
        }
        let mut states = PartialStates::default();
        let res = op.pre_flush(batch, &mut *slot.inst, &mut states);
        PluginCounters::add(&slot.counters.calls, 1);
        match res {
            Ok(n) => {
                PluginCounters::add(&slot.counters.events_in, n as u64);
                self.succeeded(si);
            }
            Err(failure) => {
                self.handle_failures(si, Some(batch), vec![failure]);
                return;
            }
        }
        let mut per: Vec<PartialStates> = (0..workers).map(|_| PartialStates::default()).collect();
        for g in states.groups {
            per[owner_of(&g.0, workers)].groups.push(g);
        }
        for t in states.late_fire {
            per[owner_of(&t.0, workers)].late_fire.push(t);
        }
        for (w, states) in per.into_iter().enumerate() {
            if states.groups.is_empty() && states.late_fire.is_empty() {
                continue;
            }
            out.records[w].push(Record::Partial(Partial {
                pos: seg.start,
                slot: si as u16,
                wm: seg.wm,
                wm_after,
                states,
            }));
        }
    }

    /// Route each event to the owners of its keys for the session
    /// aggregators and event detectors.
    fn route(&mut self, round: &Round, runs: &[usize], wms: &[Vec<i64>], out: &mut Stage1Out) {
        let routed: Vec<(usize, KeyBy)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(si, s)| match &s.op {
                Op::Aggregate(a) if !a.pre_aggregates() => Some((si, a.key_by().clone())),
                Op::Events(d) => Some((si, d.key_by().clone())),
                _ => None,
            })
            .collect();
        if routed.is_empty() {
            return;
        }
        let workers = self.shard.workers;
        let mut masks = vec![0u64; workers];
        for (&ri, wm_of) in runs.iter().zip(wms) {
            let run = &round.runs[ri];
            let batch = &round.batches[run.batch as usize];
            for (k, i) in (run.events.start..run.events.end).enumerate() {
                masks.iter_mut().for_each(|m| *m = 0);
                for (si, key_by) in &routed {
                    let key = event_key(batch, i as usize, key_by);
                    masks[owner_of(&key, workers)] |= 1u64 << si;
                }
                for (w, &mask) in masks.iter().enumerate() {
                    if mask != 0 {
                        out.records[w].push(Record::Event(Routed {
                            pos: Pos {
                                run: ri as u32,
                                event: i,
                            },
                            batch: run.batch,
                            index: i,
                            wm: wm_of[k],
                            wm_after: wm_of[k + 1],
                            slots: mask,
                        }));
                    }
                }
            }
        }
    }
}
