//! What the workers' jobs emit in a round, gathered for the sinks.

use crate::output::{DeadLetter, Output};
use crate::pipeline::Pipeline;
use crate::pipeline::exchange::{LateFound, LateMark};
use crate::plugin::io::MetricIn;

/// What a worker's job emitted: outputs (with their JSON), dead letters,
/// late marks and metrics for stage 3.
#[derive(Default)]
pub(super) struct Emitted {
    pub(super) outputs: Vec<Output>,
    pub(super) lines: Vec<String>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) late: Vec<LateMark>,
    /// Late marks an owner resolved against the round it decoded.
    pub(super) found: Vec<LateFound>,
    pub(super) metrics: Vec<(usize, MetricIn)>,
    /// What shadow versions emitted and failed on: compared, not written.
    pub(super) shadow: Vec<Output>,
    pub(super) shadow_dead: Vec<DeadLetter>,
}

impl Emitted {
    /// Take what `p` emitted; the outputs are serialised on the worker.
    pub(super) fn take(p: &mut Pipeline) -> Self {
        let outputs = std::mem::take(&mut p.outputs);
        let lines = outputs.iter().map(Output::to_json).collect();
        Emitted {
            outputs,
            lines,
            dead: std::mem::take(&mut p.dead),
            late: std::mem::take(&mut p.late_marks),
            found: Vec::new(),
            metrics: std::mem::take(&mut p.metrics),
            shadow: std::mem::take(&mut p.shadow_outputs),
            shadow_dead: std::mem::take(&mut p.shadow_dead),
        }
    }

    pub(super) fn append(&mut self, mut o: Emitted) {
        self.outputs.append(&mut o.outputs);
        self.lines.append(&mut o.lines);
        self.dead.append(&mut o.dead);
        self.late.append(&mut o.late);
        self.found.append(&mut o.found);
        self.metrics.append(&mut o.metrics);
        self.shadow.append(&mut o.shadow);
        self.shadow_dead.append(&mut o.shadow_dead);
    }
}
