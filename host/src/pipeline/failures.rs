//! What a plugin's calls yield besides states: alerts, failures (counted,
//! degrading the plugin) and dead letters naming the plugin, the reason and
//! each lost input's origin.

use super::Pipeline;
use crate::clock::now_ms;
use crate::event::EventBatch;
use crate::operator::aggregate::OpFailure;
use crate::operator::detector::KeyedAlert;
use crate::output::{AlertOut, DeadLetter, Output};
use crate::plugin::CallError;
use crate::plugin::io::MetricIn;
use crate::status::PluginCounters;

impl Pipeline {
    pub(super) fn emit_alerts(&mut self, alerts: Vec<(usize, KeyedAlert)>) {
        for (si, KeyedAlert { key, alert }) in alerts {
            let slot = &self.slots[si];
            PluginCounters::add(&slot.counters.outputs, 1);
            let to = if slot.shadow {
                &mut self.shadow_outputs
            } else {
                &mut self.outputs
            };
            to.push(Output::Alert(AlertOut {
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

    pub(super) fn handle_failures(
        &mut self,
        si: usize,
        batch: Option<&EventBatch>,
        failures: Vec<OpFailure>,
    ) {
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

    pub(super) fn succeeded(&mut self, si: usize) {
        if let Some(e) = self.slots[si].succeeded() {
            self.lifecycle(si, e);
        }
    }

    pub(super) fn record_failure(&mut self, si: usize, error: &CallError) {
        if let Some(e) = self.slots[si].failed(error) {
            self.lifecycle(si, e);
        }
    }

    /// A plugin degraded or recovered: a lifecycle output, or, for a
    /// shadow, a line of its report.
    fn lifecycle(&mut self, si: usize, e: crate::output::PluginEvent) {
        if self.slots[si].shadow {
            self.shadow_outputs.push(Output::Plugin(e));
        } else {
            self.outputs.push(Output::Plugin(e));
        }
    }

    /// Where a slot's dead letters go: the dead-letter sinks, or a shadow's
    /// report.
    fn dead_for(&mut self, si: usize) -> &mut Vec<DeadLetter> {
        if self.slots[si].shadow {
            &mut self.shadow_dead
        } else {
            &mut self.dead
        }
    }

    pub(super) fn call_failed(
        &mut self,
        si: usize,
        batch: &EventBatch,
        error: &CallError,
        events: &[u32],
    ) {
        self.record_failure(si, error);
        self.dead_letter_events(si, batch, events, error.reason(), &error.to_string());
    }

    pub(super) fn dead_letter_events(
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
        let name = slot.name.to_string();
        let dead = self.dead_for(si);
        for &i in events {
            let ev = &batch.events[i as usize];
            dead.push(DeadLetter {
                time,
                plugin: Some(name.clone()),
                reason,
                detail: detail.to_string(),
                source: batch.origin.source.to_string(),
                partition: batch.partition_of_event(i as usize),
                offset: Some(ev.offset),
                event: batch.raw(ev).to_string(),
            });
        }
    }

    pub(super) fn dead_letter_other(
        &mut self,
        si: usize,
        reason: &'static str,
        detail: &str,
        items: Vec<String>,
    ) {
        let slot = &self.slots[si];
        PluginCounters::add(&slot.counters.dead_lettered, items.len() as u64);
        let time = now_ms();
        let name = slot.name.to_string();
        let dead = self.dead_for(si);
        for event in items {
            dead.push(DeadLetter {
                time,
                plugin: Some(name.clone()),
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

pub(super) fn metric_json(m: &MetricIn) -> String {
    serde_json::json!({"plugin": m.plugin, "name": m.name, "key": m.key, "window_start": m.start, "window_end": m.end})
        .to_string()
}
