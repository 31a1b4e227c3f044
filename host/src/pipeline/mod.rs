//! The processing DAG: events → aggregators (windows) → metrics → metric
//! detectors → alerts, with event detectors beside the aggregators.
//!
//! [`Pipeline::process`] scans a batch event by event: it advances the
//! watermark, assigns each event to its windows (classifying it against the
//! watermark it arrived under) and queues it for the event detectors. Wherever
//! the watermark passes a trigger (a window end, a purge time, a timer) or a
//! late update must fire, the scan *cuts*: the segment so far is handed to
//! every plugin in one call each, then the triggers fire in event-time order.
//! So outputs depend only on the input order, never on batch sizes or timing.
//!
//! A failed call dead-letters exactly that call's input (with plugin, reason
//! and each event's origin) and leaves the plugin's states as they were; a
//! plugin that fails [`DEGRADE_AFTER`] of its last [`RECENT_CALLS`] calls is degraded: skipped (its
//! input dead-lettered) and probed again after [`PROBE_AFTER`].

pub mod columns;
pub mod detector;
pub mod output;
pub mod status;
mod swap;

pub use swap::{StateTransfer, SwapReport};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::EventBatch;
use crate::plugin::describe::{Input, Kind};
use crate::plugin::io::MetricIn;
use crate::plugin::{CallError, Identity, PluginCalls};
use crate::state::Changes;
use crate::window::Watermark;
use crate::window::aggregate::{AggregateOp, Fired, OpFailure, WindowState};
use detector::{DetectorOp, DetectorState, KeyedAlert};
use output::{AlertOut, DeadLetter, LateEvent, MetricOut, Output, PluginEvent, now_ms};
use status::{PluginCounters, PluginStatus};

/// Failed calls among the last [`RECENT_CALLS`] before a plugin is degraded.
pub const DEGRADE_AFTER: u32 = 3;
/// How many recent calls the failure count looks at.
pub const RECENT_CALLS: u32 = 10;
/// How long a degraded plugin is skipped before it is tried again.
pub const PROBE_AFTER: Duration = Duration::from_secs(30);

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

pub enum Op {
    Aggregate(AggregateOp),
    Events(DetectorOp),
    Metrics(DetectorOp),
}

/// Rounds of timer firing at the end of a bounded input (see
/// [`Pipeline::finish`]).
const FINISH_ROUNDS: usize = 100;

/// One plugin in the pipeline: its live instance and its operator state.
pub struct Slot {
    pub name: Arc<str>,
    pub identity: Identity,
    pub inst: Box<dyn PluginCalls>,
    pub counters: Arc<PluginCounters>,
    pub op: Op,
    /// Outcomes of the last calls, one bit each (1 = failed).
    recent: u32,
    degraded_until: Option<Instant>,
}

impl Slot {
    /// Whether a detector has timers queued (after a round of firing up to
    /// the end of time: ones set during it).
    fn timers_pending(&self) -> bool {
        match &self.op {
            Op::Events(op) | Op::Metrics(op) => op.next_timer().is_some(),
            Op::Aggregate(_) => false,
        }
    }

    pub fn new(
        identity: Identity,
        inst: Box<dyn PluginCalls>,
        counters: Arc<PluginCounters>,
        time: &TimeConfig,
    ) -> Self {
        let d = &identity.description;
        let lateness = d
            .allowed_lateness
            .unwrap_or(time.allowed_lateness)
            .as_millis() as i64;
        let op = match (d.kind, d.input) {
            (Kind::Aggregator, _) => Op::Aggregate(AggregateOp::new(
                d.window,
                lateness,
                d.key_by.clone(),
                d.fields.clone(),
            )),
            (Kind::Detector, Input::Events) => {
                Op::Events(DetectorOp::new(d.key_by.clone(), d.fields.clone()))
            }
            (Kind::Detector, Input::Metrics) => {
                Op::Metrics(DetectorOp::new(d.key_by.clone(), Vec::new()))
            }
        };
        let mut slot = Slot {
            name: Arc::from(d.name.as_str()),
            identity,
            inst,
            counters,
            op,
            recent: 0,
            degraded_until: None,
        };
        // Whatever the store holds under this name is not this state.
        slot.set_rewrite();
        slot
    }

    fn set_rewrite(&mut self) {
        match &mut self.op {
            Op::Aggregate(a) => a.state.set_rewrite(),
            Op::Events(d) | Op::Metrics(d) => d.state.set_rewrite(),
        }
    }

    /// The state changes since the last commit, for the state store.
    pub fn state_delta(&mut self) -> StateDelta {
        let (rewrite, meta) = match &mut self.op {
            Op::Aggregate(a) => (a.state.take_rewrite(), a.state.meta()),
            Op::Events(d) | Op::Metrics(d) => (d.state.take_rewrite(), Vec::new()),
        };
        let mut changes = Changes::default();
        match (&mut self.op, rewrite) {
            (Op::Aggregate(a), true) => a.state.entries(&mut changes),
            (Op::Aggregate(a), false) => a.state.take_dirty(&mut changes),
            (Op::Events(d) | Op::Metrics(d), true) => d.state.entries(&mut changes),
            (Op::Events(d) | Op::Metrics(d), false) => d.state.take_dirty(&mut changes),
        }
        StateDelta {
            rewrite,
            meta,
            changes,
        }
    }

    /// Rebuild the operator state from the state store.
    pub fn restore_entries<'a>(
        &mut self,
        meta: &[u8],
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        let name = self.name.clone();
        let err = |e: String| format!("plugin `{name}`: {e}");
        match &mut self.op {
            Op::Aggregate(a) => a.restore_entries(meta, entries).map_err(err)?,
            Op::Events(d) | Op::Metrics(d) => {
                d.state = DetectorState::from_entries(entries).map_err(err)?;
            }
        }
        Ok(())
    }

    fn skipped(&self) -> bool {
        self.degraded_until.is_some_and(|t| Instant::now() < t)
    }

    /// Up to `n` states, for a migration dry-run.
    pub fn sample_states(&self, n: usize) -> Vec<Vec<u8>> {
        match &self.op {
            Op::Aggregate(a) => a.state.sample(n),
            Op::Events(d) | Op::Metrics(d) => d.state.sample(n),
        }
    }

    /// Move the operator state out (leaving it empty).
    pub fn take_state(&mut self) -> OpState {
        match &mut self.op {
            Op::Aggregate(a) => OpState::Windows(std::mem::take(&mut a.state)),
            Op::Events(d) | Op::Metrics(d) => OpState::Keyed(std::mem::take(&mut d.state)),
        }
    }

    pub fn restore(&mut self, s: OpState) -> Result<(), String> {
        match (&mut self.op, s) {
            (Op::Aggregate(a), OpState::Windows(w)) => a.state = w,
            (Op::Events(d) | Op::Metrics(d), OpState::Keyed(k)) => d.state = k,
            _ => {
                return Err(format!(
                    "plugin `{}`: checkpointed state is of another kind",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// One plugin's state changes since the last commit.
pub struct StateDelta {
    /// Replace everything stored for the plugin (`changes` then holds
    /// every key).
    pub rewrite: bool,
    /// The operator-wide part of the state.
    pub meta: Vec<u8>,
    /// Changed keys: the new entry, or `None` when the key is gone.
    pub changes: Changes,
}

/// A plugin's operator state, moved out of its slot (swaps, migrations).
#[derive(Debug)]
pub enum OpState {
    Windows(WindowState),
    Keyed(DetectorState),
}

impl OpState {
    /// Rewrite every state with `f`; all or nothing.
    pub fn try_map<E>(&mut self, f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>) -> Result<usize, E> {
        match self {
            OpState::Windows(w) => w.try_map(f),
            OpState::Keyed(k) => k.try_map(f),
        }
    }
}

pub struct Pipeline {
    pub slots: Vec<Slot>,
    pub wm: Watermark,
    /// Emitted since the last drain.
    pub outputs: Vec<Output>,
    pub dead: Vec<DeadLetter>,
    pub late: Vec<LateEvent>,
}

impl Pipeline {
    pub fn new(mut slots: Vec<Slot>, time: TimeConfig) -> Self {
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Pipeline {
            slots,
            wm: Watermark::new(
                time.out_of_orderness.as_millis() as i64,
                time.idle_timeout.as_millis() as i64,
            ),
            outputs: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
        }
    }

    /// Process one batch in arrival order.
    pub fn process(&mut self, batch: &EventBatch) {
        for (j, m) in batch.malformed.iter().enumerate() {
            self.dead.push(DeadLetter {
                time: now_ms(),
                plugin: None,
                reason: "malformed",
                detail: m.reason.clone(),
                source: batch.origin.source.to_string(),
                partition: batch.partition_of_malformed(j),
                offset: Some(m.offset),
                event: m.raw.clone(),
            });
        }
        // A batch may hold runs of several partitions (Kafka): each run
        // updates its own partition's event time, exactly as a batch of its
        // own would; only the plugin calls are shared.
        let now = now_ms();
        // Partitions with records still to read are not idle.
        self.wm.declare(&batch.backlog, now);
        let runs = batch.runs();
        let mut run = 0;
        let mut partition = runs[0].0;
        let mut others = self.wm.begin(partition, now);
        let any_lateness = self
            .slots
            .iter()
            .any(|s| matches!(&s.op, Op::Aggregate(a) if a.checks_late_updates()));
        let mut late_plugins: Vec<String> = Vec::new();
        for i in 0..batch.events.len() {
            while !runs[run].1.contains(&i) {
                run += 1;
                partition = runs[run].0;
                others = self.wm.begin(partition, now);
            }
            let ts = batch.events[i].ts;
            let wm = self.wm.current();
            // A late update must see its window fired first (firing is lazy).
            if any_lateness
                && self.slots.iter_mut().any(|s| match &mut s.op {
                    Op::Aggregate(a) => a.would_be_late_update(batch, i, wm),
                    _ => false,
                })
            {
                self.flush(batch, wm);
                self.advance(wm);
            }
            let mut cut = false;
            late_plugins.clear();
            for si in 0..self.slots.len() {
                let slot = &mut self.slots[si];
                match &mut slot.op {
                    Op::Aggregate(op) => {
                        op.prefetch_events(batch, i);
                        let a = op.assign(batch, i, wm);
                        cut |= a.cut;
                        if a.dropped {
                            late_plugins.push(slot.name.to_string());
                        }
                    }
                    Op::Events(op) => {
                        // A key's due timers fire before its next event.
                        if op.key_timer_due(batch, i, wm) {
                            self.flush_slot(si, batch, wm);
                            self.fire_key_timers(si, batch, i, wm);
                        }
                        if let Op::Events(op) = &mut self.slots[si].op {
                            op.push(i);
                        }
                    }
                    Op::Metrics(_) => {}
                }
            }
            if !late_plugins.is_empty() {
                let ev = &batch.events[i];
                self.late.push(LateEvent {
                    plugins: late_plugins.clone(),
                    watermark: wm,
                    source: batch.origin.source.to_string(),
                    partition,
                    offset: ev.offset,
                    event: batch.raw(ev).to_string(),
                });
            }
            self.wm.observe(partition, ts, others);
            if cut {
                self.flush(batch, self.wm.current());
            }
        }
        // Runs after the last event (no events, only malformed records)
        // still mark their partitions active.
        for &(p, _) in &runs[run + 1..] {
            self.wm.begin(p, now);
        }
        let wm = self.wm.current();
        self.flush(batch, wm);
        self.advance(wm);
    }

    /// End of a bounded input: the watermark goes to +∞, everything fires.
    pub fn finish(&mut self) {
        // Timers set while the last ones fire are due at once too (a timer
        // that re-arms, a chain of reminders), as in the SDK's test harness
        // and in Flink: fire round after round until none is left. A plugin
        // that re-arms for ever would never let a bounded run end, so the
        // rounds stop at FINISH_ROUNDS with a warning naming it.
        for _ in 0..FINISH_ROUNDS {
            self.advance(i64::MAX);
            if !self.slots.iter().any(|s| s.timers_pending()) {
                return;
            }
        }
        for s in self.slots.iter().filter(|s| s.timers_pending()) {
            tracing::warn!(
                plugin = %s.name,
                rounds = FINISH_ROUNDS,
                "end of input: the plugin still sets timers after every round of firing them; its remaining timers do not fire"
            );
        }
    }

    /// Hand the current segment to every plugin.
    fn flush(&mut self, batch: &EventBatch, wm: i64) {
        for si in 0..self.slots.len() {
            self.flush_slot(si, batch, wm);
        }
    }

    /// Hand one plugin its pending segment.
    fn flush_slot(&mut self, si: usize, batch: &EventBatch, wm: i64) {
        let slot = &mut self.slots[si];
        let skip = slot.skipped();
        match &mut slot.op {
            Op::Aggregate(op) if op.has_pending() => {
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
                let mut fired = Vec::new();
                let mut failures = Vec::new();
                let n = op.flush(batch, &mut *slot.inst, wm, &mut fired, &mut failures);
                PluginCounters::add(&slot.counters.calls, 1);
                PluginCounters::add(&slot.counters.events_in, n as u64);
                self.handle_failures(si, Some(batch), failures);
                self.emit_metrics(fired.into_iter().map(|f| (si, f)).collect());
            }
            Op::Events(op) if op.has_pending() => {
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
                let mut alerts = Vec::new();
                let n = op.pending_len();
                let res = op.flush(batch, &mut *slot.inst, wm, &mut alerts);
                PluginCounters::add(&slot.counters.calls, 1);
                self.emit_alerts(alerts.into_iter().map(|a| (si, a)).collect());
                match res {
                    Ok(()) => {
                        PluginCounters::add(&self.slots[si].counters.events_in, n as u64);
                        self.succeeded(si);
                    }
                    Err((error, events)) => self.call_failed(si, batch, &error, &events),
                }
            }
            _ => {}
        }
    }

    fn fire_key_timers(&mut self, si: usize, batch: &EventBatch, i: usize, wm: i64) {
        let slot = &mut self.slots[si];
        let Op::Events(op) = &mut slot.op else { return };
        let mut alerts = Vec::new();
        let res = op.fire_key_timers(batch, i, wm, &mut *slot.inst, &mut alerts);
        self.emit_alerts(alerts.into_iter().map(|a| (si, a)).collect());
        self.timers_done(si, res);
    }

    fn timers_done(&mut self, si: usize, res: detector::TimerResult) {
        if let Err((e, lost)) = res {
            self.record_failure(si, &e);
            let lost = lost
                .iter()
                .map(|(at, key)| serde_json::json!({"timer": at, "key": key.as_str()}).to_string())
                .collect();
            self.dead_letter_other(si, e.reason(), &format!("timers lost: {e}"), lost);
        }
    }

    /// Fire every window and timer due at watermark `wm`: each aggregator
    /// finishes its due windows in one call; metrics and timers reach the
    /// metric detectors in event-time order.
    fn advance(&mut self, wm: i64) {
        let mut fired: Vec<(usize, Fired)> = Vec::new();
        for si in 0..self.slots.len() {
            let slot = &mut self.slots[si];
            if let Op::Aggregate(op) = &mut slot.op {
                if op.next_trigger().is_none_or(|t| t > wm) {
                    op.fired_through(wm);
                    continue;
                }
                let mut f = Vec::new();
                let mut failures = Vec::new();
                op.fire_until(wm, &mut *slot.inst, &mut f, &mut failures);
                fired.extend(f.into_iter().map(|x| (si, x)));
                self.handle_failures(si, None, failures);
            }
        }
        fired.sort_by(|(sa, a), (sb, b)| {
            (a.end, *sa, a.start, &a.key).cmp(&(b.end, *sb, b.start, &b.key))
        });
        self.emit_metrics(fired);
        for si in 0..self.slots.len() {
            let slot = &mut self.slots[si];
            if let Op::Events(op) | Op::Metrics(op) = &mut slot.op {
                if op.next_timer().is_none_or(|t| t > wm) {
                    continue;
                }
                let mut alerts = Vec::new();
                let res = op.fire_timers(wm, &mut *slot.inst, &mut alerts);
                self.emit_alerts(alerts.into_iter().map(|a| (si, a)).collect());
                self.timers_done(si, res);
            }
        }
    }

    /// Emit fired metrics and deliver them to the metric detectors.
    fn emit_metrics(&mut self, fired: Vec<(usize, Fired)>) {
        if fired.is_empty() {
            return;
        }
        let mut delivered: Vec<MetricIn> = Vec::with_capacity(fired.len());
        for (si, f) in fired {
            let slot = &self.slots[si];
            PluginCounters::add(&slot.counters.outputs, 1);
            delivered.push(MetricIn {
                plugin: slot.name.to_string(),
                name: f.metric.name.clone(),
                key: f.key.clone(),
                start: f.start,
                end: f.end,
                value: f.metric.value.clone(),
            });
            self.outputs.push(Output::Metric(MetricOut {
                kind: "metric",
                plugin: slot.name.clone(),
                name: f.metric.name,
                key: f.key,
                window_start: f.start,
                window_end: f.end,
                value: f.metric.value.into(),
            }));
        }
        let mut alerts = Vec::new();
        for si in 0..self.slots.len() {
            let slot = &mut self.slots[si];
            let skip = slot.skipped();
            let Op::Metrics(op) = &mut slot.op else {
                continue;
            };
            let patterns = &slot.identity.description.metrics;
            let mine: Vec<MetricIn> = delivered
                .iter()
                .filter(|m| patterns.iter().any(|p| p.matches(&m.plugin, &m.name)))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            if skip {
                let lost: Vec<String> = mine.iter().map(metric_json).collect();
                self.dead_letter_other(si, "degraded", "plugin is degraded; metrics skipped", lost);
                continue;
            }
            let mut a = Vec::new();
            PluginCounters::add(&slot.counters.calls, 1);
            PluginCounters::add(&slot.counters.events_in, mine.len() as u64);
            let res = op.deliver_metrics(&mine, &mut *slot.inst, &mut a);
            alerts.extend(a.into_iter().map(|x| (si, x)));
            match res {
                Ok(()) => self.succeeded(si),
                Err((e, lost)) => {
                    let lost: Vec<String> = lost.iter().map(metric_json).collect();
                    self.record_failure(si, &e);
                    self.dead_letter_other(si, e.reason(), &e.to_string(), lost);
                }
            }
        }
        self.emit_alerts(alerts);
    }

    fn emit_alerts(&mut self, alerts: Vec<(usize, KeyedAlert)>) {
        for (si, KeyedAlert { key, alert }) in alerts {
            let slot = &self.slots[si];
            PluginCounters::add(&slot.counters.outputs, 1);
            self.outputs.push(Output::Alert(AlertOut {
                kind: "alert",
                id: AlertOut::id_for(&slot.name, &alert.rule, &key, alert.time),
                plugin: slot.name.clone(),
                rule: alert.rule,
                severity: alert.severity,
                key,
                message: alert.message,
                time: alert.time,
                value: alert.value,
            }));
        }
    }

    fn handle_failures(&mut self, si: usize, batch: Option<&EventBatch>, failures: Vec<OpFailure>) {
        if failures.is_empty() {
            self.succeeded(si);
            return;
        }
        for f in failures {
            match f {
                OpFailure::Events { error, events } => match batch {
                    Some(b) => self.call_failed(si, b, &error, &events),
                    None => self.record_failure(si, &error),
                },
                OpFailure::Windows { error, windows } => {
                    self.record_failure(si, &error);
                    let lost = windows
                        .iter()
                        .map(|(k, s, e)| {
                            serde_json::json!({"key": k, "window_start": s, "window_end": e})
                                .to_string()
                        })
                        .collect();
                    self.dead_letter_other(
                        si,
                        error.reason(),
                        &format!("window lost: {error}"),
                        lost,
                    );
                }
            }
        }
    }

    fn succeeded(&mut self, si: usize) {
        let slot = &mut self.slots[si];
        slot.recent = (slot.recent << 1) & ((1 << RECENT_CALLS) - 1);
        // A successful probe after the skip period: back in service.
        if slot.degraded_until.is_some_and(|t| Instant::now() >= t) {
            slot.degraded_until = None;
            slot.recent = 0;
            slot.counters.set_status(PluginStatus::Running);
            let e = lifecycle(slot, "recovered", "calls succeed again".into());
            tracing::info!(plugin = %slot.name, "plugin recovered");
            self.outputs.push(Output::Plugin(e));
        }
    }

    fn record_failure(&mut self, si: usize, error: &CallError) {
        let slot = &mut self.slots[si];
        let c = &slot.counters;
        match error {
            CallError::Trap(_) => {
                PluginCounters::add(&c.traps, 1);
                crate::metrics::metrics()
                    .plugin_traps
                    .with_label_values(&[&*slot.name])
                    .inc();
            }
            CallError::Timeout => {
                PluginCounters::add(&c.timeouts, 1);
                crate::metrics::metrics()
                    .plugin_timeouts
                    .with_label_values(&[&*slot.name])
                    .inc();
            }
            CallError::OutOfMemory => PluginCounters::add(&c.out_of_memory, 1),
            CallError::Plugin(_) | CallError::Contract(_) | CallError::TooMany { .. } => {
                PluginCounters::add(&c.errors, 1)
            }
        }
        slot.recent = ((slot.recent << 1) | 1) & ((1 << RECENT_CALLS) - 1);
        tracing::warn!(plugin = %slot.name, reason = error.reason(), error = %error, "plugin call failed");
        let failed = slot.recent.count_ones();
        if failed >= DEGRADE_AFTER {
            let first = slot.degraded_until.is_none();
            slot.degraded_until = Some(Instant::now() + PROBE_AFTER);
            slot.counters.set_status(PluginStatus::Degraded);
            if first {
                let msg = format!(
                    "{failed} of the last {RECENT_CALLS} calls failed (last: {error}); skipped for {:?}",
                    PROBE_AFTER
                );
                tracing::error!(plugin = %slot.name, "plugin degraded: {msg}");
                let e = lifecycle(slot, "degraded", msg);
                self.outputs.push(Output::Plugin(e));
            }
        }
    }

    fn call_failed(&mut self, si: usize, batch: &EventBatch, error: &CallError, events: &[u32]) {
        self.record_failure(si, error);
        self.dead_letter_events(si, batch, events, error.reason(), &error.to_string());
    }

    fn dead_letter_events(
        &mut self,
        si: usize,
        batch: &EventBatch,
        events: &[u32],
        reason: &'static str,
        detail: &str,
    ) {
        let slot = &self.slots[si];
        PluginCounters::add(&slot.counters.dead_lettered, events.len() as u64);
        let time = now_ms();
        for &i in events {
            let ev = &batch.events[i as usize];
            self.dead.push(DeadLetter {
                time,
                plugin: Some(slot.name.to_string()),
                reason,
                detail: detail.to_string(),
                source: batch.origin.source.to_string(),
                partition: batch.partition_of_event(i as usize),
                offset: Some(ev.offset),
                event: batch.raw(ev).to_string(),
            });
        }
    }

    fn dead_letter_other(
        &mut self,
        si: usize,
        reason: &'static str,
        detail: &str,
        items: Vec<String>,
    ) {
        let slot = &self.slots[si];
        PluginCounters::add(&slot.counters.dead_lettered, items.len() as u64);
        let time = now_ms();
        for event in items {
            self.dead.push(DeadLetter {
                time,
                plugin: Some(slot.name.to_string()),
                reason,
                detail: detail.to_string(),
                source: "pipeline".into(),
                partition: 0,
                offset: None,
                event,
            });
        }
    }
}

fn metric_json(m: &MetricIn) -> String {
    serde_json::json!({"plugin": m.plugin, "name": m.name, "key": m.key, "window_start": m.start, "window_end": m.end})
        .to_string()
}

pub fn lifecycle(slot: &Slot, event: &'static str, message: String) -> PluginEvent {
    let l = &slot.identity;
    PluginEvent {
        kind: "plugin",
        event,
        plugin: slot.name.to_string(),
        version: l.description.version.clone(),
        hash: l.hash.clone(),
        message,
        time: now_ms(),
    }
}
