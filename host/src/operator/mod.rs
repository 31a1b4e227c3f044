//! The operators that run plugins over keyed, host-owned state:
//!
//! - [`aggregate`]: an aggregator's event-time windows (assign, `add`,
//!   fire with `finish`);
//! - [`detector`]: a detector's per-key states and timers, over events or
//!   over the metrics the aggregators emit;
//! - [`columns`]: the columnar batch a plugin call receives.
//!
//! [`Op`] is one plugin's operator, whichever kind; the pipeline
//! (`crate::pipeline`) drives them in event-time order.

pub mod aggregate;
pub mod columns;
pub mod detector;

use std::time::Duration;

use aggregate::{AggregateOp, WindowState};
use detector::{DetectorOp, DetectorState};

use crate::plugin::describe::{Description, Input, Kind};
use crate::state::StateDelta;

/// One plugin's operator.
pub enum Op {
    Aggregate(AggregateOp),
    Events(DetectorOp),
    Metrics(DetectorOp),
}

impl Op {
    /// The operator a plugin's description asks for; `allowed_lateness`
    /// applies to windows whose plugin does not set its own.
    pub fn for_plugin(d: &Description, allowed_lateness: Duration) -> Self {
        let lateness = d.allowed_lateness.unwrap_or(allowed_lateness).as_millis() as i64;
        let mut op = match (d.kind, d.input) {
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
        // Whatever the store holds under this plugin's name is not this
        // state: the first commit rewrites it.
        match &mut op {
            Op::Aggregate(a) => a.state.keys.set_rewrite(),
            Op::Events(d) | Op::Metrics(d) => d.state.keys.set_rewrite(),
        }
        op
    }

    /// The keys held (this worker's key groups).
    pub fn keys(&self) -> usize {
        match self {
            Op::Aggregate(a) => a.state.keys.len(),
            Op::Events(d) | Op::Metrics(d) => d.state.keys.len(),
        }
    }

    /// Whether a detector has timers queued.
    pub fn timers_pending(&self) -> bool {
        match self {
            Op::Events(op) | Op::Metrics(op) => op.next_timer().is_some(),
            Op::Aggregate(_) => false,
        }
    }

    /// The state changes since the last commit, for the state store.
    pub fn delta(&mut self) -> StateDelta {
        match self {
            Op::Aggregate(a) => a.state.delta(),
            Op::Events(d) | Op::Metrics(d) => d.state.keys.delta(Vec::new()),
        }
    }

    /// Rebuild the state from the state store's meta and entries.
    pub fn restore_entries<'a>(
        &mut self,
        meta: &[u8],
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        match self {
            Op::Aggregate(a) => a.restore_entries(meta, entries),
            Op::Events(d) | Op::Metrics(d) => {
                d.state = DetectorState::from_entries(entries)?;
                Ok(())
            }
        }
    }

    /// Up to `n` plugin states, for a migration dry-run.
    pub fn sample_states(&self, n: usize) -> Vec<Vec<u8>> {
        match self {
            Op::Aggregate(a) => a.state.keys.sample(n),
            Op::Events(d) | Op::Metrics(d) => d.state.keys.sample(n),
        }
    }

    /// Move the state out, leaving it empty.
    pub fn take_state(&mut self) -> OpState {
        match self {
            Op::Aggregate(a) => OpState::Windows(std::mem::take(&mut a.state)),
            Op::Events(d) | Op::Metrics(d) => OpState::Keyed(std::mem::take(&mut d.state)),
        }
    }

    /// A copy of the state (a shadow version starts from it).
    pub fn copy_state(&self) -> OpState {
        match self {
            Op::Aggregate(a) => OpState::Windows(a.state.clone()),
            Op::Events(d) | Op::Metrics(d) => OpState::Keyed(d.state.clone()),
        }
    }

    /// The next commit writes this state whole, replacing what the store
    /// holds under the plugin's name (a promoted shadow's state).
    pub fn mark_rewrite(&mut self) {
        match self {
            Op::Aggregate(a) => a.state.keys.set_rewrite(),
            Op::Events(d) | Op::Metrics(d) => d.state.keys.set_rewrite(),
        }
    }

    /// Move a state in (from [`Op::take_state`] of an operator of the same
    /// kind); false, and the state dropped, if it is of another kind.
    pub fn put_state(&mut self, s: OpState) -> bool {
        match (self, s) {
            (Op::Aggregate(a), OpState::Windows(w)) => a.state = w,
            (Op::Events(d) | Op::Metrics(d), OpState::Keyed(k)) => d.state = k,
            _ => return false,
        }
        true
    }
}

/// An operator's state, moved out of it (swaps, migrations).
#[derive(Debug)]
pub enum OpState {
    Windows(WindowState),
    Keyed(DetectorState),
}

impl OpState {
    /// The keys it holds.
    pub fn len(&self) -> usize {
        match self {
            OpState::Windows(w) => w.keys.len(),
            OpState::Keyed(k) => k.keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rewrite every plugin state with `f`; all or nothing.
    pub fn try_map<E>(&mut self, f: impl FnMut(&[u8]) -> Result<Vec<u8>, E>) -> Result<usize, E> {
        match self {
            OpState::Windows(w) => w.keys.try_map(f),
            OpState::Keyed(k) => k.keys.try_map(f),
        }
    }
}
