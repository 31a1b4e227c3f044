//! Stage 2: the records of a round, at the owner of their key groups, in
//! canonical order; windows and timers fire as the watermark passes them.

use super::Pipeline;
use super::exchange::{LateMark, Partial, Record, Round, Routed};
use crate::event::EventBatch;
use crate::operator::Op;
use crate::operator::aggregate::Fired;
use crate::operator::detector::TimerResult;
use crate::output::{MetricOut, Output};
use crate::plugin::io::MetricIn;
use crate::status::PluginCounters;

/// The plugins (slots) a routed event is for.
fn slots_of(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |b| mask & (1u64 << b) != 0)
}

impl Pipeline {
    /// Stage 2 of a round on this worker: apply `records` (from every
    /// worker's stage 1) in canonical order, then fire what is due at the
    /// round's end. Every worker runs it every round, records or none.
    pub fn stage2(&mut self, round: &Round, mut records: Vec<Record>) {
        // At one position, a partial (which fires what is due first) before
        // the event's routed record.
        records.sort_by_key(|r| (r.pos(), matches!(r, Record::Event(_))));
        let any_lateness = self
            .slots
            .iter()
            .any(|s| matches!(&s.op, Op::Aggregate(a) if a.checks_late_updates()));
        // The batch whose events are pending (handed over lazily).
        let mut current: Option<u32> = None;
        let mut last_wm = i64::MIN;
        for record in records {
            match record {
                Record::Partial(p) => {
                    if let Some(b) = current.take() {
                        self.flush(&round.batches[b as usize], last_wm);
                    }
                    last_wm = p.wm_after;
                    self.apply_partial(p);
                }
                Record::Event(e) => {
                    if current != Some(e.batch) {
                        if let Some(b) = current {
                            self.flush(&round.batches[b as usize], last_wm);
                        }
                        current = Some(e.batch);
                    }
                    self.apply_event(&round.batches[e.batch as usize], e, any_lateness);
                    last_wm = e.wm_after;
                }
            }
        }
        if let Some(b) = current {
            self.flush(&round.batches[b as usize], last_wm);
        }
        self.advance(round.end_wm);
    }

    /// A pre-aggregating plugin's partial states: what is due by the
    /// segment's watermark fires first, then they merge in.
    fn apply_partial(&mut self, p: Partial) {
        self.advance(p.wm);
        let si = p.slot as usize;
        let slot = &mut self.slots[si];
        let skip = slot.skipped();
        let Op::Aggregate(op) = &mut slot.op else {
            return;
        };
        if skip {
            let lost = p
                .states
                .groups
                .iter()
                .map(|(k, id, _)| serde_json::json!({"key": k.as_str(), "window": id}).to_string())
                .collect();
            self.dead_letter_other(
                si,
                "degraded",
                "plugin is degraded; partial states skipped",
                lost,
            );
            return;
        }
        let mut fired = Vec::new();
        let mut failures = Vec::new();
        op.apply_partial(
            p.states,
            &mut *slot.inst,
            p.wm_after,
            &mut fired,
            &mut failures,
        );
        if !failures.is_empty() {
            self.handle_failures(si, None, failures);
        }
        self.emit_metrics(fired.into_iter().map(|f| (si, f)).collect());
    }

    /// An event routed to this worker's session aggregators and event
    /// detectors in `e.slots`, as one stage does it: a late update sees its
    /// window fired first, a key's due timers fire before its next event.
    fn apply_event(&mut self, batch: &EventBatch, e: Routed, any_lateness: bool) {
        let i = e.index as usize;
        let wm = e.wm;
        // A late update must see its window fired first (firing is lazy).
        if any_lateness
            && slots_of(e.slots).any(|si| match &mut self.slots[si].op {
                Op::Aggregate(a) => a.would_be_late_update(batch, i, wm),
                _ => false,
            })
        {
            self.flush(batch, wm);
            self.advance(wm);
        }
        let mut cut = false;
        for si in slots_of(e.slots) {
            let slot = &mut self.slots[si];
            match &mut slot.op {
                Op::Aggregate(op) => {
                    op.prefetch_events(batch, i);
                    let a = op.assign(batch, i, wm);
                    cut |= a.cut;
                    if a.dropped && !slot.shadow {
                        self.late_marks.push(LateMark {
                            pos: e.pos,
                            batch: e.batch,
                            index: e.index,
                            slot: si as u16,
                            wm,
                        });
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
        if cut {
            self.flush(batch, e.wm_after);
        }
    }

    /// Hand the current segment to every plugin.
    pub(super) fn flush(&mut self, batch: &EventBatch, wm: i64) {
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

    pub(super) fn timers_done(&mut self, si: usize, res: TimerResult) {
        if let Err((e, lost)) = res {
            self.record_failure(si, &e);
            let lost = lost
                .iter()
                .map(|(at, key)| serde_json::json!({"timer": at, "key": key.as_str()}).to_string())
                .collect();
            self.dead_letter_other(si, e.reason(), &format!("timers lost: {e}"), lost);
        }
    }

    /// Fire every window and event-detector timer due at watermark `wm`:
    /// each aggregator finishes its due windows in one call. (The metric
    /// detectors get the metrics, then their timers fire, in stage 3.)
    pub(crate) fn advance(&mut self, wm: i64) {
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
            if let Op::Events(op) = &mut slot.op {
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

    /// Emit fired metrics; stage 3 delivers them to the metric detectors.
    fn emit_metrics(&mut self, fired: Vec<(usize, Fired)>) {
        for (si, f) in fired {
            let slot = &self.slots[si];
            PluginCounters::add(&slot.counters.outputs, 1);
            if slot.shadow {
                // Compared, not emitted: it reaches no sink and no detector.
                self.shadow_outputs.push(Output::Metric(MetricOut {
                    kind: "metric",
                    plugin: slot.name.clone(),
                    name: f.metric.name,
                    key: f.key,
                    window_start: f.start,
                    window_end: f.end,
                    value: f.metric.value.into(),
                }));
                continue;
            }
            self.metrics.push((
                si,
                MetricIn {
                    plugin: slot.name.to_string(),
                    name: f.metric.name.clone(),
                    key: f.key.clone(),
                    start: f.start,
                    end: f.end,
                    value: f.metric.value.clone(),
                },
            ));
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
    }
}
