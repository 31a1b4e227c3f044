//! The smoke test of a version before it is accepted: the new code, with
//! the config it will run with, on a sample of recent events and on a
//! sample of the current states (migrated first when the swap migrates),
//! through the same calls and checks as in the pipeline. A trap, a state
//! that does not decode, a plugin error or a contract violation refuses the
//! change (422) with the plugin's own message, instead of dead-lettering
//! everything after the swap.
//!
//! It runs off the processing thread, on an instance of its own, so nothing
//! it does reaches the running pipeline. (A shadow version, running beside
//! the live one, would feed the same calls per window: [`calls_on_events`]
//! is the unit both need.)

use serde::Serialize;

use crate::event::EventBatch;
use crate::operator::columns;
use crate::plugin::describe::{Description, Input, KeyBy, Kind};
use crate::plugin::io::Packed;
use crate::plugin::{CallError, PluginCalls};

/// Most recent events a smoke test runs on.
pub const EVENTS: usize = 512;
/// Most current states a smoke test (and a migration dry-run) runs on.
pub const STATES: usize = 16;

/// What the processing thread hands over for a dry run.
#[derive(Debug, Default)]
pub struct Sample {
    /// Up to [`STATES`] current states of the plugin (its running schema).
    pub states: Vec<Vec<u8>>,
    /// The first events of the last batch processed, if any.
    pub events: Option<EventBatch>,
}

/// What a smoke test ran.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SmokeReport {
    pub events: usize,
    pub states: usize,
}

/// Run `calls` (a fresh instance of the new version, initialised with its
/// config) on the sample; `states` are in the new version's schema.
pub fn run(
    calls: &mut dyn PluginCalls,
    d: &Description,
    events: Option<&EventBatch>,
    states: &[Vec<u8>],
) -> Result<SmokeReport, String> {
    let mut report = SmokeReport::default();
    if let Some(batch) = events.filter(|b| d.input == Input::Events && !b.is_empty()) {
        report.events = calls_on_events(calls, d, batch).map_err(|e| {
            format!(
                "smoke test on {} recent events failed: {e}",
                batch.len().min(EVENTS)
            )
        })?;
    }
    if !states.is_empty() {
        calls_on_states(calls, d, states)
            .map_err(|e| format!("smoke test on {} current states failed: {e}", states.len()))?;
        report.states = states.len();
    }
    Ok(report)
}

/// The events of `batch` (at most [`EVENTS`]) through the plugin, grouped
/// by key as the pipeline groups them: an aggregator adds them to fresh
/// states and finishes those; a detector takes them with fresh states.
/// Returns how many events ran.
pub fn calls_on_events(
    calls: &mut dyn PluginCalls,
    d: &Description,
    batch: &EventBatch,
) -> Result<usize, CallError> {
    let n = batch.len().min(EVENTS);
    let key_of = |i: u32| -> String {
        match &d.key_by {
            KeyBy::Field(f) => {
                columns::field_text(batch, &batch.events[i as usize], f).into_owned()
            }
            _ => String::new(),
        }
    };
    let mut order: Vec<(String, u32)> = (0..n as u32).map(|i| (key_of(i), i)).collect();
    order.sort();
    let mut keys: Vec<String> = Vec::new();
    let mut lens: Vec<u32> = Vec::new();
    for (k, _) in &order {
        if keys.last() != Some(k) {
            keys.push(k.clone());
            lens.push(0);
        }
        *lens.last_mut().expect("a group") += 1;
    }
    let idx: Vec<u32> = order.iter().map(|(_, i)| *i).collect();
    let cols = columns::build(batch, &idx, &d.fields);
    let fresh = packed(keys.iter().map(|_| &[][..]));
    let first = batch.events.first().map_or(0, |e| e.ts);
    match d.kind {
        Kind::Aggregator => {
            let out = calls.add(&lens, &fresh, cols)?;
            let windows: Vec<(i64, i64)> = keys.iter().map(|_| (first, first + 1)).collect();
            calls.finish(&windows, &out)?;
        }
        Kind::Detector => {
            calls.on_events(&keys, &lens, &fresh, cols, first.saturating_sub(1))?;
        }
    }
    Ok(n)
}

/// Each state through a call that decodes and re-encodes it (no events),
/// then, for an aggregator, `finish` on the result.
fn calls_on_states(
    calls: &mut dyn PluginCalls,
    d: &Description,
    states: &[Vec<u8>],
) -> Result<(), CallError> {
    let input = packed(states.iter().map(Vec::as_slice));
    let zeros = vec![0u32; states.len()];
    let keys: Vec<String> = (0..states.len()).map(|i| format!("smoke-{i}")).collect();
    let empty = columns::build(&EventBatch::new(empty_origin()), &[], &d.fields);
    match (d.kind, d.input) {
        (Kind::Aggregator, _) => {
            let out = calls.add(&zeros, &input, empty)?;
            let windows: Vec<(i64, i64)> = (0..states.len()).map(|_| (0, 1)).collect();
            calls.finish(&windows, &out)?;
        }
        (Kind::Detector, Input::Events) => {
            calls.on_events(&keys, &zeros, &input, empty, i64::MIN)?;
        }
        (Kind::Detector, Input::Metrics) => {
            calls.on_metrics(&keys, &zeros, &input, &[])?;
        }
    }
    Ok(())
}

fn packed<'a>(states: impl Iterator<Item = &'a [u8]>) -> Packed {
    let mut p = Packed::default();
    for s in states {
        p.push(s);
    }
    p
}

fn empty_origin() -> crate::event::Origin {
    crate::event::Origin {
        source: std::sync::Arc::from("smoke"),
        partition: 0,
    }
}
