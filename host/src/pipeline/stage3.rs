//! Stage 3: the metrics a round emitted reach the metric detectors, each at
//! the owner of the detector's key for it, in event-time order; then the
//! metric detectors' timers due by the round's watermark fire.

use super::Pipeline;
use super::exchange::owner_of;
use super::failures::metric_json;
use crate::operator::Op;
use crate::operator::detector::metric_key;
use crate::plugin::describe::{KeyBy, MetricPattern};
use crate::plugin::io::MetricIn;
use crate::status::PluginCounters;

/// What one worker delivers in stage 3: per metric detector (slot), its
/// metrics in order.
pub type Deliveries = Vec<(usize, Vec<MetricIn>)>;

/// What routing the metrics needs of the plugins: each metric detector's
/// slot, the metrics it takes and how it keys them. The same on every
/// worker; a run of workers keeps a copy.
#[derive(Debug, Clone, Default)]
pub struct MetricRouter {
    detectors: Vec<(usize, Vec<MetricPattern>, KeyBy)>,
}

impl MetricRouter {
    /// Route the metrics every worker emitted this round (`emitted`, one
    /// list per worker, in worker order) to the workers that deliver them:
    /// one [`Deliveries`] per worker. The metrics go in event-time order
    /// (window end, aggregator, window start, key), whoever emitted them.
    pub fn routes(&self, emitted: &[Vec<(usize, MetricIn)>], workers: usize) -> Vec<Deliveries> {
        let mut out: Vec<Deliveries> = vec![Vec::new(); workers];
        if self.detectors.is_empty() || emitted.iter().all(Vec::is_empty) {
            return out;
        }
        let mut all: Vec<&(usize, MetricIn)> = emitted.iter().flatten().collect();
        // Stable: the updates of one window (one owner) keep their order.
        all.sort_by(|(sa, a), (sb, b)| {
            (a.end, *sa, a.start, &a.key).cmp(&(b.end, *sb, b.start, &b.key))
        });
        for (si, patterns, key_by) in &self.detectors {
            let mut per: Vec<Vec<MetricIn>> = vec![Vec::new(); workers];
            for (_, m) in &all {
                if patterns.iter().any(|p| p.matches(&m.plugin, &m.name)) {
                    per[owner_of(metric_key(key_by, m), workers)].push(m.clone());
                }
            }
            for (w, ms) in per.into_iter().enumerate() {
                if !ms.is_empty() {
                    out[w].push((*si, ms));
                }
            }
        }
        out
    }
}

impl Pipeline {
    /// The metric routing of this pipeline's plugins.
    pub fn router(&self) -> MetricRouter {
        MetricRouter {
            detectors: self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(si, s)| match &s.op {
                    Op::Metrics(op) => Some((
                        si,
                        s.identity.description.metrics.clone(),
                        op.key_by().clone(),
                    )),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Stage 3 on this worker: deliver its metrics, then fire the metric
    /// detectors' timers due by `wm`.
    pub fn stage3(&mut self, deliveries: Deliveries, wm: i64) {
        for (si, mine) in deliveries {
            self.deliver(si, mine);
        }
        for si in 0..self.slots.len() {
            let slot = &mut self.slots[si];
            if let Op::Metrics(op) = &mut slot.op {
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

    fn deliver(&mut self, si: usize, mine: Vec<MetricIn>) {
        let slot = &mut self.slots[si];
        let skip = slot.skipped();
        let Op::Metrics(op) = &mut slot.op else {
            return;
        };
        if skip {
            let lost: Vec<String> = mine.iter().map(metric_json).collect();
            self.dead_letter_other(si, "degraded", "plugin is degraded; metrics skipped", lost);
            return;
        }
        let mut alerts = Vec::new();
        PluginCounters::add(&slot.counters.calls, 1);
        PluginCounters::add(&slot.counters.events_in, mine.len() as u64);
        let res = op.deliver_metrics(&mine, &mut *slot.inst, &mut alerts);
        self.emit_alerts(alerts.into_iter().map(|a| (si, a)).collect());
        match res {
            Ok(()) => self.succeeded(si),
            Err((e, lost)) => {
                let lost: Vec<String> = lost.iter().map(metric_json).collect();
                self.record_failure(si, &e);
                self.dead_letter_other(si, e.reason(), &e.to_string(), lost);
            }
        }
    }
}
