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
//! plugin that fails [`DEGRADE_AFTER`] of its last [`RECENT_CALLS`] calls is
//! degraded: skipped (its input dead-lettered) and probed again after
//! [`PROBE_AFTER`] (see [`Slot`]).

mod slot;
mod swap;

pub use slot::{DEGRADE_AFTER, PROBE_AFTER, RECENT_CALLS, Slot};
pub use swap::{StateTransfer, SwapReport};

use std::time::Duration;

use crate::clock::now_ms;
use crate::event::EventBatch;
use crate::operator::Op;
use crate::operator::aggregate::{Fired, OpFailure};
use crate::operator::detector::{KeyedAlert, TimerResult};
use crate::output::{AlertOut, DeadLetter, LateEvent, MetricOut, Output};
use crate::plugin::CallError;
use crate::plugin::io::MetricIn;
use crate::status::PluginCounters;
use crate::window::Watermark;

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
const FINISH_ROUNDS: usize = 100;

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
            if !self.slots.iter().any(|s| s.op.timers_pending()) {
                return;
            }
        }
        for s in self.slots.iter().filter(|s| s.op.timers_pending()) {
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

    fn timers_done(&mut self, si: usize, res: TimerResult) {
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
        if let Some(e) = self.slots[si].succeeded() {
            self.outputs.push(Output::Plugin(e));
        }
    }

    fn record_failure(&mut self, si: usize, error: &CallError) {
        if let Some(e) = self.slots[si].failed(error) {
            self.outputs.push(Output::Plugin(e));
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
