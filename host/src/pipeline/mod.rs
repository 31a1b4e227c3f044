//! The processing DAG: events → aggregators (windows) → metrics → metric
//! detectors → alerts, with event detectors beside the aggregators — run in
//! rounds, in two stages per plugin, so that every core can take part.
//!
//! A **round** ([`exchange::Round`]) is a set of batches: their runs of
//! events, one partition each, in canonical order, each event with the
//! watermark it arrives under (computed from the partitions' progress,
//! exactly as if one thread observed every event in that order).
//!
//! - **Stage 1** ([`Pipeline::stage1`], on the worker that read the runs):
//!   tumbling and sliding aggregators assign the events to their windows and
//!   fold them into partial states (one `add` call per segment); session
//!   aggregators and event detectors get the events routed by key. Late
//!   events are marked here.
//! - **Exchange**: partials and routed events go to the owner of their key's
//!   key group ([`exchange`]).
//! - **Stage 2** ([`Pipeline::stage2`], at the owner): records apply in
//!   canonical order — partials merge into the window states (`merge`),
//!   routed events are assigned and handed over in one call per plugin and
//!   segment — and windows and timers fire as the watermark passes them,
//!   lazily: the scan *cuts* only where a late update must see its window
//!   fired first.
//! - **Stage 3** ([`Pipeline::stage3`]): the round's metrics reach the metric
//!   detectors at the owner of the detector's key, in event-time order, then
//!   their timers fire.
//!
//! One worker runs the same stages with every key group ([`Pipeline::process`]
//! does all three for one batch), so the outputs do not depend on the number
//! of workers.
//!
//! A failed call dead-letters exactly that call's input (with plugin, reason
//! and each event's origin) and leaves the plugin's states as they were; a
//! plugin that fails [`DEGRADE_AFTER`] of its last [`RECENT_CALLS`] calls is
//! degraded: skipped (its input dead-lettered) and probed again after
//! [`PROBE_AFTER`] (see [`Slot`]).

pub mod compare;
pub mod exchange;
mod failures;
mod shadow;
mod slot;
mod stage1;
mod stage2;
mod stage3;
mod swap;
pub mod wire;

pub use compare::{ShadowBoard, ShadowStart};
pub use slot::{DEGRADE_AFTER, Health, PROBE_AFTER, RECENT_CALLS, Slot};
pub use stage1::Stage1Out;
pub use stage3::{Deliveries, MetricRouter};
pub use swap::{StateTransfer, SwapReport};

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::event::EventBatch;
use crate::output::{DeadLetter, LateEvent, Output};
use crate::plugin::io::MetricIn;
use crate::window::Watermark;
use exchange::{LateFound, LateMark, Round};

/// Pipeline-wide event-time settings.
#[derive(Debug, Clone, Copy)]
pub struct TimeConfig {
    /// Bounded out-of-orderness of the watermark.
    pub out_of_orderness: Duration,
    /// Allowed lateness of windows whose plugin does not set one.
    pub allowed_lateness: Duration,
    /// A source partition without events for this long no longer holds the
    /// watermark back.
    pub idle_timeout: Duration,
}

impl TimeConfig {
    /// The event-time settings of the command line.
    pub fn from_config(config: &crate::config::Config) -> Self {
        TimeConfig {
            out_of_orderness: config.out_of_orderness.0,
            allowed_lateness: config.allowed_lateness.0,
            idle_timeout: config.idle_timeout.0,
        }
    }
}

/// Rounds of timer firing at the end of a bounded input (see
/// [`Pipeline::finish`]).
pub const FINISH_ROUNDS: usize = 100;

/// Which key groups a pipeline owns: those of `worker` among `workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub worker: usize,
    pub workers: usize,
}

impl Shard {
    /// Every key group.
    pub const ALL: Shard = Shard {
        worker: 0,
        workers: 1,
    };
}

/// The plugins of one worker: their instances, and the state of the key
/// groups it owns.
pub struct Pipeline {
    pub slots: Vec<Slot>,
    /// The watermark of [`Pipeline::process`] (a run of workers keeps one
    /// for all of them instead).
    pub wm: Watermark,
    pub shard: Shard,
    /// Emitted since the last drain.
    pub outputs: Vec<Output>,
    pub dead: Vec<DeadLetter>,
    pub late: Vec<LateEvent>,
    /// Events stage 2 found late (session windows), for the round's late
    /// events.
    pub late_marks: Vec<LateMark>,
    /// Metrics emitted since the last stage 3, by the aggregator's slot.
    pub metrics: Vec<(usize, MetricIn)>,
    /// What shadow versions emitted since the last drain: compared with the
    /// live outputs, never emitted (`compare`).
    pub shadow_outputs: Vec<Output>,
    /// The inputs shadow versions failed on (for their report only).
    pub shadow_dead: Vec<DeadLetter>,
    /// A version waiting for every worker to be ready to switch.
    staged: Option<swap::Staged>,
}

impl Pipeline {
    pub fn new(slots: Vec<Slot>, time: TimeConfig) -> Self {
        let mut p = Pipeline {
            slots,
            wm: Watermark::new(
                time.out_of_orderness.as_millis() as i64,
                time.idle_timeout.as_millis() as i64,
            ),
            shard: Shard::ALL,
            outputs: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
            late_marks: Vec::new(),
            metrics: Vec::new(),
            shadow_outputs: Vec::new(),
            shadow_dead: Vec::new(),
            staged: None,
        };
        p.sort_slots();
        p
    }

    /// Slots in one order on every worker (the exchange names them by
    /// index): by name, a plugin's shadow right after its live version.
    fn sort_slots(&mut self) {
        self.slots
            .sort_by(|a, b| (&a.name, a.shadow).cmp(&(&b.name, b.shadow)));
    }

    /// This pipeline as worker `worker` of `workers`.
    pub fn with_shard(mut self, worker: usize, workers: usize) -> Self {
        self.shard = Shard { worker, workers };
        self
    }

    /// One batch through all three stages, on this thread, with every key
    /// group (one worker; the benchmark's way in).
    pub fn process(&mut self, batch: Arc<EventBatch>) {
        let round = Round::plan(&mut self.wm, vec![batch], now_ms(), 1);
        self.dead.extend(malformed(&round));
        let mut out = Stage1Out::new(1);
        let runs: Vec<usize> = (0..round.runs.len()).collect();
        self.stage1(&round, &runs, &mut out);
        let records = out.records.pop().expect("one worker");
        self.stage2(&round, records);
        let mut marks = out.late;
        marks.append(&mut self.late_marks);
        let names = self.names();
        self.late.extend(late_events(&round, marks, &names));
        self.stage3_here(round.end_wm);
    }

    /// Stage 3 on this worker alone: its metrics to its metric detectors.
    fn stage3_here(&mut self, wm: i64) {
        let metrics = std::mem::take(&mut self.metrics);
        let routes = self.router().routes(&[metrics], 1);
        let mine = routes.into_iter().next().expect("one worker");
        self.stage3(mine, wm);
    }

    /// The plugins' names, in slot order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// The changes of every live plugin's state (this worker's key groups)
    /// since the last call, in slot order (a shadow's are dropped: its state
    /// is not checkpointed).
    pub fn deltas(&mut self) -> Vec<crate::state::StateDelta> {
        self.slots
            .iter_mut()
            .filter_map(|s| {
                let d = s.state_delta();
                (!s.shadow).then_some(d)
            })
            .collect()
    }

    /// The slots as the exchange's wire names them, in slot order.
    pub fn slot_ids(&self) -> Vec<wire::SlotId> {
        self.slots
            .iter()
            .map(|s| {
                wire::SlotId::new(s.name.clone(), s.shadow, &s.identity.hash)
                    .with_config(s.inst.config())
            })
            .collect()
    }

    /// The live plugins' slots (not their shadows), in slot order.
    pub fn live_slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.shadow)
    }
}

/// Dead letters for a round's malformed records.
pub fn malformed(round: &Round) -> Vec<DeadLetter> {
    let time = now_ms();
    let mut out = Vec::new();
    for batch in &round.batches {
        for (j, m) in batch.malformed.iter().enumerate() {
            out.push(DeadLetter {
                time,
                plugin: None,
                reason: "malformed",
                detail: m.reason.clone(),
                source: batch.origin.source.to_string(),
                partition: batch.partition_of_malformed(j),
                offset: Some(m.offset),
                event: m.raw.clone(),
            });
        }
    }
    out
}

/// A round's late events from the marks of both stages (of every worker):
/// one per event, naming every plugin (`names`, by slot) it is late for.
pub fn late_events(round: &Round, marks: Vec<LateMark>, names: &[Arc<str>]) -> Vec<LateEvent> {
    late_found(marks.iter().map(|m| m.resolve(round)).collect(), names)
}

/// Late events from marks resolved against the rounds they were made in
/// (the runner's, or an owner's decoded from the wire): one per event (by
/// its position in the round), naming every plugin it is late for, in slot
/// order, with the watermark of its first mark.
pub fn late_found(mut found: Vec<LateFound>, names: &[Arc<str>]) -> Vec<LateEvent> {
    found.sort();
    found.dedup();
    let mut out: Vec<LateEvent> = Vec::new();
    let mut last = None;
    for m in found {
        let name = names[m.slot as usize].to_string();
        if last == Some(m.pos) {
            out.last_mut().expect("a late event").plugins.push(name);
            continue;
        }
        last = Some(m.pos);
        out.push(LateEvent {
            plugins: vec![name],
            watermark: m.wm,
            source: m.source.to_string(),
            partition: m.partition,
            offset: m.offset,
            event: m.event,
        });
    }
    out
}

impl Pipeline {
    /// Whether a detector has timers queued.
    pub fn timers_pending(&self) -> bool {
        self.slots.iter().any(|s| s.op.timers_pending())
    }

    /// End of a bounded input, on this worker alone: the watermark goes to
    /// +∞, everything fires.
    pub fn finish(&mut self) {
        // Timers set while the last ones fire are due at once too (a timer
        // that re-arms, a chain of reminders), as in the SDK's test harness
        // and in Flink: fire round after round until none is left. A plugin
        // that re-arms for ever would never let a bounded run end, so the
        // rounds stop at FINISH_ROUNDS with a warning naming it.
        for _ in 0..FINISH_ROUNDS {
            self.advance(i64::MAX);
            self.stage3_here(i64::MAX);
            if !self.timers_pending() {
                return;
            }
        }
        self.warn_timers_left();
    }

    /// The end of a bounded input stopped firing timers: say which plugins
    /// still had some.
    pub fn warn_timers_left(&self) {
        for s in self.slots.iter().filter(|s| s.op.timers_pending()) {
            tracing::warn!(
                plugin = %s.name,
                rounds = FINISH_ROUNDS,
                "end of input: the plugin still sets timers after every round of firing them; its remaining timers do not fire"
            );
        }
    }
}
